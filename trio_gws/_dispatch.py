"""Reading and dispatching: the read phase of ``Conn.listen()``.

The read phase feeds the transport's bytes to the pure ``FrameReader`` and awaits
the handler for each event, in wire order, before reading further: back-pressure
comes for free. What a sequential handler writes while one read is handled is corked
(``FrameWriter``) and leaves in one send before the next read. Parallel handlers
(``_parallel``) and streamed messages (``on_stream``, ``_streams``) run in tasks of
their own in the connection's helper nursery.

These are functions of a ``Conn`` rather than its methods only to keep ``_conn``
readable; they use its private state, which nothing else touches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Union

import trio
from trio.lowlevel import wait_readable

from ._errors import (
    ConnectionClosed,
    ConnectionClosedError,
    HandlerError,
    ProtocolError,
    WebSocketError,
    WebSocketTimeoutError,
)
from ._frames import (
    CloseReceived,
    Ping,
    Pong,
    StreamData,
    StreamEnd,
    StreamStart,
    StreamWhole,
)
from ._keepalive import answered
from ._loan import lend_reads, lendable
from ._stepping import resume_corked
from ._streams import MessageStream
from ._transport import translate_socket_error
from ._types import CloseCode, Message, Opcode

if TYPE_CHECKING:
    from ._conn import Conn

#: How a read phase ends: the peer's close frame, or the failure that ended it.
Outcome = Union[WebSocketError, CloseReceived]


async def read_phase(conn: Conn) -> Outcome:
    """Handle events in wire order until the peer's close frame or a failure."""
    lifecycle = conn._lifecycle
    try:
        with conn._read_scope:
            await callback(conn, conn._handler.on_open, conn)
            # The loop is here, not in a helper: an idle connection waits in the
            # receive with one coroutine frame less (0.23 KiB per idle connection,
            # benchmarks/ABLATION.md). The receive is the transport's raw one (1.08x
            # to 1.15x in scenarios a-c); its OSErrors are translated below.
            transport = conn._transport
            receive = transport.fast_receive
            raw = transport.raw
            reader = conn._reader
            read_scope = conn._read_scope
            drained = True
            size = conn._config.read_buffer_size
            data: bytes | bytearray | None = conn._leftover
            conn._leftover = b""
            while True:
                if data:
                    close = await handle_read(conn, data)
                    if close is not None:
                        return close
                stream = conn._stream_in
                if stream is not None:
                    if lendable(conn, stream):
                        # Its handler waits for the next piece: its task reads.
                        events, drained = await lend_reads(conn, stream, drained)
                        data = None
                        if events is not None:
                            close = await handle_read(conn, b"", events)
                            if close is not None:
                                return close
                        continue
                    if drained or raw is None or conn._read_deadline != math.inf:
                        hand_over(conn)  # the read below may wait
                if conn._read_deadline != math.inf:
                    data = await receive_with_deadline(conn, size)
                elif raw is not None:
                    # A plain socket, read directly: wait first when the last read
                    # emptied it (no failed recv, no BlockingIOError), else yield once;
                    # a frame in pieces wakes us once (transport.want). The socket's
                    # own recv wrapper costs a failed recv, an exception and an extra
                    # scheduler trip per wakeup.
                    transport.want(reader.wanted)
                    try:
                        if drained:
                            # No scope per wait (the hot path): a deadline set while
                            # it waits rides on the read scope (Conn.set_deadline)
                            # and is taken off it when data comes.
                            conn._reader_idle = True
                            await wait_readable(raw)
                            conn._reader_idle = False
                            if read_scope.deadline != conn._close_deadline:  # carried one
                                read_scope.deadline = conn._close_deadline
                        else:
                            await trio.lowlevel.checkpoint()
                        data = raw.recv(size)
                    except BlockingIOError:
                        drained = True
                        data = None
                        continue
                    except (OSError, ValueError) as exc:  # ValueError: closed under us
                        raise translate_socket_error(exc) from None
                    drained = len(data) < size
                else:
                    try:
                        conn._reader_idle = True  # as above
                        data = await receive(size)
                        conn._reader_idle = False
                        if read_scope.deadline != conn._close_deadline:  # carried one
                            read_scope.deadline = conn._close_deadline
                    except OSError as exc:
                        raise translate_socket_error(exc) from None
                if not data:
                    raise ConnectionClosedError(
                        "the peer closed the stream without a close frame")
    except (ProtocolError, HandlerError, WebSocketTimeoutError, ConnectionClosed) as exc:
        # In the reader's own task, past the read scope: record it, nothing to cancel
        # (a cancel() formats the task's repr: 4% of a failing handshake's cost).
        if lifecycle.fail(exc):
            conn._transition("failing: %s", exc)
        return lifecycle.failure or exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        lifecycle.transport_broken(ConnectionClosedError(f"transport failed: {exc!r}"))
        assert lifecycle.failure is not None
        return lifecycle.failure
    # Only the read scope's own cancellation gets here: its deadline passed, the
    # closing one or a read deadline it carried while the reader waited (a wait
    # ended by the cancellation leaves _reader_idle set).
    if lifecycle.failure is None:
        if conn._reader_idle and conn._read_deadline < conn._close_deadline:
            conn._fail_soon(read_deadline_passed())
        else:
            conn._fail_soon(WebSocketTimeoutError(
                f"no close frame from the peer within {conn._config.close_timeout}s"))
    assert lifecycle.failure is not None
    return lifecycle.failure


