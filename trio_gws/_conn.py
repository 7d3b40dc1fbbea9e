"""``Conn``: one WebSocket connection over any Trio stream.

Reading happens in the task that calls ``listen()``: it feeds the transport's bytes to
the pure ``FrameReader`` and awaits the handler for each event, in wire order, before
reading further (back-pressure comes for free). Writing goes through one
``StrictFIFOLock``, so frames from any number of tasks never interleave and go out in
call order; compression happens under that lock, so the order of compression (which
matters with context takeover) is the order on the wire.

Ending is centralised in ``listen()``: whatever ends the connection (close handshake,
protocol violation, handler exception, transport failure, timeout) is turned into
one outcome, the stream is closed, and exactly one of ``on_close`` / ``on_error`` is
called. Every wait after a close frame is bounded by ``close_timeout`` through the
reader's cancel scope.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Any, Union

import trio

from ._close import build_close_payload
from ._config import Config
from ._errors import (
    ConnectionClosedError,
    HandlerError,
    ProtocolError,
    WebSocketError,
    WebSocketTimeoutError,
)
from ._frames import CloseReceived, Ping, Pong, check_control_payload, encode_frame
from ._handler import EventHandler
from ._reader import FrameReader
from ._types import Message, Opcode

if TYPE_CHECKING:
    from ._deflate import Compressor, DeflateParams
    from ._handshake import Request

Payload = Union[bytes, bytearray, memoryview, str]

def _stream_addresses(stream: trio.abc.Stream) -> tuple[Any, Any]:
    """(remote, local) socket addresses of a SocketStream, possibly under TLS."""
    inner: Any = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return None, None
    try:
        return sock.getpeername(), sock.getsockname()
    except OSError:
        return None, None


def _as_bytes(payload: Payload) -> bytes | bytearray | memoryview:
    return payload.encode("utf-8") if isinstance(payload, str) else payload


class Conn:
    """A WebSocket connection; safe to use from any task of the same Trio run.

    Built by ``Upgrader.upgrade`` / ``serve`` on the server and by ``connect`` on the
    client, after the opening handshake. Call ``listen()`` to run it.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: EventHandler,
        config: Config,
        *,
        is_server: bool,
        request: Request,
        subprotocol: str | None = None,
        deflate: DeflateParams | None = None,
        leftover: bytes = b"",
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._config = config
        self._is_server = is_server
        self._mask = not is_server
        self.request = request
        self.subprotocol = subprotocol
        self.session: MutableMapping[str, Any] = {}
        self.remote_address, self.local_address = _stream_addresses(stream)
        self._compressor: Compressor | None = None
        decompressor = None
        if deflate is not None:
            from ._deflate import Compressor, Decompressor

            self._compressor = Compressor(deflate, is_server=is_server,
                                          level=config.compress_level)
            decompressor = Decompressor(deflate, is_server=is_server,
                                        max_size=config.max_content_length)
        self.deflate_params = deflate
        self._reader = FrameReader(
            expect_masked=is_server,
            max_content_length=config.max_content_length,
            check_text=config.check_text_encoding,
            decompressor=decompressor,
        )
        self._leftover = leftover
        self._write_lock = trio.StrictFIFOLock()
        self._read_scope = trio.CancelScope()
        self._close_deadline = math.inf
        self._abort_error: WebSocketError | None = None
        self._listening = False
        self._reader_task: trio.lowlevel.Task | None = None
        self._ended = trio.Event()
        self._reported = False
        self._close_sent = False
        self._close_received: CloseReceived | None = None
        self._stream_closed = False

    # -- state -----------------------------------------------------------------------

    @property
    def compressed(self) -> bool:
        """True when permessage-deflate was negotiated."""
        return self.deflate_params is not None

    @property
    def is_server(self) -> bool:
        return self._is_server

    @property
    def close_sent(self) -> bool:
        """True once we sent a close frame: no more frames may be written."""
        return self._close_sent

    @property
    def closed(self) -> bool:
        """True once the connection has fully ended (the stream is closed)."""
        return self._ended.is_set()

    @property
    def config(self) -> Config:
        return self._config

    def __repr__(self) -> str:
        side = "server" if self._is_server else "client"
        state = "closed" if self.closed else "closing" if self._close_sent else "open"
        return f"<Conn {side} {self.remote_address} {state}>"

    # -- writing ---------------------------------------------------------------------

    async def write_message(self, opcode: Opcode | int, payload: Payload) -> None:
        """Send one data message (TEXT or BINARY); ``str`` payloads are UTF-8 encoded."""
        opcode = Opcode(opcode)
        if opcode is not Opcode.TEXT and opcode is not Opcode.BINARY:
            raise ValueError(f"write_message sends TEXT or BINARY, not {opcode.name}")
        data = _as_bytes(payload)
        async with self._write_lock:
            self._check_writable()
            await self._send_locked(self._encode_message(opcode, data))

    async def write_string(self, text: str) -> None:
        """Send a text message."""
        await self.write_message(Opcode.TEXT, text.encode("utf-8"))

    async def write_ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes)."""
        await self._write_control(Opcode.PING, payload)

    async def write_pong(self, payload: bytes = b"") -> None:
        """Send a pong (at most 125 bytes), e.g. as an unsolicited heartbeat."""
        await self._write_control(Opcode.PONG, payload)

    async def write_close(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Start the close handshake; the peer's answer ends ``listen()``.

        The wait for that answer is bounded by ``close_timeout``. Calling it again once
        a close frame was sent does nothing.
        """
        payload = build_close_payload(code, reason)
        async with self._write_lock:
            if self._close_sent or self._stream_closed:
                return
            await self._send_close_locked(payload)

    async def aclose(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Close: handshake bounded by ``close_timeout``, then the stream.

        When ``listen()`` runs in another task this waits for it to finish the
        handshake; called from a handler (the reader's own task) it only starts the
        handshake, which the reader then completes.
        """
        await self.write_close(code, reason)
        if trio.lowlevel.current_task() is self._reader_task:
            return
        if self._listening:
            await self._ended.wait()
        else:
            await self.listen()

    async def _write_control(self, opcode: Opcode, payload: Payload) -> None:
        data = _as_bytes(payload)
        check_control_payload(opcode, data)
        async with self._write_lock:
            self._check_writable()
            await self._send_locked(encode_frame(opcode, data, mask=self._mask))

    def _check_writable(self) -> None:
        if self._close_sent or self._stream_closed:
            received = self._close_received
            raise ConnectionClosedError(
                "the connection is closing or closed",
                received.code if received else 1006,
                received.reason if received else b"",
            )

    def _encode_message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> bytes:
        compressor = self._compressor
        if compressor is not None and len(data) >= self._config.compress_threshold:
            return encode_frame(opcode, compressor.compress(data), rsv1=True, mask=self._mask)
        return encode_frame(opcode, data, mask=self._mask)

    async def _send_close_locked(self, payload: bytes) -> None:
        self._close_sent = True
        self._arm_close_deadline()
        await self._send_locked(encode_frame(Opcode.CLOSE, payload, mask=self._mask))

    async def _send_locked(self, frame: bytes) -> None:
        try:
            await self._stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = ConnectionClosedError(f"transport failed while writing: {exc!r}")
            self._abort(error)
            raise error from exc
        except trio.Cancelled:
            # Part of the frame may be on the wire: the stream can't be used again.
            self._abort(ConnectionClosedError("a write was cancelled mid-frame"))
            raise

    def _abort(self, error: WebSocketError) -> None:
        """Make the reader give up at once (the stream is unusable)."""
        self._stream_closed = True
        if self._abort_error is None:
            self._abort_error = error
        self._read_scope.cancel()

    def _arm_close_deadline(self) -> None:
        deadline = trio.current_time() + self._config.close_timeout
        self._close_deadline = min(self._close_deadline, deadline)
        self._read_scope.deadline = min(self._read_scope.deadline, deadline)

    # -- reading ---------------------------------------------------------------------

    async def listen(self) -> None:
        """Run the connection until it ends; call it once, e.g. in a nursery task.

        Returns normally however the connection ended (the handler learns how through
        ``on_close`` or ``on_error``); only cancellation propagates.
        """
        if self._listening:
            raise RuntimeError("listen() is already running or has run")
        self._listening = True
        self._reader_task = trio.lowlevel.current_task()
        outcome: WebSocketError | CloseReceived
        try:
            outcome = await self._run()
        except trio.Cancelled:
            await self._close_stream()
            await self._report(ConnectionClosedError("the connection was cancelled"),
                               shielded=True)
            raise
        await self._close_stream()
        await self._report(outcome)

    async def _run(self) -> WebSocketError | CloseReceived:
        """The reader loop; returns what ended the connection."""
        # Set once the ending is decided, so that running out of close_timeout while
        # sending our close frame or draining the peer does not replace it.
        decided: WebSocketError | CloseReceived | None = None
        try:
            with self._read_scope:
                try:
                    await self._callback(self._handler.on_open, self)
                    outcome = await self._read_until_close()
                except ProtocolError as exc:
                    decided = exc
                    await self._fail(exc.close_code, str(exc))
                    return exc
                except HandlerError as exc:
                    decided = exc
                    await self._fail(1011, "internal error")
                    return exc
                if not self._is_server:
                    decided = outcome
                    await self._wait_for_eof()
                return outcome
            # Only the read scope's own cancellation gets here.
            if decided is not None:
                return decided
            if self._abort_error is not None:
                return self._abort_error
            return WebSocketTimeoutError(
                f"no close frame from the peer within {self._config.close_timeout}s"
            )
        except ConnectionClosedError as exc:
            return exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            return ConnectionClosedError(f"transport failed: {exc!r}")

    async def _read_until_close(self) -> CloseReceived:
        handler = self._handler
        reader = self._reader
        stream = self._stream
        size = self._config.read_buffer_size
        data: bytes | bytearray = self._leftover
        self._leftover = b""
        while True:
            if data:
                for event in reader.receive(data):
                    kind = type(event)
                    if kind is Message:
                        await self._callback(handler.on_message, self, event)
                    elif kind is Ping:
                        await self._callback(handler.on_ping, self, event.payload)  # type: ignore[union-attr]
                    elif kind is Pong:
                        await self._callback(handler.on_pong, self, event.payload)  # type: ignore[union-attr]
                    else:
                        assert isinstance(event, CloseReceived)
                        await self._answer_close(event)
                        return event
            data = await stream.receive_some(size)
            if not data:
                raise ConnectionClosedError("the peer closed the stream without a close frame")

    async def _callback(
        self, method: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        try:
            await method(*args)
        except ConnectionClosedError:
            raise  # our own write failed: a transport problem, not a handler bug
        except Exception as exc:
            name = getattr(method, "__name__", "callback")
            self._config.logger.exception("%s raised in %s", name, self)
            raise HandlerError(f"{name} raised {exc!r}") from exc

    async def _answer_close(self, event: CloseReceived) -> None:
        """Echo the peer's close (RFC 6455 section 5.5.1) unless we sent ours first."""
        self._close_received = event
        self._arm_close_deadline()
        async with self._write_lock:
            if self._close_sent or self._stream_closed:
                return
            payload = b"" if event.code == 1005 else struct.pack("!H", event.code)
            try:
                await self._send_close_locked(payload)
            except ConnectionClosedError:
                pass  # the peer may close right after its close frame

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (section 7.1.7): close frame with ``code``, then drain."""
        self._arm_close_deadline()  # also bounds waiting for a writer stuck on the lock
        async with self._write_lock:
            if not (self._close_sent or self._stream_closed):
                raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
                try:
                    await self._send_close_locked(struct.pack("!H", code) + raw)
                except ConnectionClosedError:
                    return
        await self._wait_for_eof()

    async def _wait_for_eof(self) -> None:
        """Half-close if possible and discard input until the peer closes (bounded).

        Closing a socket with unread input makes the kernel send RST, which can destroy
        our close frame before the peer reads it; draining first avoids that.
        """
        send_eof = getattr(self._stream, "send_eof", None)
        try:
            if send_eof is not None and self._is_server:
                await send_eof()
            while await self._stream.receive_some(self._config.read_buffer_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    # -- ending ----------------------------------------------------------------------

    async def _close_stream(self) -> None:
        self._stream_closed = True
        # Shielded: under an outer cancellation (listen() cancelled) the Cancelled
        # raised by aclose would otherwise skip the report to on_error.
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)

    async def _report(self, outcome: WebSocketError | CloseReceived, *,
                      shielded: bool = False) -> None:
        """Tell the handler how the connection ended: exactly once."""
        if self._reported:
            return
        self._reported = True
        try:
            await self._notify(outcome, shielded)
        finally:
            self._ended.set()

    async def _notify(self, outcome: WebSocketError | CloseReceived, shielded: bool) -> None:
        with trio.CancelScope(shield=shielded) as scope:
            if shielded:
                scope.deadline = trio.current_time() + self._config.close_timeout
            try:
                if isinstance(outcome, CloseReceived):
                    await self._handler.on_close(self, outcome.code, outcome.reason)
                else:
                    error: Exception = outcome
                    if isinstance(outcome, HandlerError) and isinstance(
                        outcome.__cause__, Exception
                    ):
                        error = outcome.__cause__
                    await self._handler.on_error(self, error)
            except Exception:
                self._config.logger.exception("on_close/on_error raised in %s", self)
