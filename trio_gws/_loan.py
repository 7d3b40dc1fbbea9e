"""Lending the reads to ``on_stream``: a streamed message read in its handler's task.

A sequential connection reads in one task and runs ``on_message`` in it. An
``on_stream`` handler runs in a task of its own (it iterates while its message
arrives), so pieces the reader queued for it cost a wakeup of each task per
queueful. Instead, when the handler waits for its next piece and the reader is about
to read, the reader lends it the reads: the handler's task receives and parses, keeps
the pieces of its message, and gives the reads back at anything else (a control
frame, the message's end, an error, a read deadline), which the reader then handles
in its own task, in wire order as before. A lent read costs what the reader's read
costs, and no wakeup: the streamed path's server CPU fell from 1.03x-1.04x of the
whole-message path's to 0.98x-1.00x (benchmarks/RESULTS-stream.md).

A handler cancelled while it waits in a lent read gives the reads back, and whatever
awaits what only the reader delivers (a ping's pong, the answer to our close frame)
or sets a read deadline calls them back first (``recall_reads``), so nothing waits
on a handler that holds the reads and does something else. Only plain sockets are
lent (the reads are the reader's raw ones), on sequential connections with no read
deadline. The reader waits for the reads in its
read scope; if that scope ends (a failure, the close timeout) the loan is revoked and
a handler waiting on the socket for it is woken before anything else reads the
socket: it waits on a duplicate of the socket, so ``notify_closing`` wakes only it,
never a writer waiting on the socket itself.
"""

from __future__ import annotations

import itertools
import math
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import checkpoint, notify_closing, wait_readable

from ._errors import ConnectionClosedError
from ._frames import StreamData
from ._streams import STREAM_QUEUE
from ._transport import translate_socket_error

if TYPE_CHECKING:
    from ._conn import Conn
    from ._streams import MessageStream


