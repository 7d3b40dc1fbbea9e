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
from typing import Any

import trio

from ._mask import Buffer

#: errnos that mean "this socket was closed" (as trio's SocketStream has them).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


def translate_socket_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The stream error ``SocketStream`` raises for a socket's ``OSError``."""
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

    __slots__ = ("stream", "fast_receive")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        if type(stream) is trio.SocketStream:
            self.fast_receive: Any = stream.socket.recv
        else:
            self.fast_receive = stream.receive_some

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """``stream.receive_some`` with the stream's errors."""
        try:
            data: bytes | bytearray = await self.fast_receive(max_bytes)
            return data
        except OSError as exc:
            raise translate_socket_error(exc) from None

    async def send_all(self, data: Buffer) -> None:
        """``stream.send_all``."""
        await self.stream.send_all(data)
