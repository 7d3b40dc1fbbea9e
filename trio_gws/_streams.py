"""Large messages, streamed: ``MessageStream`` (receive) and ``MessageWriter`` (send).

Receiving. A handler that overrides ``on_stream`` gets each data message as a
``MessageStream`` as soon as its first frame arrives, and reads it piece by piece
while the reader goes on receiving. The reader queues at most STREAM_QUEUE bytes of
pieces for the handler, so a message costs that and a piece, not the message;
a consumer that does not keep up stops the reader, and the peer with it. The
consumer is woken when WAKE_AT bytes wait or when the reader is about to wait for the
network, so what arrived never waits for more, and a fast peer's pieces move several
at a time.

When the handler waits for its next piece as the reader comes to read a plain
socket, the reader lends it the reads instead (``_loan``): the handler's task reads
its pieces itself, with no queue hand-over and no wakeup.

Sending. ``conn.message_writer(opcode)`` sends one message as a first frame and
continuation frames, each written as it comes; ``conn.write_file`` feeds one from a
file or an iterable. A message can never be resumed: leaving the block with an
exception (or a cancellation) once a fragment went out fails the connection (1011).
"""

from __future__ import annotations

import inspect
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, Union

import trio

from ._errors import ConnectionClosed, WebSocketError
from ._types import CloseCode, Opcode, Payload, as_bytes, data_opcode

if TYPE_CHECKING:
    from ._conn import Conn
    from ._loan import ReadLoan

class AsyncReadable(Protocol):
    """A file with an async ``read`` (``trio.open_file``, ``trio.wrap_file``)."""

    def read(self, size: int, /) -> Awaitable[bytes]: ...


#: What ``write_file`` streams from.
Source = Union[str, "os.PathLike[str]", IO[bytes], AsyncReadable, Iterable[bytes],
               AsyncIterable[bytes]]


class StreamAbortedError(WebSocketError):
    """A streamed message was left half sent: the connection fails with 1011 (a
    message cannot be resumed). ``__cause__`` is what interrupted it."""

    close_code = CloseCode.INTERNAL_ERROR


#: How many bytes of a streamed message may wait for its handler. The reader goes on
#: reading while less is queued, so the handler takes several pieces per wakeup
#: instead of one hand-over (two scheduler passes) per read.
STREAM_QUEUE = 256 * 1024

#: The consumer is woken once this much is queued, or when the reader is about to
#: wait for the network (``_hand_over``): not for every piece. While the peer sends
#: faster than the handler reads, a wakeup (a scheduler pass for each side) then
#: moves several pieces, and the reader reads on meanwhile until one piece past
#: STREAM_QUEUE. Waking at half the queue took the whole-message path's speed from
#: 0.87x to 0.95x; with pieces gathered across reads (``_reader.STREAM_GATHER``),
#: waking at the full queue moves as fast as 256 KiB pieces woken at half of it,
#: with a smaller worst case (benchmarks/stream_memory.py).
WAKE_AT = STREAM_QUEUE


class MessageStream:
    """One incoming data message, read as it arrives (``EventHandler.on_stream``).

    ``async for chunk in stream`` gives its bytes in pieces (text is checked as UTF-8
    as it arrives, so the pieces of a text message are valid UTF-8 only joined);
    ``await stream.read_all()`` joins the rest. A connection that ends before the
    message did makes the iteration raise ``ConnectionClosed`` (its cause says why).
    Returning from ``on_stream`` early abandons the rest: it is read and checked, but
    not kept.
    """

    __slots__ = ("opcode", "_pieces", "_queued", "_ended", "_failure", "_arrived",
                 "_taken", "_loan", "done")

    def __init__(self, opcode: Opcode) -> None:
        self.opcode = opcode
        # Pieces the reader handed over, at most STREAM_QUEUE bytes (and one piece) of
        # them: the reader waits (``_taken``) past that, the handler (``_arrived``)
        # while there are none.
        self._pieces: deque[bytes] = deque()
        self._queued = 0
        self._ended = False  # the reader handed over the last piece, or failed
        self._failure: ConnectionClosed | None = None
        self._arrived: trio.Event | None = None
        self._taken: trio.Event | None = None
        # the reads, while the reader lends them to this stream's handler (_loan)
        self._loan: ReadLoan | None = None
        self.done = trio.Event()  # on_stream returned: the rest is not kept

    @classmethod
    def _whole(cls, opcode: Opcode, data: bytes) -> MessageStream:
        """A message that arrived whole: every piece queued, the end reached."""
        stream = cls(opcode)
        if data:
            stream._pieces.append(data)
            stream._queued = len(data)
        stream._ended = True
        return stream

    @property
    def is_text(self) -> bool:
        return self.opcode is Opcode.TEXT

    def __repr__(self) -> str:
        return f"<MessageStream {self.opcode.name}>"

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        # A piece already here is taken without a scheduler pass (a cancelled task
        # still gets Cancelled): the pieces of one wakeup go in one go.
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._pieces:
            if self.done.is_set():
                raise RuntimeError("this stream was abandoned: on_stream returned")
            if self._ended:
                if self._failure is not None:
                    raise self._failure from self._failure.__cause__
                raise StopAsyncIteration
            loan = self._loan
            if loan is not None and not loan.pulling:
                await loan.pull()
                continue
            if self._arrived is None:
                self._arrived = trio.Event()
            await self._arrived.wait()
        piece = self._pieces.popleft()
        self._queued -= len(piece)
        self._wake_reader()
        return piece

    async def read_all(self) -> bytes:
        """The rest of the message, joined (at most ``max_content_length`` bytes)."""
        return b"".join([chunk async for chunk in self])

    # -- the connection's side -------------------------------------------------------

    async def _put(self, data: bytes) -> None:
        """Queue a piece; waits while STREAM_QUEUE bytes wait for the consumer."""
        if self._push(data):
            await self._room()

    def _push(self, data: bytes) -> bool:
        """Queue a piece without waiting; True when the reader must then wait for
        room (``_room``). The consumer is woken once WAKE_AT bytes wait, or by
        ``_hand_over`` when the reader is about to wait for the network: not for
        every piece."""
        if self.done.is_set():
            return False  # abandoned: the rest of the message is read but not kept
        self._pieces.append(data)
        self._queued += len(data)
        if self._queued >= WAKE_AT:
            self._wake_consumer()
        return self._queued > STREAM_QUEUE

    async def _room(self) -> None:
        while self._queued > STREAM_QUEUE and not self.done.is_set():
            self._taken = trio.Event()
            await self._taken.wait()

    def _hand_over(self) -> None:
        """The reader is about to wait for the network: what is queued goes now."""
        if self._pieces:
            self._wake_consumer()

    def _finish(self) -> None:
        self._ended = True
        self._wake_consumer()

    def _fail(self, error: ConnectionClosed) -> None:
        """The connection ended before the message did (pieces already handed over
        are still read first)."""
        if self._failure is None:
            self._failure = error
        self._finish()

    def _abandon(self) -> None:
        """on_stream returned: drop what is queued, release a waiting reader."""
        self.done.set()
        self._pieces.clear()
        self._queued = 0
        if self._loan is not None:
            self._loan.give_back()
        self._wake_reader()
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def _wake_reader(self) -> None:
        if self._taken is not None:
            self._taken.set()
            self._taken = None


