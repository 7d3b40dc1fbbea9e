"""Property-based tests of the protocol core (hypothesis, derandomized: reproducible)."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_gws._lifecycle import build_close_payload, parse_close_payload
from trio_gws._errors import HandshakeError, ProtocolError
from trio_gws._frames import CloseReceived, Ping, Pong, encode_frame
from trio_gws._handshake import parse_request_line, parse_status_line
from trio_gws._http import find_head_end, parse_head
from trio_gws._mask import apply_mask
from trio_gws._reader import FrameReader
from trio_gws._types import Message, Opcode

from helpers import naive_mask

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

MAX = 4096  # small enough for random lengths to cross it


def summarize(event: object) -> tuple[Any, ...]:
    if isinstance(event, Message):
        return ("message", int(event.opcode), event.data)
    if isinstance(event, Ping):
        return ("ping", event.payload)
    if isinstance(event, Pong):
        return ("pong", event.payload)
    assert isinstance(event, CloseReceived), event
    return ("close", event.code, event.reason)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# -- (1) any input: events or ProtocolError, nothing else -----------------------------


@st.composite
def loose_frame(draw: st.DrawFn, expect_masked: bool) -> bytes:
    """A frame with random fields, biased towards plausible ones so that sequences get
    past their first frame: mostly valid, sometimes any kind of invalid."""
    fin = draw(st.sampled_from([0x80, 0x80, 0x00]))
    rsv = draw(st.sampled_from([0] * 12 + [0x40, 0x20, 0x10, 0x70]))
    opcode = draw(st.sampled_from([0, 0, 1, 1, 2, 2, 8, 9, 9, 10, 10] + [3, 7, 0xB, 0xF]))
    masked = draw(st.sampled_from([expect_masked] * 12 + [not expect_masked]))
    payload = draw(st.one_of(
        st.binary(max_size=40),
        st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"\x03\xe8", b"\x03\xe8ok", b"\x03", b"\x0b\xb8", b"\xed\xa0\x80",
                         b"\xf4\x90\x80\x80", b"\xe2\x82"]),
    ))
    length = draw(st.one_of(st.just(len(payload)), st.just(len(payload)),
                            st.integers(0, 2**64 - 1), st.integers(0, 300)))
    form = draw(st.sampled_from(["min", "min", "min", 16, 64]))
    second = 0x80 if masked else 0
    if form == "min" and length < 126:
        head = bytes([fin | rsv | opcode, second | length])
    elif form == 16 or (form == "min" and length < 65536):
        head = bytes([fin | rsv | opcode, second | 126]) + struct.pack("!H", length & 0xFFFF)
    else:
        head = bytes([fin | rsv | opcode, second | 127]) + struct.pack("!Q", length)
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        return head + key + apply_mask(payload, key)
    return head + payload


def wire_bytes(expect_masked: bool) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.lists(loose_frame(expect_masked), max_size=10).map(b"".join),
    )


@FAST
@given(
    data=st.data(),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    masked=st.booleans(),
    check_text=st.booleans(),
)
def test_reader_never_raises_anything_but_protocol_error(
    data: st.DataObject, cuts: list[int], masked: bool, check_text: bool
) -> None:
    wire = data.draw(wire_bytes(masked))
    reader = FrameReader(expect_masked=masked, max_content_length=MAX, check_text=check_text)
    try:
        for chunk in chunked(wire, cuts):
            for event in reader.receive(chunk):
                assert isinstance(event, (Message, Ping, Pong, CloseReceived))
    except ProtocolError as exc:
        assert exc.close_code in (1002, 1007, 1009)
        assert list(reader.receive(b"\x81\x00")) == []  # the reader is finished


@FAST
@given(data=st.data(), cuts=st.lists(st.integers(0, 10_000), max_size=10),
       masked=st.booleans())
def test_reader_chunking_does_not_change_the_outcome(
    data: st.DataObject, cuts: list[int], masked: bool
) -> None:
    wire = data.draw(wire_bytes(masked))

    def run(chunks: list[bytes]) -> tuple[list[tuple[Any, ...]], int | None]:
        reader = FrameReader(expect_masked=masked, max_content_length=MAX)
        events: list[tuple[Any, ...]] = []
        try:
            for chunk in chunks:
                events.extend(summarize(e) for e in reader.receive(chunk))
        except ProtocolError as exc:
            return events, exc.close_code
        return events, None

    whole = run([wire])
    assert run(chunked(wire, cuts)) == whole
    assert run([wire[i:i + 1] for i in range(len(wire))]) == whole


# -- (2) valid frames round-trip ----------------------------------------------------


control_payload = st.binary(max_size=125)
close_reason = st.text(max_size=20).map(lambda s: s.encode("utf-8")).filter(
    lambda b: len(b) <= 123)
close_code = st.one_of(st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                        1011, 1012, 1013, 1014]), st.integers(3000, 4999))


@st.composite
def control(draw: st.DrawFn) -> tuple[list[tuple[int, bytes, bool]], list[tuple[Any, ...]]]:
    opcode = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
    payload = draw(control_payload)
    kind = "ping" if opcode == Opcode.PING else "pong"
    return [(opcode, payload, True)], [(kind, payload)]


@st.composite
def message(draw: st.DrawFn) -> tuple[list[tuple[int, bytes, bool]], list[tuple[Any, ...]]]:
    opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
    if opcode == Opcode.TEXT:
        payload = draw(st.text(max_size=300)).encode("utf-8")
    else:
        payload = draw(st.binary(max_size=300))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=5)))
    bounds = [0, *cuts, len(payload)]
    pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
    frames: list[tuple[int, bytes, bool]] = []
    controls: list[tuple[Any, ...]] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        frames.append((opcode if i == 0 else Opcode.CONTINUATION, piece, last))
        if not last and draw(st.booleans()):
            ctl_frames, ctl_events = draw(control())
            frames += ctl_frames
            controls += ctl_events
    return frames, controls + [("message", int(opcode), payload)]


@FAST
@given(
    items=st.lists(st.one_of(message(), control()), max_size=12),
    close=st.one_of(st.none(), st.just((1005, b"")), st.tuples(close_code, close_reason)),
    masked=st.booleans(),
    cuts=st.lists(st.integers(0, 100_000), max_size=20),
)
def test_valid_frames_round_trip(
    items: list[tuple[list[tuple[int, bytes, bool]], list[tuple[Any, ...]]]],
    close: tuple[int, bytes] | None,
    masked: bool,
    cuts: list[int],
) -> None:
    frames = [f for fs, _ in items for f in fs]
    expected = [e for _, es in items for e in es]
    if close is not None:
        code, reason = close
        frames.append((Opcode.CLOSE, build_close_payload(code, reason), True))
        expected.append(("close", code, reason))
    # a server reads masked frames, a client unmasked ones
    wire = b"".join(encode_frame(op, payload, fin=fin, mask=masked)
                    for op, payload, fin in frames)
    reader = FrameReader(expect_masked=masked, max_content_length=1 << 20)
    events = [summarize(e) for chunk in chunked(wire, cuts) for e in reader.receive(chunk)]
    assert events == expected
    assert reader.buffered == 0
    for event in events:
        if event[0] == "message" and event[1] == Opcode.TEXT:
            event[2].decode("utf-8")


# -- (3) masking ----------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=200), key=st.binary(min_size=4, max_size=4),
       offset=st.integers(0, 2**20), split=st.integers(0, 200))
def test_apply_mask_involution_and_offsets(data: bytes, key: bytes, offset: int,
                                           split: int) -> None:
    masked = apply_mask(data, key, offset)
    assert masked == naive_mask(data, key, offset)
    assert apply_mask(masked, key, offset) == data
    split = min(split, len(data))
    assert apply_mask(data[:split], key, offset) + apply_mask(
        data[split:], key, offset + split) == masked
    assert apply_mask(data, key, offset + 4) == masked  # the key repeats every 4 bytes


# -- (4) HTTP heads: HandshakeError or a result, nothing else --------------------------


http_lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"Host: a", b"Upgrade: websocket", b" folded", b"X:\x00",
                         b"Bad Name: x", b"X: \xe9", b"", b"X: a\rb", b"X: a\nb"]),
    ),
    max_size=8,
)


@FAST
@given(st.one_of(
    st.binary(max_size=400),
    http_lines.map(lambda lines: b"\r\n".join(lines) + b"\r\n\r\n"),
))
def test_parse_head_raises_only_handshake_error(head: bytes) -> None:
    try:
        start, headers = parse_head(head, 5)
    except HandshakeError as exc:
        assert exc.status in (400, 431)
        return
    assert isinstance(start, str)
    assert len(headers) <= 5
    for name, value in headers:
        assert name and ":" not in name and "\r" not in value and "\n" not in value
    try:
        parse_request_line(start)
    except HandshakeError:
        pass
    try:
        parse_status_line(start)
    except HandshakeError:
        pass


@FAST
@given(st.text(max_size=40))
def test_start_line_parsers_raise_only_handshake_error(line: str) -> None:
    for parse in (parse_request_line, parse_status_line):
        try:
            parse(line)
        except HandshakeError:
            pass


@FAST
@given(st.binary(max_size=200), st.integers(1, 60), st.integers(1, 60))
def test_find_head_end_any_bytes(buf: bytes, max_line: int, max_head: int) -> None:
    try:
        end = find_head_end(buf, max_line, max_head)
    except HandshakeError as exc:
        assert exc.status in (414, 431)
        return
    assert end == -1 or buf[end - 4:end] == b"\r\n\r\n"


@FAST
@given(line_len=st.integers(1, 40), header_lens=st.lists(st.integers(0, 20), max_size=4),
       max_line=st.integers(1, 40), max_head=st.integers(4, 80))
def test_find_head_end_prefix_consistency(line_len: int, header_lens: list[int],
                                          max_line: int, max_head: int) -> None:
    """A head is accepted whole iff no prefix of it was rejected (limits are exact)."""
    head = b"G" * line_len + b"\r\n" + b"".join(
        b"X:" + b"v" * n + b"\r\n" for n in header_lens) + b"\r\n"
    try:
        whole = find_head_end(head, max_line, max_head)
    except HandshakeError as exc:
        status: int | None = exc.status
    else:
        assert whole == len(head)
        status = None
    for cut in range(len(head)):
        try:
            assert find_head_end(head[:cut], max_line, max_head) == -1
        except HandshakeError as exc:
            # a prefix may only be refused when the whole head is refused too
            assert status == exc.status, (cut, exc.status, status)
            break


@FAST
@given(code=close_code, reason=close_reason)
def test_close_payload_round_trip(code: int, reason: bytes) -> None:
    assert parse_close_payload(build_close_payload(code, reason)) == (code, reason)
