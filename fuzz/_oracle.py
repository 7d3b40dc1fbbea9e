"""A reference model of the inbound side of RFC 6455 / RFC 7692, for differential fuzzing.

Deliberately simple and written from the RFCs rather than from ``_reader.py``: whole
frames only (framing by the independent parser of ``tests/helpers.py``), each rule
checked in the order the RFC lists it, no short paths, no incremental buffers. Where
the reader may legitimately stop at a different rule than this model (a compressed
message that is both too large and corrupt: which one shows first depends on how
much zlib inflates before it meets the corruption), the outcome lists every
acceptable close code.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import cast

from helpers import parse_frame

# RFC 6455 7.4.1 and the IANA registry: codes an endpoint may send.
_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}

PROTOCOL, INVALID_DATA, TOO_BIG = 1002, 1007, 1009

Event = tuple[object, ...]


@dataclass
class Outcome:
    """What a stream means: its events, then why the model stopped reading.

    ``stopped`` is "error" (``codes``: the acceptable close codes), "close" (a close
    frame ended the stream), "end" (every byte consumed) or "incomplete" (the stream
    ends inside a frame: ``leftover`` bytes of it; ``partial_remaining`` is how many
    payload bytes the frame still lacks when its header is complete, else None).
    ``compressed`` says whether the stop point lies inside a compressed message.
    """

    events: list[Event] = field(default_factory=list)
    stopped: str = "end"
    codes: frozenset[int] = frozenset()
    leftover: int = 0
    partial_remaining: int | None = None
    partial_is_data: bool = False
    compressed: bool = False


class _Stop(Exception):
    def __init__(self, *codes: int) -> None:
        self.codes = frozenset(codes)


def utf8_prefix_ok(data: bytes) -> bool:
    """True when ``data`` is valid UTF-8 or can still become it by appending bytes.

    Decodes, and when the first error lies in the last three bytes, tries every way to
    complete that character (its second byte over the continuation range, the rest
    0x80): valid UTF-8 needs nothing more, so this is exact.
    """
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        start = exc.start
    tail = data[start:]
    if len(tail) > 3:
        return False
    for extra in range(1, 4):
        for second in range(0x80, 0xC0):
            try:
                (tail + bytes([second]) + b"\x80" * (extra - 1)).decode("utf-8")
                return True
            except UnicodeDecodeError:
                pass
    return False


def _close_event(payload: bytes) -> Event:
    if not payload:
        return ("close", 1005, b"")
    if len(payload) == 1:
        raise _Stop(PROTOCOL)
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _CLOSE_CODES and not 3000 <= code <= 4999:
        raise _Stop(PROTOCOL)
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _Stop(INVALID_DATA) from None
    return ("close", code, payload[2:])


def _header_size(buf: memoryview) -> tuple[int, int] | None:
    """(header length, declared payload length) of the frame ``buf`` starts, if known."""
    if len(buf) < 2:
        return None
    size = 2 + {126: 2, 127: 8}.get(buf[1] & 0x7F, 0) + (4 if buf[1] & 0x80 else 0)
    if len(buf) < size:
        return None
    n = buf[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", buf[2:4])[0]
    elif n == 127:
        n = struct.unpack("!Q", buf[2:10])[0]
    return size, n


class _Inflate:
    """One direction's inflater: RFC 7692 7.2.2, context takeover or not."""

    def __init__(self, bits: int, no_takeover: bool) -> None:
        # The library inflates with at least 9 bits (a documented tolerance of old
        # zlib senders that agreed to 8): the model follows that decision.
        self.wbits = -max(bits, 9)
        self.no_takeover = no_takeover
        self.z = zlib.decompressobj(self.wbits)
        self.after_end = b""

    def feed(self, data: bytes) -> bytes:
        if self.z.eof:
            self.after_end += data
            self._check_after_end()
            return b""
        try:
            out = self.z.decompress(data)
        except zlib.error:
            raise _Stop(INVALID_DATA, TOO_BIG) from None
        if self.z.eof:
            self.after_end += self.z.unused_data
            self._check_after_end()
        return out

    def _check_after_end(self) -> None:
        # RFC 7692 7.2.3.3: only one 0x00 may follow a final block.
        if self.after_end not in (b"", b"\x00"):
            raise _Stop(INVALID_DATA, TOO_BIG)

    def end_message(self) -> bytes:
        out = b"" if self.z.eof else self.feed(b"\x00\x00\xff\xff")
        if self.z.eof or self.no_takeover:
            self.z = zlib.decompressobj(self.wbits)
            self.after_end = b""
        return out