class MessageWriter:
    """One outgoing message sent in fragments: ``async with conn.message_writer(op)``.

    Other data messages of the connection wait until it is done (call order is kept);
    pings, pongs and a close frame may go between its fragments.
    """

    __slots__ = ("_conn", "opcode", "_started", "_sent", "_finished")

    def __init__(self, conn: Conn, opcode: Opcode | int) -> None:
        self._conn = conn
        self.opcode = data_opcode(opcode)
        self._started = False  # a fragment went out
        self._sent = 0
        self._finished = False

    @property
    def sent(self) -> int:
        """Payload bytes written so far (before compression)."""
        return self._sent

    async def __aenter__(self) -> MessageWriter:
        await self._conn._writer.begin_stream()
        return self

    async def write(self, chunk: Payload) -> None:
        """Send ``chunk`` as the next fragment (an empty chunk sends nothing).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            RuntimeError: the message was already finished.
        """
        if self._finished:
            raise RuntimeError("this message is finished: open another message_writer")
        data = as_bytes(chunk)
        if not data:
            return
        writer = self._conn._writer
        opcode, first = self.opcode, not self._started
        self._started = True
        await writer.write_fragment(
            lambda: writer.encode_fragment(opcode, data, first=first, last=False))
        self._sent += len(data)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        writer = self._conn._writer
        if self._finished:
            return
        self._finished = True
        if exc is None:
            opcode, first = self.opcode, not self._started
            try:
                await writer.write_fragment(
                    lambda: writer.encode_fragment(opcode, b"", first=first, last=True))
            except BaseException as error:
                self._abort(error)
                raise
            writer.end_stream()
            return
        self._abort(exc)

    def _abort(self, exc: BaseException) -> None:
        """Left half way: nothing but control frames may follow the fragments already
        sent, so the data turn is never given back and the connection fails."""
        if not self._started:
            self._conn._writer.end_stream()  # nothing went out: nothing is broken
            return
        if isinstance(exc, ConnectionClosed):
            return  # the connection is closing already: its own way, its own code
        error = StreamAbortedError(f"a streamed message was left half sent: {exc!r}")
        error.__cause__ = exc
        self._conn._fail_soon(error)


async def chunks_of(source: Any, chunk_size: int) -> AsyncIterator[bytes]:
    """The bytes of a path, a binary file (sync or trio's), or an (async) iterable.

    File reads run in a worker thread (``trio.open_file`` / ``trio.wrap_file``), so they
    never block the event loop; a sync iterable is iterated in place.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise TypeError("write_file sends a file or an iterable of bytes; send bytes "
                        "with write_message, or pass [data]")
    if isinstance(source, (str, os.PathLike)):
        async with await trio.open_file(source, "rb") as file:
            while data := await file.read(chunk_size):
                yield data
        return
    read: Any = getattr(source, "read", None)
    if read is not None:
        if not inspect.iscoroutinefunction(read):
            wrapped: Any = trio.wrap_file(source)  # the caller's file, left open
            read = wrapped.read
        while data := await read(chunk_size):
            yield bytes(data)
        return
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
        return
    if isinstance(source, Iterable):
        for item in source:
            yield item
        return
    raise TypeError(f"cannot stream from {type(source).__name__}: give a path, a binary "
                    "file, or an iterable / async iterable of bytes")
