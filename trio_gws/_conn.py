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

This module is the public API of a connection and the driver of its lifecycle; the
phases live beside it: ``_dispatch`` (the read phase, handler calls, streamed
messages), ``_closing`` (the closing phase and the end), ``_parallel``,
``_keepalive`` (pings and round trips), ``_stepping``, ``_transport``.

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
from collections.abc import Callable, MutableMapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ._config import Config
from ._closing import closing_phase, end
from ._dispatch import run_in_parallel, read_phase
from ._errors import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, WebSocketError
from ._frames import check_control_payload
from ._handler import EventHandler
from ._inbox import Inbox
from ._keepalive import Ping, forget_ping, keepalive, new_ping
from ._lifecycle import Lifecycle, State
from ._loan import recall_reads
from ._parallel import ParallelHandlers
from ._reader import FrameReader
from ._streams import MessageStream, MessageWriter, Source, chunks_of
from ._transport import Transport, stream_addresses
from ._types import Message, Opcode, Payload, as_bytes, data_opcode
from ._writer import FrameWriter

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._extension import Extension
    from ._handshake import Request


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
        "_read_scope", "_reader", "_reader_idle", "_reader_task", "_receive_scope",
        "_stream_in", "_trace",
        "_transport",
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
        # Long because every per-connection attribute is set here and only here (the
        # class has __slots__): what an idle connection costs is read in one place.
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
        streaming = type(self._handler).on_stream is not EventHandler.on_stream
        self._stream_in: MessageStream | None = None  # the message on_stream reads
        self._reader = FrameReader(
            expect_masked=is_server,
            max_content_length=config.max_content_length,
            check_text=config.check_text_encoding,
            extension_rsv=extension.rsv if extension is not None else 0,
            decoder=(extension.decoder(is_server=is_server, config=config)
                     if extension is not None else None),
            stream_messages=streaming,
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
        #: The reader waits for data with no scope of its own (no read deadline): a
        #: deadline set meanwhile rides on the read scope until data comes.
        self._reader_idle = False
        self._reader_task: trio.lowlevel.Task | None = None
        self._nursery: trio.Nursery | None = None
        # Made when somebody waits for the end (most connections: nobody). Events are
        # small, but not times thousands of idle connections.
        self._ended: trio.Event | None = None
        # Told synchronously when the connection ends (a hub removes its member).
        self._end_callbacks: list[Callable[[Conn], None]] | None = None
        self._pong_seen: trio.Event | None = None  # keepalive: a pong arrived
        # ping(): payload -> (sent at, answered); made by the first ping().
        self._pings: dict[bytes, Ping] | None = None
        #: The last measured round trip (ping() or keepalive), in seconds, or None.
        self.latency: float | None = None
        self._parallel = (ParallelHandlers(config.parallel_limit,
                                           partial(run_in_parallel, self), self._fail_soon)
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
        self._transition("we close with %s", code)
        self._arm_close_deadline()
        recall_reads(self)  # the reader must see the answer
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
            # the reads lent to a handler would not notice the socket closing
            recall_reads(self, trio.ClosedResourceError("this socket was closed"))
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
        waiting = new_ping(self, data)
        try:
            await self._write_control(Opcode.PING, data)
            await waiting.done.wait()
        finally:
            forget_ping(self, data)
        if waiting.rtt is None:
            raise self._lifecycle.closed_error()  # it ended first
        return waiting.rtt

    # -- deadlines -------------------------------------------------------------------

    def set_deadline(self, deadline: float) -> None:
        """Fail the connection (1011) if no data arrives by ``deadline`` (trio time).

        gws's SetDeadline heartbeat: call it from ``on_open`` and again from
        ``on_ping`` / ``on_message`` to keep a live peer connected, e.g.
        ``conn.set_deadline(trio.current_time() + 30)``. ``math.inf`` clears it.
        Any task may call it, at any time: it applies to the read under way too.
        """
        self._read_deadline = deadline
        if self._receive_scope is not None:
            self._receive_scope.deadline = deadline
        elif self._reader_idle:
            # The reader's wait has no cancel scope (none per read: the hot path);
            # the read scope carries the deadline until data comes (_dispatch).
            self._read_scope.deadline = min(deadline, self._close_deadline)
        if deadline != math.inf:
            recall_reads(self)  # lent reads keep no deadline: the reader's do

    def _arm_close_deadline(self) -> None:
        deadline = trio.current_time() + self._config.close_timeout
        self._close_deadline = min(self._close_deadline, deadline)
        self._read_scope.deadline = min(self._read_scope.deadline, deadline)

    def _fail_soon(self, error: WebSocketError) -> None:
        """End the connection from any task: the first failure recorded wins."""
        if self._lifecycle.fail(error):
            self._transition("failing: %s", error)
        self._read_scope.cancel()

    def _overflow(self, error: WebSocketError) -> None:
        """The write queue overflowed: fail, and refuse writes from now on (they would
        be queued, then dropped with nobody told)."""
        if self._lifecycle.fail(error, refuse_writes=True):
            self._transition("failing: %s", error)
        self._read_scope.cancel()

    def _transport_broken(self, error: ConnectionClosedError) -> None:
        """The writer found the transport broken: nothing more can be sent."""
        self._lifecycle.transport_broken(error)
        self._transition("transport broken: %s", error)
        self._read_scope.cancel()

    # -- tracing ---------------------------------------------------------------------

    def _log(self, message: str, *args: object) -> None:
        self._config.logger.debug("%r " + message, self, *args)

    def _transition(self, why: str, *args: object) -> None:
        """Trace a transition; ``why`` is formatted with ``args`` only when tracing."""
        if self._trace:
            self._log("-> %s (" + why + ")", self._lifecycle.state.value, *args)

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
                outcome = await read_phase(self)
                await closing_phase(self, outcome)
                self._writer.attach(None)
                nursery.cancel_scope.cancel()  # keepalive, parallel handlers, drainer
        except BaseException as exc:
            cancelled = _only_cancelled(exc)
            if cancelled is None:
                raise
            self._writer.attach(None)
            error = ConnectionClosedError("the connection was cancelled")
            self._lifecycle.fail(error)
            await end(self, error, shielded=True)
            if cancelled is exc:
                raise
            raise cancelled from None
        await end(self, outcome)

    # -- streamed messages -----------------------------------------------------------

    def message_writer(self, opcode: Opcode | int) -> MessageWriter:
        """Send one message in fragments, as its bytes become available.

        ``async with conn.message_writer(Opcode.BINARY) as writer: await
        writer.write(chunk)``: a first frame and continuation frames, each sent as it
        is written (compressed with a sync flush per fragment when permessage-deflate
        is on, so the peer inflates as it goes). Other data messages wait until it is
        done (call order is kept); pings, pongs and a close frame may go between its
        fragments. Leaving the block with an exception, or cancelled, once something
        was sent fails the connection with 1011: a message cannot be resumed.

        Raises:
            ValueError: ``opcode`` is not TEXT or BINARY.
            ConnectionClosed: (on entering or writing) the connection is closing.
        """
        return MessageWriter(self, opcode)

    async def write_file(self, opcode: Opcode | int, source: Source, *,
                         chunk_size: int = 65536) -> int:
        """Send one message from a file or an iterable, in fragments, without holding
        it in memory; returns the payload bytes sent.

        Args:
            opcode: ``Opcode.BINARY`` (or TEXT: the bytes must be UTF-8).
            source: a path, a binary file object (read in a worker thread; not closed),
                a trio async file, or an iterable / async iterable of bytes.
            chunk_size: bytes per read, and so per fragment, for files.

        Raises:
            ConnectionClosed, ValueError: as ``message_writer``.
            TypeError: ``source`` is not something to stream from.
            OSError: the file cannot be read (the connection fails: 1011).
        """
        async with self.message_writer(opcode) as writer:
            async for chunk in chunks_of(source, chunk_size):
                await writer.write(chunk)
            return writer.sent

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
