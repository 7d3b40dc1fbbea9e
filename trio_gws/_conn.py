"""``Conn``: one WebSocket connection over any Trio stream.

Reading happens in the task that calls ``listen()``: it feeds the transport's bytes to
the pure ``FrameReader`` and awaits the handler for each event, in wire order, before
reading further (back-pressure comes for free). Writing goes through ``FrameWriter``,
which keeps every frame in call order whether it was written directly or queued. The
connection's state lives in one ``Lifecycle`` (``_lifecycle``), which this class
drives: every transition happens here or is reported here.

``listen()`` runs in three steps:

1. the read phase, until a close frame arrives or something ends the connection;
2. the closing phase: answer the peer's close, or send ours with the failure's code,
   then wait for the peer to close the transport; bounded by ``close_timeout``;
3. the stream is closed and exactly one of ``on_close`` / ``on_error`` is called.

Other tasks (a failed writer, the keepalive, a parallel handler that raised) end the
connection by recording a failure in the lifecycle and cancelling the read phase's
cancel scope; the first failure recorded is what the handler is told.

Helper tasks (the write queue's drainer, keepalive, parallel handlers) live in a
nursery that ``listen()`` opens, so they never outlive the connection.

Size: this module is the public API of a connection (documented writes, close,
deadlines) and the one driver of its lifecycle, which is why it is longer than the
others; what can stand alone does: ``_parallel`` (parallel handlers), ``_keepalive``,
``_stepping`` (running handlers by hand), ``_transport`` and ``_lifecycle``.

Speed (see benchmarks/ and docs/design.md). What a sequential handler writes while
the reader handles one read is corked and leaves in one send before the next read
(FrameWriter); handlers are stepped by hand so that the common one, which finishes
without blocking, costs no wrapper, and one that blocks first hands its corked frames
to a flush task. The transport (``_transport``) reads and writes a plain socket
directly, and the rest of a large frame is read in one receive.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Coroutine, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

import trio

from ._config import Config
from ._errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandlerError,
    ProtocolError,
    WebSocketError,
    WebSocketTimeoutError,
)
from ._frames import CloseReceived, Ping, Pong, check_control_payload
from ._handler import EventHandler
from ._inbox import Inbox
from ._keepalive import keepalive
from ._lifecycle import Lifecycle, State
from ._parallel import ParallelHandlers
from ._reader import FrameReader
from ._stepping import resume_corked
from ._transport import Transport, stream_addresses, translate_socket_error
from ._types import Message, Opcode, Payload, as_bytes, data_opcode
from ._writer import FrameWriter

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._extension import Extension
    from ._handshake import Request

#: The most one read asks for while a large frame's payload is arriving.
_LARGE_READ = 1024 * 1024
Outcome = Union[WebSocketError, CloseReceived]


class _Ping:
    """A ping waiting for its pong (``rtt`` stays None if the connection ends first)."""

    __slots__ = ("sent_at", "done", "rtt")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.done = trio.Event()
        self.rtt: float | None = None


def _only_cancelled(exc: BaseException) -> trio.Cancelled | None:
    """The Cancelled inside ``exc`` when nothing but cancellation is in it, else None.

    listen()'s helper nursery wraps an outer cancellation in an exception group;
    callers of listen() get the plain Cancelled back, as from any other Trio call.
    """
    if isinstance(exc, trio.Cancelled):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_only_cancelled(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


class Conn(trio.abc.AsyncResource):
    """A WebSocket connection; safe to use from any task of the same Trio run.

    Built by ``Upgrader.upgrade`` / ``serve`` on the server and by ``connect`` on the
    client, after the opening handshake. Run it with ``listen()``; ``async with conn:``
    closes it (1000, or 1011 when the block raised) when the block ends.
    """

    __slots__ = (
        "_close_deadline", "_config", "_ended", "_handler", "_is_server", "_leftover",
        "_lifecycle", "_nursery", "_parallel", "_pings", "_pong_seen", "_read_deadline",
        "_read_scope", "_reader", "_reader_task", "_receive_scope", "_trace", "_transport",
        "_writer", "extension", "latency", "local_address", "remote_address", "request",
        "session", "subprotocol", "__weakref__",
        "_end_callbacks",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: EventHandler | None,
        config: Config,
        *,
        is_server: bool,
        request: Request,
        subprotocol: str | None = None,
        extension: Extension | None = None,
        leftover: bytes = b"",
    ) -> None:
        self._transport = Transport(stream)
        # No handler: pull mode, the messages wait in an Inbox for receive().
        self._handler = handler if handler is not None else Inbox()
        self._config = config
        self._is_server = is_server
        self.request = request
        self.subprotocol = subprotocol
        self.session: MutableMapping[str, Any] = {}
        self.remote_address, self.local_address = stream_addresses(stream)
        self.extension = extension
        self._lifecycle = Lifecycle()
        self._reader = FrameReader(
            expect_masked=is_server,
            max_content_length=config.max_content_length,
            check_text=config.check_text_encoding,
            extension_rsv=extension.rsv if extension is not None else 0,
            decoder=(extension.decoder(is_server=is_server, config=config)
                     if extension is not None else None),
        )
        self._writer = FrameWriter(
            self._transport,
            self._lifecycle,
            mask=not is_server,
            encoder=(extension.encoder(is_server=is_server, config=config)
                     if extension is not None else None),
            queue_size=config.write_queue_size,
            byte_limit=config.write_buffer_limit,
            on_broken=self._transport_broken,
            on_overflow=self._overflow,
        )
        self._leftover = leftover
        self._read_scope = trio.CancelScope()
        self._close_deadline = math.inf
        self._read_deadline = math.inf
        self._receive_scope: trio.CancelScope | None = None
        self._reader_task: trio.lowlevel.Task | None = None
        self._nursery: trio.Nursery | None = None
        # Made when somebody waits for the end (most connections: nobody). Events are
        # small, but not times thousands of idle connections.
        self._ended: trio.Event | None = None
        # Told synchronously when the connection ends (a hub removes its member).
        self._end_callbacks: list[Callable[[Conn], None]] | None = None
        self._pong_seen: trio.Event | None = None  # keepalive: a pong arrived
        # ping(): payload -> (sent at, answered); made by the first ping().
        self._pings: dict[bytes, _Ping] | None = None
        #: The last measured round trip (ping() or keepalive), in seconds, or None.
        self.latency: float | None = None
        self._parallel = (ParallelHandlers(config.parallel_limit, self._run_on_message,
                                           self._fail_soon)
                          if config.parallel_enabled else None)
        # Frames and transitions are traced at DEBUG; asked once, so tracing that is off
        # costs one test of a boolean per read.
        self._trace = config.logger.isEnabledFor(logging.DEBUG)

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the connection is in its lifecycle (OPEN, LOCAL_CLOSING, ...)."""
        return self._lifecycle.state

    @property
    def closing(self) -> bool:
        """True once writes are refused: we began closing, or the connection ended."""
        return self._lifecycle.closing

    @property
    def close_sent(self) -> bool:
        """Alias of ``closing`` (the name of earlier releases)."""
        return self._lifecycle.closing

    @property
    def closed(self) -> bool:
        """True once the connection has fully ended (the stream is closed)."""
        return self._lifecycle.ended

    @property
    def compressed(self) -> bool:
        """True when permessage-deflate was negotiated."""
        return self.extension is not None and self.extension.name == "permessage-deflate"

    @property
    def deflate_params(self) -> Any:
        """The negotiated permessage-deflate parameters (``DeflateParams``), or None."""
        return self.extension if self.compressed else None

    @property
    def is_server(self) -> bool:
        return self._is_server

    @property
    def queued(self) -> int:
        """Messages queued by ``write_nowait`` (and broadcasts) not yet sent."""
        return self._writer.queued

    @property
    def config(self) -> Config:
        return self._config

    def __repr__(self) -> str:
        side = "server" if self._is_server else "client"
        return f"<Conn {side} {self.remote_address} {self._lifecycle.state.value}>"

    # -- writing ---------------------------------------------------------------------

    async def write_message(self, opcode: Opcode | int, payload: Payload) -> None:
        """Send one data message.

        Args:
            opcode: ``Opcode.TEXT`` or ``Opcode.BINARY``.
            payload: bytes-like, or ``str`` (UTF-8 encoded).

        Raises:
            ConnectionClosed: the connection is closing or closed
                (``ConnectionClosedOK`` after a clean close).
            ValueError: ``opcode`` is not a data opcode.
        """
        if self._trace:
            self._log("> %s %d bytes", Opcode(opcode).name, len(payload))
        await self._writer.write_message(data_opcode(opcode), as_bytes(payload))

    async def write_string(self, text: str) -> None:
        """Send a text message (see ``write_message``)."""
        if self._trace:
            self._log("> TEXT %d characters", len(text))
        await self._writer.write_message(Opcode.TEXT, text.encode("utf-8"))

    async def writev(self, opcode: Opcode | int, *payloads: bytes | bytearray | memoryview
                     ) -> None:
        """Send one message made of several buffers, without joining large ones first.

        Raises:
            ConnectionClosed, ValueError: as ``write_message``.
        """
        if self._trace:
            self._log("> %s %d buffers", Opcode(opcode).name, len(payloads))
        await self._writer.write_vectored(data_opcode(opcode),
                                          [as_bytes(part) for part in payloads])

    def write_nowait(self, opcode: Opcode | int, payload: Payload) -> None:
        """Queue a message without waiting; it goes out in order with every other write.

        The queue holds at most ``Config.write_queue_size`` messages and
        ``Config.write_buffer_limit`` bytes (corked frames included; one message larger
        than that passes when nothing else waits). Past either the peer is not keeping
        up: the connection is failed with close code 1008 (the error reported to
        ``on_error`` counts the messages that were never sent). Needs ``listen()``
        running for the queue to drain.

        Raises:
            WriteQueueFullError: the queue is full (the connection is now failing).
            ConnectionClosed, ValueError: as ``write_message``.
        """
        kind = data_opcode(opcode)
        data = as_bytes(payload)
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer once we return
        if self._trace:
            self._log("> %s %d bytes (queued)", kind.name, len(data))
        writer = self._writer
        writer.write_nowait(lambda: writer.encode_message(kind, data), len(data))

    #: gws's name of ``write_nowait``.
    write_async = write_nowait

    def _write_nowait_frame(self, frame: bytes) -> None:
        """Queue an already encoded frame (the Broadcaster's shared frames)."""
        self._writer.write_nowait(frame, len(frame))

    async def write_ping(self, payload: Payload = b"") -> None:
        """Send a ping.

        Raises:
            ValueError: the payload is over 125 bytes.
            ConnectionClosed: as ``write_message``.
        """
        await self._write_control(Opcode.PING, payload)

    async def write_pong(self, payload: Payload = b"") -> None:
        """Send a pong (at most 125 bytes), e.g. as an unsolicited heartbeat.

        Raises:
            ValueError, ConnectionClosed: as ``write_ping``.
        """
        await self._write_control(Opcode.PONG, payload)

    async def _write_control(self, opcode: Opcode, payload: Payload) -> None:
        data = as_bytes(payload)
        check_control_payload(opcode, data)
        if self._trace:
            self._log("> %s %d bytes", opcode.name, len(data))
        await self._writer.write_control(opcode, data)

    async def write_close(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Start the close handshake; the peer's answer ends ``listen()``.

        The close frame goes out after everything written or queued before it. The wait
        for the peer's answer is bounded by ``close_timeout``.

        Args:
            code: a close code that may be sent (1000-1003, 1007-1014, 3000-4999).
            reason: at most 123 bytes of UTF-8.

        Raises:
            ConnectionClosed: closing already began (a second close) or it ended.
            ValueError: ``code`` or ``reason`` may not be sent.
        """
        payload = self._lifecycle.local_close(code, reason)
        self._transition(f"we close with {code}")
        self._arm_close_deadline()
        await self._writer.write_close(payload)

    async def aclose(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Close: handshake bounded by ``close_timeout``, then the stream. Idempotent.

        When ``listen()`` runs in another task this waits for it to finish; called from
        a handler (the reader's own task) it only starts the handshake, which the
        reader completes. On a connection that is not listening it runs ``listen()``
        itself until the peer answers (the handler sees the events that arrive). If
        it is cancelled while waiting, the stream is closed at once (Trio's rule for
        ``aclose``).

        Raises:
            ValueError: ``code`` or ``reason`` may not be sent.
        """
        try:
            await self.write_close(code, reason)
        except ConnectionClosed:
            pass  # closing began already, or the transport failed: listen() ends it
        if trio.lowlevel.current_task() is self._reader_task:
            return
        if self._reader_task is None:
            await self.listen()
            return
        if self._lifecycle.ended:
            return
        if self._ended is None:
            self._ended = trio.Event()
        try:
            await self._ended.wait()
        except BaseException:
            await trio.aclose_forcefully(self._transport.stream)  # the reader notices
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        """Close with 1000, or 1011 when the block raised."""
        await self.aclose(1000 if exc_type is None else 1011)

    # -- pull mode -------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message of a connection made without a handler (pull mode).

        At most a few messages wait here (``_inbox.RECEIVE_BUFFER``); past that the
        reader waits too, so a slow consumer slows the peer down. ``listen()`` must
        run (``open_conn`` runs it).

        Raises:
            ConnectionClosedOK: the connection ended normally (1000, 1001 or no code).
            ConnectionClosedError: it ended in any other way (``__cause__`` says why).
            RuntimeError: the connection has a handler: its messages go there.
        """
        return await self._inbox().receive()

    def __aiter__(self) -> Conn:
        self._inbox()
        return self

    async def __anext__(self) -> Message:
        """``async for message in conn``: ends on a normal close, raises otherwise."""
        try:
            return await self._inbox().receive()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    def _inbox(self) -> Inbox:
        handler = self._handler
        if not isinstance(handler, Inbox):
            raise RuntimeError("receive() and iteration are for connections made without "
                               "a handler (pull mode); this one's messages go to "
                               f"{type(handler).__name__}")
        return handler

    # -- round trips -----------------------------------------------------------------

    async def ping(self, payload: Payload | None = None) -> float:
        """Send a ping and wait for its pong: the round trip in seconds.

        Also sets ``conn.latency``. Bound the wait yourself (``trio.fail_after``). A
        pong answers its own ping and every earlier one (a peer may skip some).

        Args:
            payload: at most 125 bytes; a unique 8-byte payload by default.

        Raises:
            ConnectionClosed: the connection is closing, or ended before the pong.
            ValueError: the payload is over 125 bytes, or already waiting for a pong.
        """
        data = bytes(as_bytes(payload)) if payload is not None else os.urandom(8)
        waiting = self._new_ping(data)
        try:
            await self._write_control(Opcode.PING, data)
            await waiting.done.wait()
        finally:
            self._forget_ping(data)
        if waiting.rtt is None:
            raise self._lifecycle.closed_error()  # it ended first
        return waiting.rtt

    def _new_ping(self, data: bytes) -> _Ping:
        if self._pings is None:
            self._pings = {}
        if data in self._pings:
            raise ValueError(f"a ping with payload {data!r} is already waiting for its pong")
        ping = self._pings[data] = _Ping(trio.current_time())
        return ping

    def _forget_ping(self, data: bytes) -> None:
        if self._pings is not None:
            self._pings.pop(data, None)

    def _answered(self, payload: bytes) -> None:
        """A pong arrived: its ping, and every ping sent before it, are answered."""
        assert self._pings is not None
        ping = self._pings.get(payload)
        if ping is None:
            return  # unsolicited, or not one of ours
        now = trio.current_time()
        self.latency = now - ping.sent_at
        for other in self._pings.values():
            if other.sent_at <= ping.sent_at and other.rtt is None:
                other.rtt = now - other.sent_at
                other.done.set()

    # -- deadlines -------------------------------------------------------------------

    def set_deadline(self, deadline: float) -> None:
        """Fail the connection (1011) if no data arrives by ``deadline`` (trio time).

        gws's SetDeadline heartbeat: call it from ``on_open`` and again from
        ``on_ping`` / ``on_message`` to keep a live peer connected, e.g.
        ``conn.set_deadline(trio.current_time() + 30)``. ``math.inf`` clears it.
        """
        self._read_deadline = deadline
        if self._receive_scope is not None:
            self._receive_scope.deadline = deadline

    def _arm_close_deadline(self) -> None:
        deadline = trio.current_time() + self._config.close_timeout
        self._close_deadline = min(self._close_deadline, deadline)
        self._read_scope.deadline = min(self._read_scope.deadline, deadline)

    def _fail_soon(self, error: WebSocketError) -> None:
        """End the connection from any task: the first failure recorded wins."""
        if self._lifecycle.fail(error):
            self._transition(f"failing: {error}")
        self._read_scope.cancel()

    def _overflow(self, error: WebSocketError) -> None:
        """The write queue overflowed: fail, and refuse writes from now on (they would
        be queued, then dropped with nobody told)."""
        if self._lifecycle.fail(error, refuse_writes=True):
            self._transition(f"failing: {error}")
        self._read_scope.cancel()

    def _transport_broken(self, error: ConnectionClosedError) -> None:
        """The writer found the transport broken: nothing more can be sent."""
        self._lifecycle.transport_broken(error)
        self._transition(f"transport broken: {error}")
        self._read_scope.cancel()

    # -- tracing ---------------------------------------------------------------------

    def _log(self, message: str, *args: object) -> None:
        self._config.logger.debug("%r " + message, self, *args)

    def _transition(self, why: str) -> None:
        if self._trace:
            self._log("-> %s (%s)", self._lifecycle.state.value, why)

    # -- running ---------------------------------------------------------------------

    async def listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        """Run the connection until it ends; call it once, e.g. in a nursery task.

        Returns normally however the connection ended (the handler learns how through
        ``on_close`` or ``on_error``); only cancellation propagates. With
        ``nursery.start(conn.listen)`` it reports started once it is the connection's
        reader, so nothing can start a second one.

        Raises:
            RuntimeError: listen() is already running, or has run.
        """
        if self._reader_task is not None:
            raise RuntimeError("listen() is already running or has run")
        self._reader_task = trio.lowlevel.current_task()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._writer.attach(nursery)
                if self._config.ping_interval:
                    nursery.start_soon(keepalive, self)
                outcome = await self._read_phase()
                await self._closing_phase(outcome)
                self._writer.attach(None)
                nursery.cancel_scope.cancel()  # keepalive, parallel handlers, drainer
        except BaseException as exc:
            cancelled = _only_cancelled(exc)
            if cancelled is None:
                raise
            self._writer.attach(None)
            error = ConnectionClosedError("the connection was cancelled")
            self._lifecycle.fail(error)
            await self._end(error, shielded=True)
            if cancelled is exc:
                raise
            raise cancelled from None
        await self._end(outcome)

    async def _read_phase(self) -> Outcome:
        """Handle events in wire order until the peer's close frame or a failure."""
        lifecycle = self._lifecycle
        try:
            with self._read_scope:
                await self._callback(self._handler.on_open, self)
                # The loop is here, not in a helper: an idle connection waits in the
                # receive with one coroutine frame less (memory per connection). The
                # receive is the transport's raw one; its OSErrors are translated below.
                receive = self._transport.fast_receive
                reader = self._reader
                size = self._config.read_buffer_size
                data: bytes | bytearray = self._leftover
                self._leftover = b""
                while True:
                    if data:
                        close = await self._handle_read(data)
                        if close is not None:
                            return close
                    # The rest of a large frame in one read: fewer system calls and
                    # pieces to join (its size is already bounded by the reader).
                    want = max(size, min(reader.frame_remaining, _LARGE_READ))
                    if self._read_deadline == math.inf:
                        try:
                            data = await receive(want)
                        except OSError as exc:
                            raise translate_socket_error(exc) from None
                    else:
                        data = await self._receive_with_deadline(want)
                    if not data:
                        raise ConnectionClosedError(
                            "the peer closed the stream without a close frame")
        except (ProtocolError, HandlerError, WebSocketTimeoutError, ConnectionClosed) as exc:
            self._fail_soon(exc)
            return lifecycle.failure or exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            lifecycle.transport_broken(ConnectionClosedError(f"transport failed: {exc!r}"))
            assert lifecycle.failure is not None
            return lifecycle.failure
        # Only the read scope's own cancellation gets here.
        if lifecycle.failure is None:
            self._fail_soon(WebSocketTimeoutError(
                f"no close frame from the peer within {self._config.close_timeout}s"))
        assert lifecycle.failure is not None
        return lifecycle.failure

    async def _handle_read(self, data: bytes | bytearray) -> CloseReceived | None:
        """Hand the events of one read to the handler, in order; the close, if any.

        Sequential handlers run in this task: what they write is corked and leaves in
        one piece before the next read (see FrameWriter).
        """
        handler = self._handler
        writer = self._writer
        parallel = self._parallel
        trace = self._trace
        writer.cork_task = None if parallel else self._reader_task
        try:
            event: Any  # dispatched on its exact type: cheaper than isinstance chains
            for event in self._reader.receive(data):
                if trace:
                    self._log("< %r", event)
                kind = type(event)
                if kind is Message:
                    if parallel is not None:
                        assert self._nursery is not None
                        await parallel.start(event, self._nursery)
                    else:
                        await self._callback(handler.on_message, self, event)
                elif kind is Ping:
                    await self._callback(handler.on_ping, self, event.payload)
                elif kind is Pong:
                    if self._pong_seen is not None:
                        self._pong_seen.set()
                    if self._pings:
                        self._answered(event.payload)
                    await self._callback(handler.on_pong, self, event.payload)
                else:
                    assert isinstance(event, CloseReceived)
                    self._lifecycle.remote_close(event.code, event.reason)
                    self._transition(f"the peer closes with {event.code}")
                    return event
        finally:
            writer.cork_task = None
        if writer.has_unsent:
            await writer.flush_before_read()
        return None

    async def _receive_with_deadline(self, size: int) -> bytes | bytearray:
        with trio.CancelScope(deadline=self._read_deadline) as scope:
            self._receive_scope = scope
            try:
                return await self._transport.receive_some(size)
            finally:
                self._receive_scope = None
        raise WebSocketTimeoutError("read deadline passed without data from the peer")

    async def _callback(
        self, method: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        try:
            if self._writer.cork_task is None:
                await method(*args)
            else:
                # Run it by hand: most handlers finish without blocking (the common
                # echo, a corked write); one that blocks must not hold corked frames.
                coro = method(*args)
                try:
                    trap = coro.send(None)
                except StopIteration:
                    pass
                else:
                    await resume_corked(coro, trap, self._writer.flush_soon)
        except ConnectionClosed:
            if self._lifecycle.broken or not self._lifecycle.closing:
                raise  # our own write failed: a transport problem, not a handler bug
            # We began closing (our close frame is sent or queued) and a handler's write
            # lost that race: not a failure. Keep reading until the peer's close frame,
            # or the close handshake (and the close frame itself) would be cut short.
        except Exception as exc:
            name = getattr(method, "__name__", "callback")
            self._config.logger.exception("%s raised in %s", name, self)
            raise HandlerError(f"{name} raised {exc!r}") from exc

    async def _run_on_message(self, message: Message) -> None:
        """``on_message`` as a parallel handler task runs it."""
        await self._callback(self._handler.on_message, self, message)

    # -- ending ----------------------------------------------------------------------

    async def _closing_phase(self, outcome: Outcome) -> None:
        """Answer or send the close frame, then let the peer close first (bounded)."""
        self._arm_close_deadline()
        lifecycle = self._lifecycle
        writer = self._writer
        with trio.CancelScope(deadline=self._close_deadline):
            try:
                if isinstance(outcome, CloseReceived):
                    await self._let_handlers_finish()
                    reply = lifecycle.reply_payload()
                    if reply is not None:
                        self._transition("we answer the peer's close")
                        await writer.write_close(reply)
                    await writer.wait_flushed()  # e.g. our own close, still being sent
                    if not self._is_server:
                        await self._wait_for_eof()
                    return
                if not lifecycle.owes_failure_close(outcome):
                    return
                await self._let_handlers_finish()
                payload = lifecycle.failure_payload(outcome)
                if payload is None:
                    return  # the transport broke meanwhile, or a handler closed
                self._transition(f"we fail with {outcome.close_code}")
                await writer.write_close(payload)
                await self._wait_for_eof()
            except ConnectionClosed:
                pass  # the peer is gone: nothing more to say

    async def _let_handlers_finish(self) -> None:
        """Parallel handlers answer before our close frame; they get half of
        close_timeout, so the close frame still fits in it."""
        if self._parallel is not None:
            await self._parallel.finish(self._config.close_timeout / 2)

    async def _wait_for_eof(self) -> None:
        """Half-close (server) and discard input until the peer closes (see
        ``_transport.half_close``: a close frame must not be destroyed by an RST)."""
        from ._transport import half_close

        transport = self._transport
        try:
            if self._is_server:
                await half_close(transport.stream)
            while await transport.receive_some(self._config.read_buffer_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _end(self, outcome: Outcome, *, shielded: bool = False) -> None:
        """Close the stream and tell the handler how the connection ended, once."""
        if self._lifecycle.ended:
            return
        self._lifecycle.end()
        self._transition("ended")
        self._run_end_callbacks()
        # Shielded: under an outer cancellation aclose would raise Cancelled again
        # and skip the report.
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._transport.stream)
        dropped = self._writer.fail_queue()
        for ping in (self._pings or {}).values():
            ping.done.set()  # no pong will come: ping() raises ConnectionClosed
        if dropped:
            # Never silently: the log says it, and so does the error on_error gets.
            self._config.logger.warning("%s ended with %d queued message(s) unsent",
                                        self, dropped)
            if isinstance(outcome, WebSocketError) and len(outcome.args) == 1:
                outcome.args = (f"{outcome.args[0]} ({dropped} queued message(s) not sent)",)
        try:
            await self._notify(outcome, shielded)
        finally:
            if self._ended is not None:
                self._ended.set()

    async def _notify(self, outcome: Outcome, shielded: bool) -> None:
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

    # -- end callbacks ---------------------------------------------------------------

    def _on_end(self, callback: Callable[[Conn], None]) -> None:
        """Call ``callback(conn)`` once when the connection ends, before ``on_close``
        / ``on_error`` (a hub forgets its member there, so the application needs no
        ``leave_all``). Called at once when it has ended already."""
        if self._lifecycle.ended:
            callback(self)
            return
        if self._end_callbacks is None:
            self._end_callbacks = []
        self._end_callbacks.append(callback)

    def _run_end_callbacks(self) -> None:
        callbacks, self._end_callbacks = self._end_callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                self._config.logger.exception("end callback %r raised in %s", callback, self)