async def handle_read(conn: Conn, data: bytes | bytearray,
                      events: Iterator[Any] | None = None) -> CloseReceived | None:
    """Hand the events of one read to the handler, in order; the close, if any
    (``events``: the rest of a read a streamed message's handler made, ``_loan``).

    Sequential handlers run in this task: what they write is corked and leaves in
    one piece before the next read (see FrameWriter).
    """
    handler = conn._handler
    writer = conn._writer
    parallel = conn._parallel
    trace = conn._trace
    writer.cork_task = None if parallel else conn._reader_task
    try:
        event: Any  # dispatched on its exact type: cheaper than isinstance chains
        for event in conn._reader.receive(data) if events is None else events:
            if trace:
                conn._log("< %r", event)
            kind = type(event)
            if kind is Message:
                if parallel is not None:
                    assert conn._nursery is not None
                    await parallel.start(event, conn._nursery)
                else:
                    await callback(conn, handler.on_message, conn, event)
            elif kind is StreamData:
                stream = conn._stream_in
                assert stream is not None
                if stream._push(event.data):  # a coroutine only when it must wait
                    await stream._room()
            elif kind is Ping:
                await callback(conn, handler.on_ping, conn, event.payload)
            elif kind is Pong:
                if conn._pong_seen is not None:
                    conn._pong_seen.set()
                if conn._pings:
                    answered(conn, event.payload)
                await callback(conn, handler.on_pong, conn, event.payload)
            elif kind is StreamWhole:
                await whole_stream(conn, event.opcode, event.data)
            elif kind is StreamStart:
                await start_stream(conn, event.opcode)
            elif kind is StreamEnd:
                await end_stream(conn, event.data)
            else:
                assert isinstance(event, CloseReceived)
                conn._lifecycle.remote_close(event.code, event.reason)
                conn._transition("the peer closes with %s", event.code)
                return event
    finally:
        writer.cork_task = None
    if writer.has_unsent:
        hand_over(conn)  # the flush may wait for the peer
        await writer.flush()
    return None


def read_deadline_passed() -> WebSocketTimeoutError:
    return WebSocketTimeoutError("read deadline passed without data from the peer")


async def receive_with_deadline(conn: Conn, size: int) -> bytes | bytearray:
    with trio.CancelScope(deadline=conn._read_deadline) as scope:
        conn._receive_scope = scope
        try:
            return await conn._transport.receive_some(size)
        finally:
            conn._receive_scope = None
    raise read_deadline_passed()


async def callback(conn: Conn, method: Callable[..., Coroutine[Any, Any, None]],
                   *args: Any) -> None:
    """Await a handler callback; an exception is logged and becomes a HandlerError.

    In the reader's task (corking on) it is run by hand: most handlers (an echo, a
    corked write) finish without blocking and cost no wrapper; one that blocks first
    hands its corked frames to a flush task (see ``_stepping``).
    """
    try:
        if conn._writer.cork_task is None:
            await method(*args)
        else:
            # Run it by hand: most handlers finish without blocking (the common
            # echo, a corked write); one that blocks must not hold corked frames.
            # Against a flush task per read: 1.10x-1.18x (benchmarks/ABLATION.md).
            coro = method(*args)
            try:
                trap = coro.send(None)
            except StopIteration:
                pass
            else:
                await resume_corked(coro, trap, partial(before_handler_blocks, conn))
    except ConnectionClosed:
        if conn._lifecycle.broken or not conn._lifecycle.closing:
            raise  # our own write failed: a transport problem, not a handler bug
        # We began closing (our close frame is sent or queued) and a handler's write
        # lost that race: not a failure. Keep reading until the peer's close frame,
        # or the close handshake (and the close frame itself) would be cut short.
    except Exception as exc:
        name = getattr(method, "__name__", "callback")
        conn._config.logger.exception("%s raised in %s", name, conn)
        raise HandlerError(f"{name} raised {exc!r}") from exc


