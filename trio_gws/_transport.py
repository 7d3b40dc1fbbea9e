"""The one place that knows what kind of stream a connection runs on.

A connection talks to any ``trio.abc.Stream``. A plain ``trio.SocketStream`` (most
servers' connections) gets a fast path for reads: they go straight to its socket,
skipping the conflict detector, the error-translating context manager and the
memoryviews that ``SocketStream`` adds on every call (the single reader already
rules out concurrent use). The fast path raises exactly what ``SocketStream``
raises: ``ClosedResourceError`` for a closed socket, ``BrokenResourceError`` (from
the ``OSError``) for a reset or broken one, so nothing above this module sees the
difference. (Writes and the reader's flush had such shortcuts too; measured, they
paid nothing beyond the noise and were removed: benchmarks/ABLATION.md.)

Also here: the peer's and our addresses (under TLS too) and the half-close that lets
a close frame reach the peer before the stream closes.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import trio

from ._mask import Buffer

#: errnos that mean "this socket was closed" (as trio's SocketStream has them).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})

#: The most SO_RCVLOWAT asks for: far below the receive buffer (128 KiB by default), so
#: the kernel never has to grow the buffer or clamp the window to honour it.
LOWAT_CAP = 32 * 1024

_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", None)


def translate_socket_error(
    exc: OSError | ValueError,
) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The stream error ``SocketStream`` raises for a socket's ``OSError``; a
    ``ValueError`` (its descriptor is -1) is a socket closed under a raw read."""
    if isinstance(exc, ValueError):
        return trio.ClosedResourceError("this socket was closed")
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    broken = trio.BrokenResourceError(f"socket connection broken: {exc}")
    broken.__cause__ = exc
    return broken


def socket_of(stream: trio.abc.Stream) -> Any:
    """The trio socket under ``stream`` (through TLS layers), or None."""
    inner: Any = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    return getattr(inner, "socket", None)


def stream_addresses(stream: trio.abc.Stream) -> tuple[Any, Any]:
    """(remote, local) socket addresses of a stream, or (None, None) when unknown."""
    sock = socket_of(stream)
    if sock is None:
        return None, None
    try:
        return sock.getpeername(), sock.getsockname()
    except OSError:
        return None, None


async def half_close(stream: trio.abc.Stream) -> bool:
    """Send EOF when the stream can (TCP, Unix sockets); True if it did.

    A close frame, or an HTTP error response, is followed by a half-close and a drain
    of what the peer still sends: closing a socket with unread input makes the kernel
    answer with RST, which can destroy what we sent before the peer reads it.
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
        return True
    return False


async def close_forcefully(stream: trio.abc.Stream) -> None:
    """``trio.aclose_forcefully(stream)``, shielded from cancellation.

    A plain ``SocketStream`` is closed the way its ``aclose`` does it (close the
    socket, then a checkpoint), without the two cancel scopes and the cancellation
    that ``aclose_forcefully`` under a shield costs: every connection ends here.
    """
    if type(stream) is trio.SocketStream:
        stream.socket.close()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


class Transport:
    """A connection's stream with the fast path of a plain ``SocketStream``'s reads.

    ``fast_receive`` is the raw receive for the reader's loop: on a plain socket it is
    the socket's ``recv``, skipping what ``SocketStream.receive_some`` adds per call
    (1.08x to 1.15x in the echo scenarios, and 0.65 KiB less per idle connection:
    benchmarks/ABLATION.md), so the loop must pass an ``OSError`` through
    ``translate_socket_error`` (the loop does this in its own ``except``, which costs
    nothing; a wrapper coroutine would cost a frame per idle connection). Writes go
    through the stream: the same shortcut for sends measured as noise.
    """

    __slots__ = ("stream", "fast_receive", "raw", "_lowat")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        #: The standard-library socket under a plain ``SocketStream`` (None otherwise):
        #: the reader's loop waits on it and reads it directly, and ``send_all`` writes
        #: it directly while the kernel takes the whole frame (see ``read_phase``).
        self.raw: Any = None
        #: SO_RCVLOWAT as last set (0: never, or not a TCP socket).
        self._lowat = 0
        if type(stream) is trio.SocketStream:
            self.fast_receive: Any = stream.socket.recv
            raw = getattr(stream.socket, "_sock", None)
            if isinstance(raw, socket.socket):
                self.raw = raw
                if raw.family in (socket.AF_INET, socket.AF_INET6) and _SO_RCVLOWAT:
                    self._lowat = 1
        else:
            self.fast_receive = stream.receive_some

    def want(self, nbytes: int) -> None:
        """Wake the reader only once ``nbytes`` more bytes arrived (at most LOWAT_CAP;
        0 or 1: on any byte). TCP only, and only when it changes.

        A frame that arrives in several TCP segments would otherwise wake the reader
        (a scheduler round trip and two system calls) once per segment: with the rest
        of the frame as the socket's receive low-water mark, the kernel reports it
        readable once that much is there (or at EOF, or an error). Whatever arrived is
        still handed over as it comes, so nothing already received waits for more.
        """
        if not self._lowat:
            return
        lowat = 1 if nbytes <= 1 else nbytes if nbytes < LOWAT_CAP else LOWAT_CAP
        if lowat != self._lowat:
            try:
                self.raw.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, lowat)
            except OSError:
                self._lowat = 0  # closed, or not supported after all: stop trying
                return
            self._lowat = lowat

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """``stream.receive_some`` with the stream's errors."""
        try:
            data: bytes | bytearray = await self.fast_receive(max_bytes)
            return data
        except OSError as exc:
            raise translate_socket_error(exc) from None

    async def send_all(self, data: Buffer) -> None:
        """``stream.send_all``; on a plain socket, first one direct ``send``.

        When the kernel takes the whole frame at once (almost always) the write costs
        one system call and no trip through Trio's scheduler; the rest of a partial
        write goes through the stream. Callers check for cancellation before they
        encode (``FrameWriter._write``), and the reader yields once per read anyway.
        """
        raw = self.raw
        if raw is not None:
            try:
                sent = raw.send(data)
            except OSError:
                sent = 0  # full, or an error the stream will raise in its own terms
            if sent == len(data):
                return
            if sent:
                data = memoryview(data)[sent:]
        await self.stream.send_all(data)