def _check_size_and_text(data: bytes, max_size: int, text: bool) -> None:
    if len(data) > max_size:
        raise _Stop(TOO_BIG)
    if text and not utf8_prefix_ok(data):
        raise _Stop(INVALID_DATA)


def reference(
    stream: bytes,
    *,
    server: bool,
    max_size: int,
    check_text: bool,
    inflate_bits: int | None = None,
    inflate_no_takeover: bool = False,
) -> Outcome:
    """The meaning of ``stream`` for a server (``server``) or client endpoint.

    ``inflate_bits`` is the window of the peer's compressor when permessage-deflate
    was negotiated (None: it was not).
    """
    out = Outcome()
    inflater = None if inflate_bits is None else _Inflate(inflate_bits, inflate_no_takeover)
    view = memoryview(stream)
    pos = 0
    msg_opcode: int | None = None
    msg_compressed = False
    msg_data = b""
    while pos < len(view):
        # a view, not a copy per frame (the parser only indexes and slices it)
        parsed = parse_frame(cast(bytes, view[pos:]))
        if parsed is None:
            out.stopped = "incomplete"
            out.leftover = len(view) - pos
            header = _header_size(view[pos:])
            opcode = view[pos] & 0x0F
            out.partial_is_data = opcode < 8
            if header is not None and out.partial_is_data:
                out.partial_remaining = header[1] - (len(view) - pos - header[0])
            out.compressed = msg_compressed or (opcode in (1, 2) and bool(view[pos] & 0x40))
            return out
        frame, used = parsed
        pos += used
        compressed_frame = msg_compressed or (
            frame.opcode in (1, 2) and bool(frame.rsv & 4) and msg_opcode is None)
        try:
            # RFC 6455 5.1: clients mask, servers do not.
            if frame.masked != server:
                raise _Stop(PROTOCOL)
            # 5.2: RSV2/RSV3 mean nothing here; RSV1 only on a first data frame with
            # permessage-deflate (RFC 7692 6.1).
            if frame.rsv & 3:
                raise _Stop(PROTOCOL)
            if frame.opcode in (0x8, 0x9, 0xA):
                if frame.rsv & 4 or not frame.fin or len(frame.payload) > 125:
                    raise _Stop(PROTOCOL)
                if frame.opcode == 0x8:
                    out.events.append(_close_event(frame.payload))
                    out.stopped = "close"
                    return out
                out.events.append(("ping" if frame.opcode == 0x9 else "pong", frame.payload))
                continue
            if frame.opcode == 0x0:
                if msg_opcode is None or frame.rsv & 4:
                    raise _Stop(PROTOCOL)
            elif frame.opcode in (0x1, 0x2):
                if msg_opcode is not None:
                    raise _Stop(PROTOCOL)
                if frame.rsv & 4 and inflater is None:
                    raise _Stop(PROTOCOL)
                msg_opcode, msg_compressed, msg_data = frame.opcode, bool(frame.rsv & 4), b""
            else:
                raise _Stop(PROTOCOL)
            # Every check as early as the bytes allow: after the frame's payload, and
            # again after the end of a compressed message (the flush tail may inflate).
            text = msg_opcode == 0x1 and check_text
            if msg_compressed:
                assert inflater is not None
                msg_data += inflater.feed(frame.payload)
            else:
                msg_data += frame.payload
            _check_size_and_text(msg_data, max_size, text)
            if frame.fin and msg_compressed:
                assert inflater is not None
                msg_data += inflater.end_message()
                _check_size_and_text(msg_data, max_size, text)
            if frame.fin:
                if msg_opcode == 0x1 and check_text:
                    try:
                        msg_data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Stop(INVALID_DATA) from None
                out.events.append(("message", msg_opcode, msg_data))
                msg_opcode, msg_compressed, msg_data = None, False, b""
        except _Stop as stop:
            out.stopped = "error"
            out.codes = stop.codes
            out.compressed = compressed_frame
            return out
    return out