def before_handler_blocks(conn: Conn) -> None:
    """A handler in the reader's task is about to block: what it corked goes out, and
    what a streamed message queued goes to its handler (nothing waits on the wait)."""
    conn._writer.flush_soon()
    hand_over(conn)


async def run_in_parallel(conn: Conn, item: Message | MessageStream) -> None:
    """A parallel handler task: ``on_message``, or ``on_stream`` for a stream."""
    if type(item) is MessageStream:
        await call_on_stream(conn, item)
    else:
        await callback(conn, conn._handler.on_message, conn, item)


# -- streamed messages (on_stream) -------------------------------------------------


def hand_over(conn: Conn) -> None:
    """The reader is about to wait: what arrived of a streamed message goes to its
    handler now, the piece being filled included (it may pass STREAM_QUEUE by that
    piece: the next full piece waits for room)."""
    stream = conn._stream_in
    if stream is not None:
        piece = conn._reader.take_piece()
        if piece:
            stream._push(piece)
        stream._hand_over()


async def whole_stream(conn: Conn, opcode: Opcode, data: bytes) -> None:
    """A message that arrived whole, for ``on_stream``: a finished stream, its handler
    run as ``on_message`` would be (in this task, or a parallel one). Its iteration
    never waits for the reader, so no task of its own is needed: a task per message
    cost 2.2x the CPU of ``on_message`` for small messages."""
    stream = MessageStream._whole(opcode, data)
    if conn._parallel is not None:
        assert conn._nursery is not None
        await conn._parallel.start(stream, conn._nursery)
        return
    await call_on_stream(conn, stream)


async def start_stream(conn: Conn, opcode: Opcode) -> None:
    """A message begins for ``on_stream``: its handler starts now, in a task of its
    own (the reader keeps reading the message's frames and hands them over)."""
    stream = conn._stream_in = MessageStream(opcode)
    assert conn._nursery is not None
    if conn._parallel is not None:
        await conn._parallel.start(stream, conn._nursery)
    else:
        conn._nursery.start_soon(run_stream, conn, stream)


async def run_stream(conn: Conn, stream: MessageStream) -> None:
    """``on_stream`` in a task of its own: its failure fails the connection."""
    try:
        await call_on_stream(conn, stream)
    except HandlerError as exc:
        conn._fail_soon(exc)
    except ConnectionClosed:
        pass  # the connection is ending; listen() reports why


async def call_on_stream(conn: Conn, stream: MessageStream) -> None:
    """``on_stream`` over ``stream``; once it returned (or raised) the rest of the
    message is read but not kept, and ``stream.done`` is set."""
    try:
        await callback(conn, conn._handler.on_stream, conn, stream)
    finally:
        stream._abandon()


async def end_stream(conn: Conn, last: bytes) -> None:
    """The message is complete. A sequential handler must finish with it before
    the next message is read (in parallel the limiter is the bound)."""
    stream = conn._stream_in
    assert stream is not None
    if last:
        await stream._put(last)
    stream._finish()
    conn._stream_in = None
    if conn._parallel is None:
        await stream.done.wait()


def fail_stream(conn: Conn) -> None:
    """The connection ends in the middle of a streamed message: its reader's
    iteration raises (how it ended is the cause)."""
    stream = conn._stream_in
    if stream is None:
        return
    piece = conn._reader.take_piece()  # what arrived is read before the error
    if piece:
        stream._push(piece)
    failure = conn._lifecycle.failure
    if failure is not None:
        code = failure.close_code
        error: ConnectionClosed = ConnectionClosedError(
            f"the connection failed in the middle of a message: {failure}",
            code if code is not None else CloseCode.ABNORMAL)
        error.__cause__ = failure
    else:
        error = conn._lifecycle.closed_error()
    stream._fail(error)


async def let_stream_finish(conn: Conn) -> None:
    """An on_stream reading a message that will never end (its iteration raises)
    gets half of close_timeout to return."""
    if conn._stream_in is not None:
        with trio.move_on_after(conn._config.close_timeout / 2):
            await conn._stream_in.done.wait()