class ReadLoan:
    """The reads of one connection, lent to the handler of its streamed message
    until it gives them back (``give_back``) or the reader revokes them."""

    __slots__ = ("_conn", "_stream", "drained", "_back", "events", "error", "_over",
                 "_waiter", "_rest", "pulling")

    def __init__(self, conn: Conn, stream: MessageStream, drained: bool) -> None:
        self._conn = conn
        self._stream = stream
        #: The last read emptied the socket: the next one waits for it first.
        self.drained = drained
        self._back = trio.Event()
        #: What the reader handles first once the reads are back: the rest of a
        #: read's events, or an error to raise.
        self.events: Iterator[Any] | None = None
        self.error: BaseException | None = None
        # given back or revoked: a pull still under way must not touch the socket
        self._over = False
        # the duplicate of the socket the handler waits on, while the reads are lent
        self._waiter: socket.socket | None = None
        # the rest of a read's events, left when the queue was full (a compressed
        # read may inflate to far more than the queue holds)
        self._rest: Iterator[Any] | None = None
        #: A task is in ``pull``: another one iterating the same stream waits for it.
        self.pulling = False

    async def pull(self) -> None:
        """One read for the stream, in its handler's task: the pieces of its message
        are queued on it, at most STREAM_QUEUE bytes (and a piece) of them; anything
        else gives the reads back. A cancellation loses nothing (a read is done whole
        or not at all) and gives the reads back. One coroutine, no helper awaited on
        the way of a read that does not wait: it runs for every read."""
        if self._rest is not None:
            self._queue(self._rest)
            return
        stream = self._stream
        conn = self._conn
        reader = conn._reader
        raw = conn._transport.raw
        # (No read deadline to keep: setting one calls the reads back, lendable.)
        self.pulling = True  # only while it awaits: another iterating task waits
        try:
            if self.drained:
                piece = reader.take_piece()
                if piece:  # what arrived does not wait for more
                    stream._pieces.append(piece)
                    stream._queued += len(piece)
                    # While the handler takes it, more is likely to arrive: the next
                    # pull reads before it waits.
                    self.drained = False
                    return
                if not await self._wait_readable(raw):
                    return
            else:
                try:
                    await checkpoint()
                except BaseException:
                    self.give_back()
                    raise
                if self._over:
                    return
        finally:
            self.pulling = False
        size = conn._config.read_buffer_size
        try:
            data = raw.recv(size)
        except BlockingIOError:
            self.drained = True
            return
        except (OSError, ValueError) as exc:  # ValueError: closed under us
            self.give_back(error=translate_socket_error(exc))
            return
        if not data:
            # (An error, not the reads alone: the handler waits for more, so the
            # reader would lend them again at once.)
            self.give_back(error=ConnectionClosedError(
                "the peer closed the stream without a close frame"))
            return
        self.drained = len(data) < size
        self._queue(reader.receive(data))

    def _queue(self, events: Iterator[Any]) -> None:
        """Queue the stream's pieces among ``events``; stop at a full queue (the rest
        waits on the loan) or at any other event (it goes back with the reads)."""
        conn = self._conn
        stream = self._stream
        pieces = stream._pieces
        self._rest = None
        try:
            for event in events:
                if type(event) is not StreamData:
                    self.give_back(itertools.chain((event,), events))
                    break
                if conn._trace:
                    conn._log("< %r", event)
                pieces.append(event.data)
                stream._queued += len(event.data)
                if stream._queued > STREAM_QUEUE:
                    self._rest = events
                    break
        except Exception as exc:  # noqa: BLE001 - raised again in the reader's task
            self.give_back(error=exc)
            return
        if stream._arrived is not None:
            stream._wake_consumer()  # another task iterating the same stream

    async def _wait_readable(self, raw: socket.socket) -> bool:
        """Wait until the socket has data; False if the reads went back meanwhile."""
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = raw.dup()  # one per loan, closed when it ends
        try:
            await wait_readable(waiter)
        except trio.ClosedResourceError as exc:
            self.give_back(error=exc)  # unless the loan ended, which woke us
            return False
        except BaseException:
            self.give_back()  # the handler is cancelled: the reader reads meanwhile
            raise
        return not self._over

    def give_back(self, events: Iterator[Any] | None = None,
                  error: BaseException | None = None) -> None:
        """The reads go back to the reader, with what it must handle first (by
        default what is left of the last read)."""
        if self._over:
            return
        self.events = events if events is not None else self._rest
        self._rest = None
        self.error = error
        self.revoke()
        self._back.set()

    def revoke(self) -> None:
        """The loan ends (given back, or the reader stopped waiting for it): from now
        on the handler does not touch the socket."""
        self._over = True
        if self._stream._loan is self:
            self._stream._loan = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            notify_closing(waiter)  # wakes the handler's wait, and nobody else's
            waiter.close()


def recall_reads(conn: Conn, error: BaseException | None = None) -> None:
    """Reads lent to a handler come back to the reader now.

    Something awaits what only the reader delivers (a pong, the peer's answer to our
    close frame, a read deadline), which must not depend on the handler reading on:
    it may be the one awaiting it, in ``ping()`` or ``aclose()``. With ``error``, the
    socket is about to be closed under the reader: the handler waits on a duplicate
    of the socket, which closing the socket leaves open, so the reader gets the error
    its own wait would have got.
    """
    stream = conn._stream_in
    if stream is not None and stream._loan is not None:
        stream._loan.give_back(error=error)


def lendable(conn: Conn, stream: MessageStream) -> bool:
    """The handler waits for its next piece, on a sequential connection over a plain
    socket with no read deadline: its task can do the reads."""
    return (stream._arrived is not None and conn._parallel is None
            and conn._transport.raw is not None and conn._read_deadline == math.inf)


async def lend_reads(conn: Conn, stream: MessageStream,
                     drained: bool) -> tuple[Iterator[Any] | None, bool]:
    """Lend the reads until the handler gives them back; returns what it left for
    the reader to handle and whether the socket was emptied. An error it met is
    raised here, in the reader's task."""
    loan = ReadLoan(conn, stream, drained)
    stream._loan = loan
    stream._wake_consumer()
    try:
        await loan._back.wait()
    except BaseException:
        loan.revoke()
        raise
    if loan.error is not None:
        raise loan.error
    return loan.events, loan.drained
