"""The closing phase and the end of ``Conn.listen()``: the I/O half of closing.

What may be sent and when is decided by the connection's ``Lifecycle``
(``_lifecycle``, the pure half); this module does the waiting: it answers the peer's
close or sends ours with the failure's code, lets parallel and streaming handlers
finish what they were doing (bounded), waits for the peer to close the transport as
RFC 6455 7.1.1 asks, closes the stream, and tells the handler exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._dispatch import Outcome, fail_stream, let_stream_finish
from ._errors import ConnectionClosed, HandlerError, WebSocketError
from ._frames import CloseReceived
from ._transport import close_forcefully, half_close

if TYPE_CHECKING:
    from ._conn import Conn

#: A server that cannot half-close (TLS) closes once the peer has been quiet this
#: long after answering our close frame (see wait_for_eof).
_QUIET = 0.1


async def closing_phase(conn: Conn, outcome: Outcome) -> None:
    """Answer or send the close frame, then let the peer close first (bounded)."""
    fail_stream(conn)
    conn._arm_close_deadline()
    lifecycle = conn._lifecycle
    writer = conn._writer
    with trio.CancelScope(deadline=conn._close_deadline):
        try:
            if isinstance(outcome, CloseReceived):
                await let_handlers_finish(conn)
                reply = lifecycle.reply_payload()
                if reply is not None:
                    conn._transition("we answer the peer's close")
                    await writer.write_close(reply)
                await writer.wait_flushed()  # e.g. our own close, still being sent
                if not conn._is_server:
                    await wait_for_eof(conn)
                return
            if not lifecycle.owes_failure_close(outcome):
                # No close frame to send (the transport broke...): an on_stream
                # told so by its iteration still gets to clean up before on_error.
                await let_stream_finish(conn)
                return
            await let_handlers_finish(conn)
            payload = lifecycle.failure_payload(outcome)
            if payload is None:
                return  # the transport broke meanwhile, or a handler closed
            conn._transition("we fail with %s", outcome.close_code)
            await writer.write_close(payload)
            await wait_for_eof(conn)
        except ConnectionClosed:
            pass  # the peer is gone: nothing more to say


async def let_handlers_finish(conn: Conn) -> None:
    """Parallel handlers (and an on_stream still reading) answer before our close
    frame; they get half of close_timeout, so the close frame still fits in it."""
    if conn._parallel is not None:
        await conn._parallel.finish(conn._config.close_timeout / 2)
    else:
        await let_stream_finish(conn)


async def wait_for_eof(conn: Conn) -> None:
    """After our close frame: let the peer close the TCP connection, or close it
    first as a server should (RFC 6455 7.1.1) without leaving unread input behind
    (closing with unread input makes the kernel answer with a reset, which can
    destroy our close frame before the peer reads it).

    A server half-closes (FIN) and drains until the peer's EOF. Where it cannot
    half-close (TLS), it drains until the peer answered (at once if the peer's
    close frame, valid or not, already came) and then went quiet for ``_QUIET``
    seconds, and closes itself. A client drains until the server closes.
    """
    transport = conn._transport
    size = conn._config.read_buffer_size
    try:
        if not conn._is_server or await half_close(transport.stream):
            while await transport.receive_some(size):
                pass
            return
        # Its close frame (even an invalid one) was the peer's last word: nothing
        # more will come, and it waits for us to close.
        if conn._reader.close_seen or not await transport.receive_some(size):
            return
        while True:
            with trio.move_on_after(_QUIET):
                if not await transport.receive_some(size):
                    return
                continue
            return  # quiet: the peer said what it had to say
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def end(conn: Conn, outcome: Outcome, *, shielded: bool = False) -> None:
    """Close the stream and tell the handler how the connection ended, once."""
    if conn._lifecycle.ended:
        return
    conn._lifecycle.end()
    conn._transition("ended")
    conn._run_end_callbacks()
    # Shielded: under an outer cancellation aclose would raise Cancelled again
    # and skip the report.
    await close_forcefully(conn._transport.stream)
    dropped = conn._writer.fail_queue()
    for ping in (conn._pings or {}).values():
        ping.done.set()  # no pong will come: ping() raises ConnectionClosed
    if dropped:
        # Never silently: the log says it, and so does the error on_error gets.
        conn._config.logger.warning("%s ended with %d queued message(s) unsent",
                                    conn, dropped)
        if isinstance(outcome, WebSocketError) and len(outcome.args) == 1:
            outcome.args = (f"{outcome.args[0]} ({dropped} queued message(s) not sent)",)
    try:
        await notify(conn, outcome, shielded)
    finally:
        if conn._ended is not None:
            conn._ended.set()
        # The writer's and the parallel handlers' callbacks are bound methods of the
        # connection: a reference cycle. Broken here, an ended connection and its
        # buffers are freed by reference counting at once, not at the next full
        # garbage collection (rare on a busy server with many long-lived objects).
        conn._writer.forget_connection()
        conn._parallel = None


async def notify(conn: Conn, outcome: Outcome, shielded: bool) -> None:
    with trio.CancelScope(shield=shielded) as scope:
        if shielded:
            scope.deadline = trio.current_time() + conn._config.close_timeout
        try:
            if isinstance(outcome, CloseReceived):
                await conn._handler.on_close(conn, outcome.code, outcome.reason)
            else:
                error: Exception = outcome
                if isinstance(outcome, HandlerError) and isinstance(
                    outcome.__cause__, Exception
                ):
                    error = outcome.__cause__
                await conn._handler.on_error(conn, error)
        except Exception:
            conn._config.logger.exception("on_close/on_error raised in %s", conn)
