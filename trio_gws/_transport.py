"""The one place that knows what kind of stream a connection runs on.

A connection talks to any ``trio.abc.Stream``. A plain ``trio.SocketStream`` (most
servers' connections) gets fast paths: reads and writes go straight to its socket,
skipping the conflict detector, the error-translating context manager and the
memoryviews that ``SocketStream`` adds on every call (as much as the system call
itself for a small frame; the write lock and the single reader already rule out
concurrent use), and the reader's flush can be a plain ``write`` on the descriptor.
The fast paths raise exactly what ``SocketStream`` raises: ``ClosedResourceError`` for
a closed socket, ``BrokenResourceError`` (from the ``OSError``) for a reset or broken
one, so nothing above this module sees the difference.

Also here: the peer's and our addresses (under TLS too) and the half-close that lets
a close frame reach the peer before the stream closes.
"""

from __future__ import annotations

import errno
import os
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
    """A connection's stream with the fast paths of a plain ``SocketStream``.

    ``fast_receive`` is the raw receive for the reader's loop: on a plain socket it is
    the socket's ``recv``, so the loop must pass an ``OSError`` through
    ``translate_socket_error`` (the loop does this in its own ``except``, which costs
    nothing; a wrapper coroutine would cost a frame per idle connection).
    """

    __slots__ = ("stream", "fast_receive", "_sock", "_direct")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        if type(stream) is trio.SocketStream:
            self._sock: Any = stream.socket
            self.fast_receive: Any = self._sock.recv
        else:
            self._sock = None
            self.fast_receive = stream.receive_some
        # The reader's flush writes on the descriptor directly (POSIX only).
        self._direct = self._sock is not None and os.name == "posix"

    @property
    def can_write_now(self) -> bool:
        """True when ``write_now`` can write (a plain socket on POSIX)."""
        return self._direct

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """``stream.receive_some`` with the stream's errors."""
        try:
            data: bytes | bytearray = await self.fast_receive(max_bytes)
            return data
        except OSError as exc:
            raise translate_socket_error(exc) from None

    async def send_all(self, data: Buffer) -> None:
        """``stream.send_all``; on a plain socket, straight to it."""
        sock = self._sock
        if sock is None:
            await self.stream.send_all(data)
            return
        if sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        try:
            sent = await sock.send(data)
            if sent < len(data):
                view = memoryview(data)
                while sent < len(view):
                    sent += await sock.send(view[sent:])
        except OSError as exc:
            raise translate_socket_error(exc) from None

    def write_now(self, data: Buffer) -> int:
        """Write without waiting or a checkpoint; how many bytes the kernel took.

        -1 when the stream has no descriptor to write on (TLS, memory streams): the
        caller sends the usual way. 0 when the socket buffer is full.

        Raises:
            trio.ClosedResourceError, trio.BrokenResourceError: as ``send_all``.
        """
        if not self._direct:
            return -1
        # Asked each time: a closed socket's number may already belong to another one.
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("this socket was already closed")
        try:
            return _write_fd(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise translate_socket_error(exc) from None


#: The system call of ``Transport.write_now`` (a name of its own, for tests).
_write_fd = os.write
