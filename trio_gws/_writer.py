"""The write side of a connection: one ordered stream of frames.

Every frame, whether written directly (``write_message``) or queued
(``write_nowait``, broadcasts), goes out in call order and never interleaves with
another:

* direct writes take a FIFO lock (``WriteLock``), so concurrent writers keep call
  order;
* queued writes are drained by a task that exists only while the queue has work
  and holds the lock while it drains;
* while the queue has work, direct writes join the queue (and wait for their turn)
  instead of overtaking it.

Messages are encoded, and compressed, at the moment they are sent, under the lock, so
the compressor sees messages in wire order (which context takeover depends on).
The queue is bounded by ``write_queue_size``: a peer that does not read cannot make
the server's memory grow without bound.

The writer owns no lifecycle flag: it asks the connection's ``Lifecycle`` whether a
frame may be written (at the call) and sent (when its turn comes), and reports a
broken transport or an overflowing queue to the connection, which decides.

Streamed messages. ``begin_stream`` takes a data message's turn like any data write
(call order); until ``end_stream``, its fragments (``write_fragment``) are the only
data frames that go: other data writes wait in the queue, whose drain pauses, while
control frames (ping, pong, close) take the lock directly and may go between the
fragments, as RFC 6455 allows. A close frame ends the stream: later fragments fail.

Corking. Frames that the reader's own task writes while it handles the events of one
read (an echo, a pong) are gathered in ``_unsent`` and leave in one ``send_all`` when
the reader is done with that read, instead of one ``send_all`` (one system call and
one trip through Trio's scheduler) each. Nothing waits behind a corked frame: whoever
takes the lock next sends ``_unsent`` before its own frame, the reader flushes before
it reads again, and a handler that is about to block hands them to a flush task first
(``flush_soon``; see ``Conn``), so a corked frame never waits on anything but the
code that runs without yielding right after it. Corking only happens while the lock is
free and the queue empty, which keeps call order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, Union

import trio

from ._errors import ConnectionClosedError, WebSocketError, WriteQueueFullError
from ._frames import encode_frame, frame_header
from ._lifecycle import Lifecycle
from ._lock import WriteLock
from ._mask import Buffer, apply_mask, new_mask_key
from ._transport import Transport
from ._types import Opcode

if TYPE_CHECKING:
    from ._extension import MessageEncoder

#: Encodes a frame when its turn comes (under the lock), or a frame encoded earlier.
Encoder = Union[Callable[[], Union[bytes, "list[Buffer]"]], bytes]

#: Below this size a frame's pieces are joined before sending (one system call is
#: cheaper); from it on, a payload is sent from a view of it rather than copied whole.
_JOIN_BELOW = 64 * 1024

#: The payload bytes that travel with the header of a frame sent in pieces.
_SPLIT_HEAD = 16 * 1024

#: Corked frames are sent once they reach this many bytes: one read's worth of echoes
#: (reads are at most 64 KiB by default) goes out in one send.
_CORK_LIMIT = 256 * 1024


def _BEGIN_STREAM() -> bytes:
    """The queued item of a ``begin_stream`` that had to wait for its turn: when the
    drain reaches it, the stream starts and the drain pauses until ``end_stream``
    (never called: it is a marker)."""
    raise AssertionError("the stream marker is not a frame")

def _ignore(error: WebSocketError) -> None:
    """The callback of a writer whose connection has ended."""


#: The queue of a connection that has nothing queued (most of them): shared, never
#: appended to; ``_enqueue`` swaps in a real deque (0.59 KiB per idle connection).
_NO_QUEUE: deque[_Queued] = deque(maxlen=0)


class _Queued:
    """One queued frame; ``waiter`` is set when a direct writer awaits its outcome;
    ``size`` is what a ``write_nowait`` message counts against the byte bound."""

    __slots__ = ("encoder", "waiter", "error", "abandoned", "size")

    def __init__(self, encoder: Encoder, waiter: trio.Event | None, size: int = 0) -> None:
        self.encoder = encoder
        self.waiter = waiter
        self.size = size
        self.error: BaseException | None = None
        self.abandoned = False


class FrameWriter:
    """Serialises a connection's frames onto its stream."""

    __slots__ = (
        "_draining", "_encoder", "_flush_scheduled", "_lifecycle", "_lock", "_mask",
        "_nursery", "_on_broken", "_on_overflow", "_queue", "_queue_size", "_queued_async",
        "_queued_bytes", "_byte_limit", "_stream_active", "_transport",
        "_unsent", "_unsent_count", "_unsent_size", "cork_task", "dropped",
    )

    def __init__(
        self,
        transport: Transport,
        lifecycle: Lifecycle,
        *,
        mask: bool,
        encoder: MessageEncoder | None,
        queue_size: int,
        byte_limit: int,
        on_broken: Callable[[ConnectionClosedError], None],
        on_overflow: Callable[[WriteQueueFullError], None],
    ) -> None:
        self._transport = transport
        self._lifecycle = lifecycle
        self._mask = mask
        self._encoder = encoder
        self._queue_size = queue_size
        # Told when the transport breaks or the queue overflows: the connection decides.
        self._on_broken = on_broken
        self._on_overflow = on_overflow
        self._lock = WriteLock()
        self._queue = _NO_QUEUE
        self._queued_async = 0
        self._queued_bytes = 0  # payload bytes of the queued write_nowait messages
        self._stream_active = False  # a streamed message holds the data turn
        self._byte_limit = byte_limit
        self._draining = False
        self._nursery: trio.Nursery | None = None
        # The task whose writes may be corked (the reader, while it handles a read).
        self.cork_task: trio.lowlevel.Task | None = None
        self._unsent: list[Buffer] = []
        self._unsent_size = 0
        # Messages corked and not known to be sent: _send resets it only once they
        # went out, so a failure leaves them counted for fail_queue().
        self._unsent_count = 0
        self._flush_scheduled = False
        self.dropped = 0

    # -- encoding --------------------------------------------------------------------

    def encode_message(self, opcode: Opcode, data: Buffer) -> bytes | list[Buffer]:
        """The frame of a message: bytes, or two pieces for a large one.

        A large frame is not copied whole to put its header in front: the header goes
        with the payload's first bytes, the rest is sent from a view of the payload
        (copying 256 KiB costs more than a second ``send``).
        """
        rsv = 0
        if self._encoder is not None:
            data, rsv = self._encoder.encode(data)
        return self._frame(opcode, data, fin=True, rsv=rsv)

    def _frame(self, kind: int, data: Buffer, *, fin: bool, rsv: int) -> bytes | list[Buffer]:
        """A frame, masked on the client side: bytes, or two pieces when it is large."""
        if self._mask:
            key = new_mask_key()
            header = frame_header(kind, len(data), fin=fin, rsv=rsv, mask_key=key)
            data = apply_mask(data, key)
        else:
            header = frame_header(kind, len(data), fin=fin, rsv=rsv)
        if len(data) < _JOIN_BELOW:
            return header + data
        # Header + 16 KiB, then a view of the rest: no whole-frame copy (1.28x-1.33x
        # for 256 KiB messages, benchmarks/ABLATION.md).
        view = memoryview(data)
        return [header + view[:_SPLIT_HEAD], view[_SPLIT_HEAD:]]

    def _encode_vectored(self, opcode: Opcode, parts: Sequence[Buffer]) -> bytes | list[Buffer]:
        """A message from several buffers: a list of pieces to send back to back."""
        if self._encoder is not None or self._mask:
            # Encoding and masking both need the payload in one piece anyway.
            return self.encode_message(opcode, b"".join(parts))
        total = sum(len(part) for part in parts)
        header = frame_header(opcode, total)
        if total < _JOIN_BELOW:
            return b"".join([header, *parts])
        return [header, *parts]

    # -- state -----------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages queued by ``write_nowait`` and not sent yet."""
        return self._queued_async

    def attach(self, nursery: trio.Nursery | None) -> None:
        """Where drain tasks run; set while ``listen()`` runs, None after."""
        self._nursery = nursery
        if nursery is not None and self._queue and not self._draining:
            self._spawn_drain()

    # -- writing ---------------------------------------------------------------------

    async def write_message(self, opcode: Opcode, data: Buffer) -> None:
        self._lifecycle.check_writable()
        await self._write(lambda: self.encode_message(opcode, data))

    async def write_vectored(self, opcode: Opcode, parts: Sequence[Buffer]) -> None:
        self._lifecycle.check_writable()
        await self._write(lambda: self._encode_vectored(opcode, parts))

    async def write_control(self, opcode: Opcode, payload: Buffer) -> None:
        self._lifecycle.check_writable()
        await self._write(lambda: encode_frame(opcode, payload, mask=self._mask),
                          control=True)

    async def write_close(self, payload: bytes) -> None:
        """Send our close frame behind everything written before it.

        The connection decided that it goes (the lifecycle committed to it); when its
        turn comes the lifecycle records it as sent, and no frame may follow it.
        """
        lifecycle = self._lifecycle

        def encode() -> bytes:
            if not lifecycle.sending_close():
                return b""  # one went out already: this one was its duplicate
            return encode_frame(Opcode.CLOSE, payload, mask=self._mask)

        await self._write(encode, is_close=True, control=True)

    # -- streamed messages -----------------------------------------------------------

    def encode_fragment(self, opcode: Opcode, data: Buffer, *, first: bool, last: bool
                        ) -> bytes | list[Buffer]:
        """One frame of a message sent in fragments (the extension encodes each)."""
        rsv = 0
        if self._encoder is not None:
            data, rsv = self._encoder.encode_fragment(data, first=first, last=last)
        return self._frame(opcode if first else Opcode.CONTINUATION, data, fin=last, rsv=rsv)

    async def begin_stream(self) -> None:
        """Wait for the data turn of a streamed message (after every data write made
        before), then hold it until ``end_stream``."""
        self._lifecycle.check_writable()
        if self._draining or self._queue or self._stream_active:
            await self._wait_in_queue(_BEGIN_STREAM)  # the drain starts it
        else:
            self._stream_active = True

    async def write_fragment(self, encoder: Callable[[], bytes | list[Buffer]]) -> None:
        """Send a fragment of the stream that holds the data turn."""
        assert self._stream_active
        self._lifecycle.check_writable()
        async with self._lock:
            self._lifecycle.check_sendable()
            await self._send(encoder())

    def end_stream(self) -> None:
        """The streamed message is over (sent, or abandoned): the queue moves again."""
        self._stream_active = False
        if self._queue and not self._draining and self._nursery is not None:
            self._spawn_drain()

    @property
    def has_unsent(self) -> bool:
        """True while corked frames wait for ``flush``."""
        return bool(self._unsent)

    async def flush(self) -> None:
        """Send the corked frames now (unless the transport already failed)."""
        if self._unsent:
            async with self._lock:
                if self._unsent and not self._lifecycle.broken:
                    await self._send(b"")

    def flush_soon(self) -> None:
        """The corking task is about to block: a helper task sends the corked frames."""
        if self._unsent and not self._flush_scheduled and self._nursery is not None:
            self._flush_scheduled = True
            self._nursery.start_soon(self._flush_task)

    async def _flush_task(self) -> None:
        try:
            await self.flush()
        except WebSocketError:
            pass  # _on_broken has failed the connection already
        finally:
            self._flush_scheduled = False

    async def wait_flushed(self) -> None:
        """Wait until every frame written or queued so far was handed to the stream.

        Closing the stream under a frame still being sent would cut it short (our own
        close frame included).
        """
        while True:
            async with self._lock:
                if not self._queue and not self._draining:
                    if self._unsent and not self._lifecycle.broken:
                        await self._send(b"")
                    return
            await trio.sleep(0)  # let a drain task that has not started take the lock

    def write_nowait(self, encoder: Encoder, size: int) -> None:
        """Queue a frame of ``size`` payload bytes without waiting; raises
        WriteQueueFullError at either bound.

        The byte bound counts the queued messages and the corked frames together; a
        message is refused when it would take them past it, unless nothing is queued
        (so one message larger than the bound can still be sent).
        """
        self._lifecycle.check_writable()
        waiting = self._queued_bytes + self._unsent_size
        if self._queued_async >= self._queue_size or (
                self._queued_async and waiting + size > self._byte_limit):
            full = (f"{self._queue_size} messages" if self._queued_async >= self._queue_size
                    else f"{waiting} bytes waiting, {size} more past {self._byte_limit}")
            dropped = self._discard_async()
            error = WriteQueueFullError(
                f"write queue full ({full}): the peer does not keep up; "
                f"{dropped} queued message(s) dropped, connection failed with 1008"
            )
            # The connection fails it at once: later writes are refused now, not once
            # the reader notices (they would be queued, then dropped with nobody told).
            self._on_overflow(error)
            raise error
        self._queued_async += 1
        self._queued_bytes += size
        self._enqueue(_Queued(encoder, None, size))
        if not self._draining and not self._stream_active and self._nursery is not None:
            self._spawn_drain()

    async def _write(self, encoder: Callable[[], bytes | list[Buffer]],
                     is_close: bool = False, control: bool = False) -> None:
        """Join the queue while it has work (order); else send now, or cork when the
        corking task writes (only while nobody holds the lock or waits in line, which
        keeps call order). While a streamed message holds the data turn, control
        frames go between its fragments and data frames wait for its end."""
        await trio.lowlevel.checkpoint_if_cancelled()  # before anything is encoded
        if self._stream_active:
            if control:
                async with self._lock:
                    self._check_sendable(is_close)
                    await self._send(encoder())
                return
            await self._wait_in_queue(encoder)
            return
        if self._draining or self._queue:
            await self._wait_in_queue(encoder)
            return
        if self._lock.locked():
            async with self._lock:
                self._check_sendable(is_close)
                await self._send(encoder())
            return
        self._check_sendable(is_close)
        frame = encoder()
        # Corking: one send per read instead of one per frame (benchmarks/ABLATION.md:
        # 2.97x in scenario b, 3.29x in c).
        if (self.cork_task is not None and isinstance(frame, bytes)
                and self._unsent_size + len(frame) < _CORK_LIMIT
                and trio.lowlevel.current_task() is self.cork_task):
            self._unsent.append(frame)
            self._unsent_size += len(frame)
            self._unsent_count += 1
            return
        # The lock is free and nothing yielded since the caller's cancellation check
        # (top of _write): acquiring cannot raise, so the encoded frame (and the
        # compressor state it advanced) is never dropped.
        async with self._lock:
            await self._send(frame)  # any corked frames first

    def _check_sendable(self, is_close: bool) -> None:
        # Our close frame checks itself when encoded (a duplicate sends nothing).
        if is_close:
            if self._lifecycle.broken:
                raise self._lifecycle.closed_error()
        else:
            self._lifecycle.check_sendable()

    async def _wait_in_queue(self, encoder: Encoder) -> None:
        item = _Queued(encoder, trio.Event())
        assert item.waiter is not None
        self._enqueue(item)
        if not self._draining and not self._stream_active and self._nursery is not None:
            self._spawn_drain()
        try:
            await item.waiter.wait()
        except BaseException:
            item.abandoned = True  # cancelled before its turn: never sent
            raise
        if item.error is not None:
            raise item.error

    def _enqueue(self, item: _Queued) -> None:
        if self._queue is _NO_QUEUE:
            self._queue = deque()
        self._queue.append(item)

    def _spawn_drain(self) -> None:
        assert self._nursery is not None
        self._draining = True
        self._nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        """Send queued frames in order; runs only while there is work."""
        try:
            async with self._lock:
                lifecycle = self._lifecycle
                # Once broken, stop: fail_queue() counts and reports what is left.
                while self._queue and not lifecycle.broken and not self._stream_active:
                    item = self._queue.popleft()
                    if item.waiter is None:
                        self._queued_async -= 1
                        self._queued_bytes -= item.size
                    elif item.abandoned:
                        continue
                    if item.encoder is _BEGIN_STREAM:
                        assert item.waiter is not None
                        self._stream_active = True  # its turn: the drain pauses here
                        item.waiter.set()
                        continue
                    try:
                        encoder = item.encoder
                        await self._send(encoder if isinstance(encoder, bytes) else encoder())
                    except WebSocketError as exc:
                        if item.waiter is None:
                            self.dropped += 1
                        item.error = exc
                    except BaseException:
                        # Cancelled mid-send: its writer must not think it went out.
                        item.error = lifecycle.closed_error()
                        raise
                    finally:
                        if item.waiter is not None:
                            item.waiter.set()
        finally:
            # No respawn here: the drain only stops early when listen()'s nursery is
            # cancelled, where a new drain would be cancelled too (and respawn again,
            # forever, while another task holds the lock). What is left is failed by
            # fail_queue() when the connection ends.
            self._draining = False
            if not self._queue:
                self._queue = _NO_QUEUE

    def _discard_async(self) -> int:
        """Drop the queued ``write_nowait`` messages (not direct writers waiting)."""
        kept = deque(item for item in self._queue if item.waiter is not None) or _NO_QUEUE
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        self._queued_async -= dropped
        self._queued_bytes = 0
        self.dropped += dropped
        return dropped

    def forget_connection(self) -> None:
        """The connection ended: drop the callbacks into it (they close a reference
        cycle). A send that fails after this only raises."""
        self._on_broken = _ignore
        self._on_overflow = _ignore

    def fail_queue(self) -> int:
        """The connection ended: fail every waiting writer; return how many queued
        (or corked) messages were dropped by this call."""
        dropped = self._unsent_count
        self._unsent_count = 0
        self._unsent = []
        self._unsent_size = 0
        while self._queue:
            item = self._queue.popleft()
            if item.waiter is None:
                self._queued_async -= 1
                self._queued_bytes -= item.size
                dropped += 1
            else:
                item.error = self._lifecycle.closed_error()
                item.waiter.set()
        self._queue = _NO_QUEUE
        self.dropped += dropped
        return dropped

    def _fail_send(self, exc: BaseException) -> NoReturn:
        error = ConnectionClosedError(f"transport failed while writing: {exc!r}")
        self._on_broken(error)
        raise error from exc

    async def _send(self, frame: bytes | list[Buffer]) -> None:
        """Send ``frame`` under the lock, after the corked frames."""
        if self._unsent:
            pending = self._unsent
            self._unsent = []
            self._unsent_size = 0
            if isinstance(frame, list):
                frame = [b"".join(pending), *frame]
            elif len(frame) < _JOIN_BELOW:
                pending.append(frame)
                frame = b"".join(pending)
            else:
                frame = [b"".join(pending), frame]
            await self._send(frame)
            self._unsent_count = 0  # sent: none of them can be lost any more
            return
        send_all = self._transport.send_all
        try:
            if isinstance(frame, list):
                for piece in frame:
                    await send_all(piece)
            elif frame:
                await send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail_send(exc)
        except trio.Cancelled:
            # Part of the frame may be on the wire: the stream can't be used again.
            self._on_broken(ConnectionClosedError("a write was cancelled mid-frame"))
            raise
