"""The inbound half of RFC 6455: bytes in, messages and control events out.

``FrameReader`` is a pure state machine (no I/O): the connection feeds it whatever
the transport delivered and iterates the events it can produce so far. It enforces
every framing rule of section 5 and raises ``ProtocolError`` (carrying the close code)
at the first violation, as early as the bytes allow:

* oversized messages are refused from the frame header, before their payload is
  buffered (compressed ones while inflating);
* text is validated as it arrives, so invalid UTF-8 fails the connection without
  waiting for the end of the frame or message;
* payloads are consumed as they arrive, so a 16 MiB frame never sits twice in memory
  and reassembly of many small fragments stays linear.

The common case, a whole unfragmented frame already in the read buffer, takes a
short path that creates no state besides the message itself.

Streaming mode (``stream_messages=True``, for handlers with ``on_stream``) yields a
message as ``StreamStart``, ``StreamData``... ``StreamEnd`` as its bytes arrive
instead of one ``Message`` (one ``StreamWhole`` when it is all in one read): the same
checks run piece by piece, and a piece is at most ``STREAM_PIECE`` bytes (inflated, or
gathered across reads: ``STREAM_GATHER``), so memory stays bounded however large the
message is.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Union

from ._errors import MessageTooLargeError, ProtocolError
from ._frames import (
    MAX_CONTROL_PAYLOAD,
    RSV_BITS,
    CloseReceived,
    Ping,
    Pong,
    StreamData,
    StreamEnd,
    StreamStart,
    StreamWhole,
)
from ._lifecycle import parse_close_payload
from ._mask import apply_mask, key_at, new_payload, scan_frames, unmask_into
from ._types import Message, Opcode
from ._utf8 import Utf8Validator, decode_text

if TYPE_CHECKING:
    from ._extension import MessageDecoder

Event = Union[Message, Ping, Pong, CloseReceived, StreamStart, StreamData, StreamEnd,
              StreamWhole]

#: The largest piece of a streamed message: what a compressed chunk inflates to at
#: once (memory per streaming connection, with the queue of _streams.STREAM_QUEUE).
STREAM_PIECE = 256 * 1024

#: With the compiled speedups, uncompressed bytes of a streamed message are unmasked
#: into pieces of this size across reads, not one piece per read (64 KiB): a piece
#: goes to ``on_stream`` when full, when its frame ends, or when the connection is
#: about to wait (``take_piece``). Fewer, larger pieces cost the handler fewer calls
#: and wakeups: 0.95x the server CPU of a piece per read, 1.04x-1.07x the throughput
#: (benchmarks/stream_memory.py); 256 KiB pieces measured the same as these.
STREAM_GATHER = 128 * 1024

#: From this size on, a message that is one frame arriving in pieces is unmasked
#: straight into its final bytes (compiled speedups): one copy instead of a copy per
#: piece and a join (the join was a fifth of the CPU of 256 KiB echoes).
DIRECT_FROM = 64 * 1024

_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY


def _take(view: bytes | bytearray, start: int, length: int, key: bytes | None,
          offset: int) -> bytes:
    """``view[start:start + length]`` as bytes, unmasked with ``key`` if given.

    Unmasking reads through a memoryview, so the masked bytes are copied once (by the
    unmasking itself) instead of sliced first. The view is released before returning:
    ``view`` may be a bytearray that is resized next.
    """
    if key is None:
        return bytes(view[start:start + length])
    with memoryview(view) as whole:
        return apply_mask(whole[start:start + length], key, offset)


class FrameReader:
    """Parses frames, reassembles messages and checks them.

    ``expect_masked`` is True on the server (clients must mask) and False on the
    client (servers must not). ``extension_rsv`` is the reserved bits the negotiated
    extension owns and ``decoder`` its decoder (see ``_extension``): a message whose
    first frame carries those bits goes through the decoder; any other reserved bit
    fails the connection. After a close frame has been received, or after an error,
    further input is ignored.
    """

    __slots__ = (
        "_buf", "_check_text", "_decoder", "_direct", "_done", "_expect_masked",
        "_extension_rsv",
        "_frame_fin", "_frame_left", "_frame_offset", "_in_frame", "_mask_key", "_max",
        "_msg_encoded", "_msg_opcode", "_msg_parts", "_msg_size", "_piece", "_piece_fill",
        "_piece_key", "_streaming", "_validator", "close_seen",
    )

    def __init__(
        self,
        *,
        expect_masked: bool,
        max_content_length: int,
        check_text: bool = True,
        extension_rsv: int = 0,
        decoder: MessageDecoder | None = None,
        stream_messages: bool = False,
    ) -> None:
        if bool(extension_rsv) != (decoder is not None) or extension_rsv & ~RSV_BITS:
            raise ValueError("an extension's reserved bits and its decoder go together")
        self._expect_masked = expect_masked
        self._max = max_content_length
        self._check_text = check_text
        self._extension_rsv = extension_rsv
        self._decoder = decoder
        self._streaming = stream_messages
        self._buf = bytearray()
        self._done = False
        #: The peer's close frame arrived, valid or not: it will send nothing more.
        self.close_seen = False
        # the data frame whose payload is being consumed
        self._in_frame = False
        self._frame_fin = False
        self._frame_left = 0
        self._frame_offset = 0
        self._mask_key: bytes | None = None
        # the message being reassembled (None: between messages)
        self._msg_opcode: Opcode | None = None
        self._msg_encoded = False
        self._msg_parts: list[bytes] = []
        self._msg_size = 0
        self._validator: Utf8Validator | None = None
        # the message's final bytes, filled piece by piece (see DIRECT_FROM), or None
        self._direct: bytes | None = None
        # streaming: the piece being filled (see STREAM_GATHER), how much of it is, and the
        # mask key turned to where it starts in its frame
        self._piece: bytes | None = None
        self._piece_fill = 0
        self._piece_key: bytes | None = None

    @property
    def wanted(self) -> int:
        """Bytes still to come for the data frame in progress that nothing checks piece
        by piece (0: between frames, or a frame whose pieces must be seen as they come).

        The connection sets the socket's receive low-water mark from it, so the rest
        of a frame that arrives in pieces wakes the reader once. Text (UTF-8 is checked
        as it arrives: invalid bytes fail the connection without waiting for the rest,
        Autobahn 6.4.3/6.4.4), compressed messages (inflated as they arrive) and
        streamed ones (``on_stream`` reads what arrived, and its peer may wait for an
        answer before it sends more) are not held back: 0 for them.
        """
        if (self._in_frame and self._validator is None and not self._msg_encoded
                and not self._streaming):
            return self._frame_left
        return 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed by a frame."""
        return len(self._buf)

    def receive(self, data: bytes | bytearray) -> Iterator[Event]:
        """Feed ``data`` and yield every event it completes, in wire order."""
        if self._done:
            return
        if self._buf:
            self._buf += data
            view: bytes | bytearray = self._buf
        else:
            view = data
        try:
            pos = yield from self._parse(view)
        except ProtocolError:
            self._done = True
            self._buf = bytearray()
            raise
        if self._done:
            self._buf = bytearray()
        elif view is self._buf:
            del self._buf[:pos]
        elif pos < len(view):
            self._buf = bytearray(view[pos:])

    def _parse(self, view: bytes | bytearray) -> Generator[Event, None, int]:
        """Generator over ``view``; returns how many bytes it consumed.

        One long loop on purpose: it is the hot path of every connection, and keeping
        the header parsing, the checks and the short path for whole messages inline
        (locals, no calls per frame) is most of the reader's speed.
        """
        pos = 0
        end = len(view)
        streaming = self._streaming
        scan = scan_frames
        whole = StreamWhole if streaming else Message
        while True:
            if not self._in_frame:
                if scan is not None and self._msg_opcode is None:
                    # Compiled short path (_speedups): the whole unfragmented frames
                    # here in one pass; it stops at any other frame, handled below.
                    messages, pos = scan(view, pos, self._expect_masked, self._max,
                                         self._check_text, whole, _TEXT, _BINARY)
                    for message in messages:
                        yield message
                avail = end - pos
                if avail < 2:
                    return pos
                b0 = view[pos]
                b1 = view[pos + 1]
                length = b1 & 0x7F
                header_len = 2
                if length == 126:
                    if avail < 4:
                        return pos
                    (length,) = _unpack_short(view, pos + 2)
                    header_len = 4
                elif length == 127:
                    if avail < 10:
                        return pos
                    (length,) = _unpack_long(view, pos + 2)
                    header_len = 10
                    if length >> 63:
                        raise ProtocolError("64-bit payload length has its top bit set")
                masked = bool(b1 & 0x80)
                if masked:
                    header_len += 4
                if avail < header_len:
                    return pos
                if masked != self._expect_masked:
                    raise ProtocolError(
                        "client frame is not masked" if self._expect_masked
                        else "server frame is masked"
                    )
                rsv = b0 & RSV_BITS
                if rsv & ~self._extension_rsv:
                    raise ProtocolError(f"reserved bits {rsv >> 4:#05b} set without an "
                                        "extension that owns them")
                opcode = b0 & 0x0F
                fin = bool(b0 & 0x80)
                key = bytes(view[pos + header_len - 4:pos + header_len]) if masked else None

                if opcode >= 0x8:
                    if opcode == 0x8:
                        self.close_seen = True  # the peer's last word, even if invalid
                    if opcode > 0xA:
                        raise ProtocolError(f"unknown control opcode {opcode:#x}")
                    if not fin:
                        raise ProtocolError("fragmented control frame")
                    if length > MAX_CONTROL_PAYLOAD:
                        raise ProtocolError(f"control frame payload of {length} bytes")
                    if rsv:
                        raise ProtocolError("reserved bit set on a control frame")
                    if avail < header_len + length:
                        return pos
                    start = pos + header_len
                    payload = bytes(view[start:start + length])
                    if key is not None:
                        payload = apply_mask(payload, key)
                    pos = start + length
                    yield self._control_event(opcode, payload)
                    if self._done:
                        return end
                    continue

                if opcode == 0x0:
                    if self._msg_opcode is None:
                        raise ProtocolError("continuation frame with no message to continue")
                    if rsv:
                        # A per-message extension marks a message's first frame only.
                        raise ProtocolError("reserved bit set on a continuation frame")
                    encoded = self._msg_encoded
                elif opcode == 0x1 or opcode == 0x2:
                    if self._msg_opcode is not None:
                        raise ProtocolError("new data frame inside a fragmented message")
                    encoded = bool(rsv)  # the extension's bits: the decoder's job
                else:
                    raise ProtocolError(f"unknown data opcode {opcode:#x}")

                if not encoded and self._msg_size + length > self._max:
                    raise MessageTooLargeError(
                        f"message of more than {self._max} bytes "
                        f"(frame of {length} after {self._msg_size})"
                    )

                start = pos + header_len
                if opcode and fin and not encoded and avail >= header_len + length:
                    # Short path: a whole unfragmented message is already here
                    # (1.07x-1.39x in scenarios a-c, benchmarks/ABLATION.md).
                    payload = _take(view, start, length, key, 0)
                    pos = start + length
                    if opcode == 0x1:
                        text = decode_text(payload) if self._check_text else None
                        if streaming:
                            yield StreamWhole(_TEXT, payload)
                        else:
                            yield Message(_TEXT, payload, text)
                    elif streaming:
                        yield StreamWhole(_BINARY, payload)
                    else:
                        yield Message(_BINARY, payload)
                    continue

                if opcode:
                    self._start_message(Opcode(opcode), encoded)
                    if streaming:
                        yield StreamStart(Opcode(opcode))
                    elif (fin and not encoded and length >= DIRECT_FROM
                          and new_payload is not None):
                        self._direct = new_payload(length)
                self._in_frame = True
                self._frame_fin = fin
                self._frame_left = length
                self._frame_offset = 0
                self._mask_key = key
                pos = start

            take = min(self._frame_left, end - pos)
            direct = self._direct
            if take and streaming and not self._msg_encoded and new_payload is not None:
                stop = pos + take
                while pos < stop:
                    pos, full = self._fill_piece(view, pos, stop - pos)
                    if full is not None:
                        yield StreamData(full)
            elif take and direct is not None:
                assert unmask_into is not None
                at = self._frame_offset
                unmask_into(direct, at, view, pos, take, self._mask_key)
                pos += take
                self._frame_offset = self._msg_size = at + take
                self._frame_left -= take
                if self._validator is not None:
                    with memoryview(direct) as filled:
                        self._validator.feed(filled[at:at + take])
            elif take:
                chunk = _take(view, pos, take, self._mask_key, self._frame_offset)
                pos += take
                self._frame_offset += take
                self._frame_left -= take
                if not streaming:
                    self._add_payload(chunk)
                elif self._msg_encoded:
                    for piece in self._inflated(chunk):
                        yield StreamData(piece)
                else:
                    yield StreamData(self._checked(chunk))
            if self._frame_left:
                return pos
            self._in_frame = False
            if self._frame_fin:
                if streaming:
                    yield from self._finish_stream()
                else:
                    yield self._finish_message()

    def _fill_piece(self, view: bytes | bytearray, pos: int,
                    take: int) -> tuple[int, bytes | None]:
        """Streaming, uncompressed, compiled: unmask up to ``take`` bytes of the frame
        into the piece being filled (see STREAM_GATHER); returns the new pos, and the
        piece if that filled it. A plain call, not a generator: it runs once per read."""
        assert new_payload is not None and unmask_into is not None
        piece = self._piece
        if piece is None:
            piece = self._piece = new_payload(min(self._frame_left, STREAM_GATHER))
            self._piece_fill = 0
            key = self._mask_key
            self._piece_key = key_at(key, self._frame_offset) if key else key
        at = self._piece_fill
        size = len(piece)
        n = min(take, size - at)
        unmask_into(piece, at, view, pos, n, self._piece_key)
        if self._validator is not None:
            with memoryview(piece) as filled:
                self._validator.feed(filled[at:at + n])
        self._piece_fill = at + n
        self._msg_size += n
        self._frame_offset += n
        self._frame_left -= n
        if at + n < size:
            return pos + n, None
        self._piece = None  # full (a piece never outlasts its frame)
        return pos + n, piece

    def take_piece(self) -> bytes:
        """Streaming: the bytes unmasked into the piece in progress, taken now (the
        connection is about to wait, so they must not wait for more); b"" if none."""
        piece = self._piece
        if piece is None or not self._piece_fill:
            return b""
        self._piece = None
        return piece[:self._piece_fill]

    def _control_event(self, opcode: int, payload: bytes) -> Ping | Pong | CloseReceived:
        if opcode == 0x9:
            return Ping(payload)
        if opcode == 0xA:
            return Pong(payload)
        self.close_seen = True  # even an invalid close frame is the peer's last word
        code, reason = parse_close_payload(payload)
        self._done = True
        return CloseReceived(code, reason)

    def _start_message(self, opcode: Opcode, encoded: bool) -> None:
        self._msg_opcode = opcode
        self._msg_encoded = encoded
        self._msg_parts = []
        self._msg_size = 0
        if opcode == _TEXT and self._check_text:
            self._validator = Utf8Validator()

    def _add_payload(self, chunk: bytes) -> None:
        if self._msg_encoded:
            assert self._decoder is not None
            chunk = self._decoder.feed(chunk)
        # Uncompressed, the size was checked from the frame header already: the check
        # in _checked is one comparison that never fails.
        self._msg_parts.append(self._checked(chunk))

    def _inflated(self, chunk: bytes) -> Iterator[bytes]:
        """Streaming: the checked pieces a compressed chunk inflates to (none empty)."""
        assert self._decoder is not None
        for piece in self._decoder.feed_pieces(chunk, STREAM_PIECE):
            yield self._checked(piece)

    def _checked(self, piece: bytes) -> bytes:
        """Count ``piece`` against max_content_length and check its UTF-8."""
        if self._msg_size + len(piece) > self._max:
            raise MessageTooLargeError(f"message inflates past {self._max} bytes")
        self._msg_size += len(piece)
        if self._validator is not None:
            self._validator.feed(piece)
        return piece

    def _finish_stream(self) -> Iterator[StreamData | StreamEnd]:
        """Streaming: the decoder's tail, the final UTF-8 check, then the end."""
        last = b""
        if self._msg_encoded:
            assert self._decoder is not None
            for piece in self._decoder.finish_pieces(STREAM_PIECE):
                if last:
                    yield StreamData(last)
                last = self._checked(piece)
        if self._validator is not None:
            self._validator.feed(b"", final=True)
            self._validator = None
        self._msg_opcode = None
        self._msg_encoded = False
        self._msg_size = 0
        yield StreamEnd(last)

    def _finish_message(self) -> Message:
        if self._msg_encoded:
            assert self._decoder is not None
            tail = self._decoder.finish()
            if tail:
                self._msg_parts.append(self._checked(tail))
        if self._validator is not None:
            self._validator.feed(b"", final=True)
            self._validator = None
        assert self._msg_opcode is not None
        parts = self._msg_parts
        if self._direct is not None:
            message = Message(self._msg_opcode, self._direct)
            self._direct = None
        else:
            message = Message(self._msg_opcode,
                              parts[0] if len(parts) == 1 else b"".join(parts))
        self._msg_opcode = None
        self._msg_encoded = False
        self._msg_parts = []
        self._msg_size = 0
        return message
