"""The inbound state machine (``FrameReader``): bytes in, events or ProtocolError out.

Frames are built by hand here (not with ``encode_frame``) so the reader is checked
against an independent encoder that can also produce every kind of invalid frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import pytest

from trio_gws._errors import InvalidTextError, MessageTooLargeError, ProtocolError
from trio_gws._frames import CloseReceived, Ping, Pong
from trio_gws._reader import FrameReader
from trio_gws._types import Message, Opcode

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
MiB = 1024 * 1024

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


def xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def raw(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
        masked: bool = False, length: int | None = None, form: int | None = None) -> bytes:
    """One frame, built independently of the library.

    ``length`` overrides the declared payload length; ``form`` forces the length
    encoding (7, 16 or 64 bits) to build non-minimal encodings.
    """
    n = len(payload) if length is None else length
    if form is None:
        form = 7 if n < 126 else 16 if n < 65536 else 64
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if form == 7:
        head = bytes([first, mask_bit | n])
    elif form == 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if masked:
        return head + KEY + xor(payload, KEY)
    return head + payload


SIDES = [
    pytest.param(True, id="server"),   # reads masked client frames
    pytest.param(False, id="client"),  # reads unmasked server frames
]


def reader(masked: bool, **kwargs: Any) -> FrameReader:
    kwargs.setdefault("max_content_length", 16 * MiB)
    return FrameReader(expect_masked=masked, **kwargs)


def summarize(event: object) -> tuple[Any, ...]:
    if isinstance(event, Message):
        return ("message", int(event.opcode), event.data)
    if isinstance(event, Ping):
        return ("ping", event.payload)
    if isinstance(event, Pong):
        return ("pong", event.payload)
    assert isinstance(event, CloseReceived), event
    return ("close", event.code, event.reason)


def feed(r: FrameReader, *chunks: bytes | bytearray) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    for chunk in chunks:
        events.extend(summarize(e) for e in r.receive(chunk))
    return events


def feed_all(r: FrameReader, chunks: Iterable[bytes]) -> list[tuple[Any, ...]]:
    return feed(r, *chunks)


# -- single frames ----------------------------------------------------------------


SINGLE = [
    pytest.param(TEXT, b"Hello", ("message", 1, b"Hello"), id="text"),
    pytest.param(TEXT, b"", ("message", 1, b""), id="text-empty"),
    pytest.param(TEXT, "κόσμε€😀".encode(), ("message", 1, "κόσμε€😀".encode()), id="text-utf8"),
    pytest.param(BINARY, b"\x00\xff" * 3, ("message", 2, b"\x00\xff" * 3), id="binary"),
    pytest.param(BINARY, b"", ("message", 2, b""), id="binary-empty"),
    pytest.param(BINARY, b"b" * 125, ("message", 2, b"b" * 125), id="binary-125"),
    pytest.param(BINARY, b"b" * 126, ("message", 2, b"b" * 126), id="binary-126"),
    pytest.param(BINARY, b"b" * 65535, ("message", 2, b"b" * 65535), id="binary-65535"),
    pytest.param(BINARY, b"b" * 65536, ("message", 2, b"b" * 65536), id="binary-65536"),
    pytest.param(PING, b"", ("ping", b""), id="ping-empty"),
    pytest.param(PING, b"p" * 125, ("ping", b"p" * 125), id="ping-125"),
    pytest.param(PONG, b"pong", ("pong", b"pong"), id="pong"),
    pytest.param(CLOSE, b"", ("close", 1005, b""), id="close-empty"),
    pytest.param(CLOSE, b"\x03\xe8", ("close", 1000, b""), id="close-1000"),
    pytest.param(CLOSE, b"\x0f\xa0bye", ("close", 4000, b"bye"), id="close-4000-reason"),
]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(("opcode", "payload", "expected"), SINGLE)
def test_single_frame(masked: bool, opcode: int, payload: bytes,
                      expected: tuple[Any, ...]) -> None:
    r = reader(masked)
    assert feed(r, raw(opcode, payload, masked=masked)) == [expected]
    assert r.buffered == 0


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(("opcode", "payload", "expected"),
                         [p for p in SINGLE if len(p.values[1]) < 1000])  # type: ignore[arg-type]
def test_single_frame_byte_by_byte(masked: bool, opcode: int, payload: bytes,
                                   expected: tuple[Any, ...]) -> None:
    wire = raw(opcode, payload, masked=masked)
    r = reader(masked)
    events = feed_all(r, (wire[i:i + 1] for i in range(len(wire))))
    assert events == [expected]


@pytest.mark.parametrize(
    ("form", "length"),
    [pytest.param(16, 5, id="16bit-for-5"), pytest.param(64, 5, id="64bit-for-5"),
     pytest.param(64, 300, id="64bit-for-300"), pytest.param(16, 0, id="16bit-for-0")],
)
@pytest.mark.parametrize("masked", SIDES)
def test_non_minimal_length_encoding_is_accepted(masked: bool, form: int, length: int) -> None:
    payload = b"n" * length
    assert feed(reader(masked), raw(BINARY, payload, masked=masked, form=form)) == [
        ("message", 2, payload)
    ]


def test_text_message_carries_decoded_text() -> None:
    r = reader(False)
    (event,) = list(r.receive(raw(TEXT, "héllo".encode())))
    assert isinstance(event, Message)
    assert event.opcode is Opcode.TEXT and event.is_text
    assert event.text == "héllo"
    (event,) = list(r.receive(raw(BINARY, b"\x01")))
    assert isinstance(event, Message) and event.opcode is Opcode.BINARY and not event.is_text


def test_several_frames_in_one_chunk() -> None:
    wire = (raw(TEXT, b"a", masked=True) + raw(PING, b"p", masked=True)
            + raw(BINARY, b"b", masked=True) + raw(PONG, b"", masked=True))
    assert feed(reader(True), wire) == [
        ("message", 1, b"a"), ("ping", b"p"), ("message", 2, b"b"), ("pong", b""),
    ]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    "cut",
    [pytest.param(1, id="in-first-byte-pair"), pytest.param(2, id="after-2-byte-header"),
     pytest.param(3, id="inside-16bit-length"), pytest.param(6, id="inside-64bit-or-key"),
     pytest.param(9, id="inside-64bit-length"), pytest.param(12, id="inside-key"),
     pytest.param(20, id="inside-payload")],
)
def test_partial_frames_wait_and_are_buffered(masked: bool, cut: int) -> None:
    payload = b"x" * 70000
    wire = raw(BINARY, payload, masked=masked)
    r = reader(masked)
    assert feed(r, wire[:cut]) == []
    assert feed(r, wire[cut:]) == [("message", 2, payload)]
    assert r.buffered == 0


def test_buffered_counts_unconsumed_header_bytes() -> None:
    r = reader(False)
    assert feed(r, b"\x82\x7e\x01") == []
    assert r.buffered == 3
    assert feed(r, b"\x00" + b"z" * 10) == []
    assert r.buffered == 0  # payload bytes are consumed as they arrive
    assert feed(r, b"z" * 246) == [("message", 2, b"z" * 256)]


def test_bytearray_input_is_copied_not_aliased() -> None:
    wire = bytearray(raw(BINARY, b"abcdef", masked=True) + raw(TEXT, b"xyz", masked=True))
    r = reader(True)
    first = bytearray(wire[:14])  # the whole first frame plus 2 bytes of the second
    assert feed(r, first) == [("message", 2, b"abcdef")]
    first[:] = b"\xff" * len(first)  # the caller reuses its buffer
    assert feed(r, bytes(wire[14:])) == [("message", 1, b"xyz")]


# -- fragmentation ------------------------------------------------------------------


FRAGMENTED = [
    pytest.param(
        [(TEXT, b"Hel", False), (CONT, b"lo", True)],
        [("message", 1, b"Hello")], id="text-2-fragments"),
    pytest.param(
        [(BINARY, b"a", False), (CONT, b"b", False), (CONT, b"c", True)],
        [("message", 2, b"abc")], id="binary-3-fragments"),
    pytest.param(
        [(TEXT, b"", False), (CONT, b"", False), (CONT, b"", True)],
        [("message", 1, b"")], id="all-empty-fragments"),
    pytest.param(
        [(TEXT, b"", False), (CONT, b"abc", True)],
        [("message", 1, b"abc")], id="empty-first-fragment"),
    pytest.param(
        [(TEXT, b"abc", False), (CONT, b"", True)],
        [("message", 1, b"abc")], id="empty-last-fragment"),
    pytest.param(
        [(TEXT, b"fra", False), (PING, b"1", True), (CONT, b"gm", False),
         (PONG, b"2", True), (CONT, b"ent", True)],
        [("ping", b"1"), ("pong", b"2"), ("message", 1, b"fragment")],
        id="controls-between-fragments"),
    pytest.param(
        [(BINARY, b"a", False), (PING, b"", True), (PING, b"", True), (CONT, b"b", True)],
        [("ping", b""), ("ping", b""), ("message", 2, b"ab")], id="two-pings-between"),
    pytest.param(
        [(TEXT, b"a", False), (CLOSE, b"\x03\xe8", True), (CONT, b"b", True)],
        [("close", 1000, b"")], id="close-between-fragments-ends-input"),
    pytest.param(
        [(TEXT, "€".encode()[:1], False), (CONT, "€".encode()[1:], True)],
        [("message", 1, "€".encode())], id="utf8-split-1-2"),
    pytest.param(
        [(TEXT, "€".encode()[:2], False), (CONT, "€".encode()[2:], True)],
        [("message", 1, "€".encode())], id="utf8-split-2-1"),
    pytest.param(
        [(TEXT, b"\xf0", False), (CONT, b"\x9f", False), (CONT, b"\x98", False),
         (CONT, b"\x80", True)],
        [("message", 1, "😀".encode())], id="utf8-4-byte-over-4-fragments"),
    pytest.param(
        [(TEXT, b"\xed", False), (CONT, b"\x9f\xbf", True)],
        [("message", 1, "\ud7ff".encode())], id="utf8-ed-9f-not-surrogate"),
    pytest.param(
        [(BINARY, b"a", False), (CONT, b"b", True), (TEXT, b"c", False), (CONT, b"d", True),
         (TEXT, b"e", True)],
        [("message", 2, b"ab"), ("message", 1, b"cd"), ("message", 1, b"e")],
        id="consecutive-messages"),
]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(("frames", "expected"), FRAGMENTED)
def test_fragmented(masked: bool, frames: list[tuple[int, bytes, bool]],
                    expected: list[tuple[Any, ...]]) -> None:
    wire = b"".join(raw(op, data, fin=fin, masked=masked) for op, data, fin in frames)
    assert feed(reader(masked), wire) == expected
    # frame by frame
    r = reader(masked)
    assert feed_all(r, (raw(op, data, fin=fin, masked=masked) for op, data, fin in frames)) == (
        expected
    )
    # byte by byte
    r = reader(masked)
    assert feed_all(r, (wire[i:i + 1] for i in range(len(wire)))) == expected


def test_fragmented_text_message_text() -> None:
    r = reader(True)
    wire = raw(TEXT, "é".encode()[:1], fin=False, masked=True) + raw(
        CONT, "é".encode()[1:] + b"!", masked=True)
    (event,) = list(r.receive(wire))
    assert isinstance(event, Message) and event.opcode is Opcode.TEXT
    assert event.text == "é!"


def test_control_frame_between_fragments_arrives_before_the_message() -> None:
    r = reader(False)
    assert feed(r, raw(TEXT, b"a", fin=False)) == []
    assert feed(r, raw(PING, b"x")) == [("ping", b"x")]
    assert feed(r, raw(CONT, b"b")) == [("message", 1, b"ab")]


# -- protocol violations --------------------------------------------------------------


def _violations(masked: bool) -> list[Any]:
    def f(*args: Any, **kwargs: Any) -> bytes:
        kwargs.setdefault("masked", masked)
        return raw(*args, **kwargs)

    cases = [
        ("rsv2-text", f(TEXT, b"a", rsv=RSV2), "reserved bits 0b010"),
        ("rsv3-binary", f(BINARY, b"a", rsv=RSV3), "reserved bits 0b001"),
        ("rsv2-rsv3-ping", f(PING, b"", rsv=RSV2 | RSV3), "reserved bits 0b011"),
        ("rsv2-continuation", f(TEXT, b"a", fin=False) + f(CONT, b"b", rsv=RSV2),
         "reserved bits 0b010"),
        ("rsv1-text-no-extension", f(TEXT, b"a", rsv=RSV1), "reserved bits 0b100"),
        ("rsv1-binary-no-extension", f(BINARY, b"a", rsv=RSV1), "reserved bits 0b100"),
        ("rsv1-binary-fragment-no-extension", f(BINARY, b"a", rsv=RSV1, fin=False),
         "reserved bits 0b100"),
        ("rsv1-continuation", f(TEXT, b"a", fin=False) + f(CONT, b"b", rsv=RSV1),
         "reserved bits 0b100"),
        ("rsv1-ping", f(PING, b"", rsv=RSV1), "reserved bits 0b100"),
        ("rsv1-close", f(CLOSE, b"\x03\xe8", rsv=RSV1), "reserved bits 0b100"),
        ("fragmented-ping", f(PING, b"", fin=False), "fragmented control"),
        ("fragmented-pong", f(PONG, b"x", fin=False), "fragmented control"),
        ("fragmented-close", f(CLOSE, b"", fin=False), "fragmented control"),
        ("ping-126", f(PING, b"p" * 126), "126 bytes"),
        ("pong-126", f(PONG, b"p" * 126), "126 bytes"),
        ("close-126", f(CLOSE, b"\x03\xe8" + b"r" * 124), "126 bytes"),
        ("ping-64bit-length", f(PING, b"p" * 200, form=64), "200 bytes"),
        ("continuation-first", f(CONT, b"a"), "no message to continue"),
        ("continuation-nofin-first", f(CONT, b"a", fin=False), "no message to continue"),
        ("continuation-after-message", f(TEXT, b"a") + f(CONT, b"b"), "no message to continue"),
        ("text-inside-text", f(TEXT, b"a", fin=False) + f(TEXT, b"b"), "inside a fragmented"),
        ("binary-inside-text", f(TEXT, b"a", fin=False) + f(BINARY, b"b"), "inside a fragmented"),
        ("text-inside-binary", f(BINARY, b"a", fin=False) + f(CONT, b"b", fin=False)
         + f(TEXT, b"c", fin=False), "inside a fragmented"),
        ("close-1-byte", f(CLOSE, b"\x03"), "1 byte"),
        ("violation-after-good-frames", f(TEXT, b"ok") + f(PING, b"") + f(0x3, b""),
         "unknown data opcode"),
    ]
    for opcode in range(0x3, 0x8):
        cases.append((f"opcode-{opcode:#x}", f(opcode, b"x"), "unknown data opcode"))
        cases.append((f"opcode-{opcode:#x}-nofin", f(opcode, b"", fin=False),
                      "unknown data opcode"))
    for opcode in range(0xB, 0x10):
        cases.append((f"opcode-{opcode:#x}", f(opcode, b"x"), "unknown control opcode"))
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        cases.append((f"close-code-{code}", f(CLOSE, struct.pack("!H", code)),
                      f"invalid close code {code}"))
    return cases


VIOLATIONS = [
    pytest.param(masked, wire, match, id=f"{side}-{name}")
    for masked, side in ((True, "server"), (False, "client"))
    for name, wire, match in _violations(masked)
]


@pytest.mark.parametrize(("masked", "wire", "match"), VIOLATIONS)
def test_protocol_violation_1002(masked: bool, wire: bytes, match: str) -> None:
    r = reader(masked)
    with pytest.raises(ProtocolError, match=match) as info:
        feed(r, wire)
    assert type(info.value) is ProtocolError
    assert info.value.close_code == 1002


@pytest.mark.parametrize(("masked", "wire", "match"), VIOLATIONS)
def test_protocol_violation_byte_by_byte(masked: bool, wire: bytes, match: str) -> None:
    r = reader(masked)
    with pytest.raises(ProtocolError, match=match):
        for i in range(len(wire)):
            feed(r, wire[i:i + 1])


@pytest.mark.parametrize(
    ("masked", "wire", "match"),
    [
        pytest.param(True, raw(TEXT, b"hi"), "not masked", id="server-gets-unmasked"),
        pytest.param(True, raw(PING, b""), "not masked", id="server-gets-unmasked-ping"),
        pytest.param(True, raw(TEXT, b"a", fin=False, masked=True) + raw(CONT, b"b"),
                     "not masked", id="server-gets-unmasked-continuation"),
        pytest.param(False, raw(TEXT, b"hi", masked=True), "is masked",
                     id="client-gets-masked"),
        pytest.param(False, raw(CLOSE, b"", masked=True), "is masked",
                     id="client-gets-masked-close"),
    ],
)
def test_masking_rules(masked: bool, wire: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        feed(reader(masked), wire)
    assert info.value.close_code == 1002


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    "header",
    [
        pytest.param(bytes([0x82, 127]) + b"\x80" + b"\x00" * 7, id="top-bit-only"),
        pytest.param(bytes([0x82, 127]) + b"\xff" * 8, id="all-ones"),
        pytest.param(bytes([0x89, 127]) + b"\x80" + b"\x00" * 7, id="control"),
    ],
)
def test_64bit_length_with_top_bit_set(masked: bool, header: bytes) -> None:
    if masked:
        header = header[:1] + bytes([header[1] | 0x80]) + header[2:]
    r = reader(masked)
    # only the header is fed (not even the masking key): the length alone is fatal
    with pytest.raises(ProtocolError) as info:
        feed(r, header)
    assert info.value.close_code == 1002
    assert type(info.value) is ProtocolError


# -- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    ("limit", "length"),
    [
        pytest.param(100, 101, id="7bit-just-over"),
        pytest.param(125, 126, id="16bit-just-over"),
        pytest.param(65535, 65536, id="64bit-just-over"),
        pytest.param(16 * MiB, 16 * MiB + 1, id="default-16MiB-just-over"),
        pytest.param(1000, 2**62, id="huge"),
        pytest.param(1, 2**63 - 1, id="largest-legal-length"),
    ],
)
def test_too_large_detected_from_header(masked: bool, limit: int, length: int) -> None:
    header = raw(BINARY, b"", masked=masked, length=length)  # declares length, no payload
    r = reader(masked, max_content_length=limit)
    with pytest.raises(MessageTooLargeError) as info:
        feed(r, header)  # header only: no payload has arrived
    assert info.value.close_code == 1009


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_exactly_at_limit_is_accepted(masked: bool, opcode: int) -> None:
    r = reader(masked, max_content_length=200)
    assert feed(r, raw(opcode, b"a" * 200, masked=masked)) == [("message", opcode, b"a" * 200)]
    r = reader(masked, max_content_length=200)
    wire = raw(opcode, b"a" * 120, fin=False, masked=masked) + raw(CONT, b"a" * 80,
                                                                    masked=masked)
    assert feed(r, wire) == [("message", opcode, b"a" * 200)]


@pytest.mark.parametrize("masked", SIDES)
def test_fragmented_message_growing_past_the_limit(masked: bool) -> None:
    r = reader(masked, max_content_length=10)
    assert feed(r, raw(BINARY, b"123456", fin=False, masked=masked)) == []
    assert feed(r, raw(PING, b"still fine", masked=masked)) == [("ping", b"still fine")]
    assert feed(r, raw(CONT, b"789", fin=False, masked=masked)) == []
    second = raw(CONT, b"ab", masked=masked)
    header = second[: 6 if masked else 2]
    with pytest.raises(MessageTooLargeError) as info:
        feed(r, header)  # 9 + 2 > 10, known from the continuation header alone
    assert info.value.close_code == 1009


def test_control_frames_do_not_count_towards_the_limit() -> None:
    r = reader(False, max_content_length=3)
    assert feed(r, raw(PING, b"p" * 125), raw(TEXT, b"abc")) == [
        ("ping", b"p" * 125), ("message", 1, b"abc")]


def test_limit_resets_between_messages() -> None:
    r = reader(False, max_content_length=4)
    wire = raw(TEXT, b"ab", fin=False) + raw(CONT, b"cd") + raw(TEXT, b"ef", fin=False) + raw(
        CONT, b"gh")
    assert feed(r, wire) == [("message", 1, b"abcd"), ("message", 1, b"efgh")]


# -- UTF-8 ----------------------------------------------------------------------------


KOSME = "κόσμε".encode()

FAIL_FAST_TEXT = [
    # (frames fully sent, partial last frame: (opcode, declared length, bytes sent, fin))
    pytest.param([], (TEXT, 100, KOSME + b"\xf4\x90", True), id="6.4.1-above-max"),
    pytest.param([], (TEXT, 100, KOSME + b"\xed\xa0", True), id="surrogate-ed-a0"),
    pytest.param([], (TEXT, 100, KOSME + b"\xed\xa0\x80", True), id="surrogate-ed-a0-80"),
    pytest.param([], (TEXT, 100, b"\xc0", True), id="c0-first-byte"),
    pytest.param([], (TEXT, 100, b"\x80", True), id="continuation-first-byte"),
    pytest.param([], (TEXT, 70000, b"ok" * 10 + b"\xff", True), id="16bit-frame"),
    pytest.param([], (TEXT, 100, KOSME + b"\xf4\x90", False), id="first-fragment"),
    pytest.param([(TEXT, KOSME, False)], (CONT, 100, b"\xf4\x90\x80\x80", True),
                 id="6.4.2-second-fragment"),
    pytest.param([(TEXT, KOSME + b"\xf4", False)], (CONT, 100, b"\x90", True),
                 id="6.4.3-split-across-fragments"),
    pytest.param([(TEXT, KOSME + b"\xed", False)], (CONT, 100, b"\xa0", True),
                 id="surrogate-split-across-fragments"),
    pytest.param([(TEXT, b"\xe2\x82", False)], (CONT, 100, b"A", True),
                 id="truncated-then-ascii"),
    pytest.param([(TEXT, KOSME, False), (PING, b"", True)], (CONT, 100, b"\xff", False),
                 id="after-interleaved-ping"),
]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(("sent", "partial"), FAIL_FAST_TEXT)
def test_invalid_utf8_fails_fast(masked: bool, sent: list[tuple[int, bytes, bool]],
                                 partial: tuple[int, int, bytes, bool]) -> None:
    r = reader(masked)
    for op, data, fin in sent:
        feed(r, raw(op, data, fin=fin, masked=masked))
    opcode, length, prefix, fin = partial
    whole = raw(opcode, prefix + b"a" * (length - len(prefix)), fin=fin, masked=masked)
    head_len = len(whole) - length
    with pytest.raises(InvalidTextError) as info:
        # the header and the first invalid bytes, never the rest of the frame
        feed(r, whole[: head_len + len(prefix)])
    assert info.value.close_code == 1007


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(("sent", "partial"), FAIL_FAST_TEXT)
def test_invalid_utf8_fails_fast_byte_by_byte(
    masked: bool, sent: list[tuple[int, bytes, bool]], partial: tuple[int, int, bytes, bool]
) -> None:
    r = reader(masked)
    opcode, length, prefix, fin = partial
    whole = raw(opcode, prefix + b"a" * (length - len(prefix)), fin=fin, masked=masked)
    wire = b"".join(raw(op, data, fin=f, masked=masked) for op, data, f in sent)
    wire += whole[: len(whole) - length + len(prefix)]
    with pytest.raises(InvalidTextError):
        for i in range(len(wire)):
            feed(r, wire[i:i + 1])


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(TEXT, b"ok\xe2\x82", True)], id="single-frame-truncated"),
        pytest.param([(TEXT, b"ok", False), (CONT, b"\xe2\x82", True)],
                     id="last-fragment-truncated"),
        pytest.param([(TEXT, b"\xf0\x9f", False), (CONT, b"", True)],
                     id="empty-last-fragment-after-lead"),
        pytest.param([(TEXT, b"\xff", True)], id="single-frame-ff"),
        pytest.param([(TEXT, b"a\xed\xbf\xbfz", True)], id="single-frame-surrogate"),
    ],
)
def test_invalid_utf8_at_message_end(masked: bool, frames: list[tuple[int, bytes, bool]]) -> None:
    wire = b"".join(raw(op, data, fin=fin, masked=masked) for op, data, fin in frames)
    with pytest.raises(InvalidTextError) as info:
        feed(reader(masked), wire)
    assert info.value.close_code == 1007


def test_binary_is_never_utf8_checked() -> None:
    r = reader(False)
    wire = raw(BINARY, b"\xff\xed\xa0\x80", fin=False) + raw(CONT, b"\xc0")
    assert feed(r, wire) == [("message", 2, b"\xff\xed\xa0\x80\xc0")]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(TEXT, b"\xff\xfe", True)], id="single"),
        pytest.param([(TEXT, b"\xed\xa0", False), (CONT, b"\x80", True)], id="fragmented"),
        pytest.param([(TEXT, b"ok\xe2\x82", True)], id="truncated"),
    ],
)
def test_check_text_false_lets_invalid_utf8_through(
    masked: bool, frames: list[tuple[int, bytes, bool]]
) -> None:
    wire = b"".join(raw(op, data, fin=fin, masked=masked) for op, data, fin in frames)
    expected = [("message", 1, b"".join(data for _, data, _ in frames))]
    assert feed(reader(masked, check_text=False), wire) == expected
    assert feed_all(reader(masked, check_text=False),
                    (wire[i:i + 1] for i in range(len(wire)))) == expected
    with pytest.raises(InvalidTextError):
        feed(reader(masked, check_text=True), wire)


def test_check_text_false_still_validates_close_reason() -> None:
    with pytest.raises(InvalidTextError):
        feed(reader(False, check_text=False), raw(CLOSE, b"\x03\xe8\xff"))


# -- close frames ---------------------------------------------------------------------


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
             3000, 3999, 4000, 4999], ids=str)
def test_close_valid_codes(masked: bool, code: int) -> None:
    payload = struct.pack("!H", code) + "ok ✓".encode()
    assert feed(reader(masked), raw(CLOSE, payload, masked=masked)) == [
        ("close", code, "ok ✓".encode())]


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize(
    ("payload", "error", "code"),
    [
        pytest.param(b"\x03", ProtocolError, 1002, id="one-byte"),
        pytest.param(b"\x03\xe8\xff", InvalidTextError, 1007, id="reason-ff"),
        pytest.param(b"\x03\xe8\xce\xba\xed\xa0\x80", InvalidTextError, 1007,
                     id="reason-surrogate"),
        pytest.param(b"\x03\xe8\xe2\x82", InvalidTextError, 1007, id="reason-truncated"),
    ],
)
def test_close_invalid_payloads(masked: bool, payload: bytes, error: type[ProtocolError],
                                code: int) -> None:
    with pytest.raises(error) as info:
        feed(reader(masked), raw(CLOSE, payload, masked=masked))
    assert type(info.value) is error
    assert info.value.close_code == code


def test_close_event_type() -> None:
    (event,) = list(reader(False).receive(raw(CLOSE, b"\x03\xe8bye")))
    assert isinstance(event, CloseReceived)
    assert (event.code, event.reason) == (1000, b"bye")


@pytest.mark.parametrize("masked", SIDES)
def test_input_after_close_is_ignored(masked: bool) -> None:
    r = reader(masked)
    wire = raw(TEXT, b"before", masked=masked) + raw(CLOSE, b"\x03\xe8", masked=masked)
    trailing = raw(TEXT, b"after", masked=masked) + b"\xff\xff garbage"
    assert feed(r, wire + trailing) == [("message", 1, b"before"), ("close", 1000, b"")]
    assert r.buffered == 0
    assert feed(r, trailing, raw(0x3, b"", masked=not masked)) == []
    assert r.buffered == 0


@pytest.mark.parametrize("masked", SIDES)
def test_input_after_close_in_a_later_chunk_is_ignored(masked: bool) -> None:
    r = reader(masked)
    assert feed(r, raw(CLOSE, b"", masked=masked)) == [("close", 1005, b"")]
    assert feed(r, raw(PING, b"x", masked=masked)) == []


def test_input_after_error_is_ignored() -> None:
    r = reader(True)
    with pytest.raises(ProtocolError):
        feed(r, raw(0x3, b"", masked=True))
    assert feed(r, raw(TEXT, b"hello", masked=True)) == []
    assert r.buffered == 0


def test_error_in_partial_frame_drops_the_buffer() -> None:
    r = reader(True)
    assert feed(r, raw(TEXT, b"ok", masked=True)[:3]) == []
    assert r.buffered == 3
    with pytest.raises(ProtocolError):
        feed(r, raw(TEXT, b"ok", masked=True)[3:] + raw(CONT, b"x", masked=True))
    assert r.buffered == 0


# -- chunking independence ------------------------------------------------------------


def _mixed_frames(masked: bool) -> tuple[bytes, list[tuple[Any, ...]]]:
    def f(*args: Any, **kwargs: Any) -> bytes:
        return raw(*args, masked=masked, **kwargs)

    pieces: list[tuple[bytes, list[tuple[Any, ...]]]] = [
        (f(TEXT, b"hello"), [("message", 1, b"hello")]),
        (f(BINARY, b""), [("message", 2, b"")]),
        (f(PING, b"ping!"), [("ping", b"ping!")]),
        (f(TEXT, "κό".encode(), fin=False) + f(PONG, b"") + f(CONT, "σμε".encode()[:3], fin=False)
         + f(PING, b"p" * 125) + f(CONT, "σμε".encode()[3:]),
         [("pong", b""), ("ping", b"p" * 125), ("message", 1, KOSME)]),
        (f(BINARY, bytes(range(256)) * 300), [("message", 2, bytes(range(256)) * 300)]),
        (f(BINARY, b"x" * 126), [("message", 2, b"x" * 126)]),
        (f(TEXT, b"", fin=False) + f(CONT, b"a" * 200, fin=False) + f(CONT, b""),
         [("message", 1, b"a" * 200)]),
        (f(BINARY, b"y" * 5, form=64), [("message", 2, b"y" * 5)]),
        (f(TEXT, "😀".encode() * 40), [("message", 1, "😀".encode() * 40)]),
        (f(CLOSE, b"\x03\xe9going away"), [("close", 1001, b"going away")]),
    ]
    wire = b"".join(w for w, _ in pieces)
    expected = [e for _, es in pieces for e in es]
    return wire, expected


@pytest.mark.parametrize("masked", SIDES)
def test_byte_by_byte_equals_all_at_once(masked: bool) -> None:
    wire, expected = _mixed_frames(masked)
    assert feed(reader(masked), wire) == expected
    assert feed_all(reader(masked), (wire[i:i + 1] for i in range(len(wire)))) == expected


@pytest.mark.parametrize("masked", SIDES)
@pytest.mark.parametrize("size", [2, 3, 5, 7, 13, 64, 127, 1000, 4096],
                         ids=lambda s: f"chunk{s}")
def test_fixed_chunk_sizes(masked: bool, size: int) -> None:
    wire, expected = _mixed_frames(masked)
    chunks = (wire[i:i + size] for i in range(0, len(wire), size))
    assert feed_all(reader(masked), chunks) == expected


@pytest.mark.parametrize("masked", SIDES)
def test_every_two_way_split(masked: bool) -> None:
    def f(*args: Any, **kwargs: Any) -> bytes:
        return raw(*args, masked=masked, **kwargs)

    wire = (f(TEXT, "é€".encode(), fin=False) + f(PING, b"hi") + f(CONT, b"!")
            + f(BINARY, b"z" * 130) + f(CLOSE, b"\x03\xe8"))
    expected = [("ping", b"hi"), ("message", 1, "é€!".encode()), ("message", 2, b"z" * 130),
                ("close", 1000, b"")]
    for cut in range(len(wire) + 1):
        assert feed(reader(masked), wire[:cut], wire[cut:]) == expected, cut


# -- big messages (Autobahn 9.*-like) -------------------------------------------------


def test_4mib_message_in_65536_fragments_of_64_bytes() -> None:
    # 9.3.1: a 4 MiB text message sent as 64-byte fragments, to the server (masked)
    block = bytes(0x41 + (i % 26) for i in range(64))
    key = KEY
    masked_block = xor(block, key)
    header_first = bytes([0x01, 0x80 | 64]) + key
    header_cont = bytes([0x00, 0x80 | 64]) + key
    header_last = bytes([0x80, 0x80 | 64]) + key
    count = 65536
    wire = b"".join(
        [header_first + masked_block]
        + [header_cont + masked_block] * (count - 2)
        + [header_last + masked_block]
    )
    r = reader(True)
    events: list[object] = []
    for i in range(0, len(wire), 65536):
        events.extend(r.receive(wire[i:i + 65536]))
    assert len(events) == 1
    (message,) = events
    assert isinstance(message, Message) and message.opcode is Opcode.TEXT
    assert len(message.data) == 4 * MiB
    assert message.data == block * count


@pytest.mark.parametrize("masked", SIDES)
def test_16mib_single_frame_in_64kib_chunks(masked: bool) -> None:
    block = bytes(range(256))
    payload = block * (16 * MiB // 256)
    header = raw(BINARY, b"", masked=masked, length=len(payload))
    # the block is a multiple of 4 bytes long, so masking it once masks every copy
    wire = header + (xor(block, KEY) if masked else block) * (16 * MiB // 256)
    r = reader(masked)  # the default limit is exactly 16 MiB
    events: list[object] = []
    for i in range(0, len(wire), 65536):
        events.extend(r.receive(wire[i:i + 65536]))
    assert len(events) == 1
    assert isinstance(events[0], Message)
    assert events[0].data == payload
    assert r.buffered == 0


# -- compressed messages (the reader's side of permessage-deflate) --------------------


class FakeDecompressor:
    """Stands in for _deflate.Decompressor: 'inflates' every byte ``factor`` times and
    returns ``tail`` from ``finish``."""

    def __init__(self, tail: bytes = b"!", factor: int = 2) -> None:
        self.tail = tail
        self.factor = factor
        self.fed: list[bytes] = []
        self.finished = 0

    def feed(self, data: bytes) -> bytes:
        self.fed.append(bytes(data))
        return bytes(b for byte in data for b in [byte] * self.factor)

    def finish(self) -> bytes:
        self.finished += 1
        return self.tail


def compressed_reader(masked: bool, tail: bytes = b"!", factor: int = 2,
                      **kwargs: Any) -> FrameReader:
    kwargs.setdefault("max_content_length", 16 * MiB)
    return FrameReader(expect_masked=masked,
                       extension_rsv=0x40, decoder=FakeDecompressor(tail, factor),
                       **kwargs)


@pytest.mark.parametrize("masked", SIDES)
def test_compressed_single_frame(masked: bool) -> None:
    r = compressed_reader(masked)
    assert feed(r, raw(TEXT, b"ab", rsv=RSV1, masked=masked)) == [("message", 1, b"aabb!")]
    assert feed(r, raw(BINARY, b"", rsv=RSV1, masked=masked)) == [("message", 2, b"!")]


@pytest.mark.parametrize("masked", SIDES)
def test_compressed_fragmented_with_control(masked: bool) -> None:
    r = compressed_reader(masked)
    wire = (raw(BINARY, b"a", rsv=RSV1, fin=False, masked=masked) + raw(PING, b"", masked=masked)
            + raw(CONT, b"bc", masked=masked))
    assert feed(r, wire) == [("ping", b""), ("message", 2, b"aabbcc!")]


def test_uncompressed_message_with_decompressor_bypasses_it() -> None:
    r = compressed_reader(False)
    assert feed(r, raw(TEXT, b"plain", fin=False), raw(CONT, b"!")) == [
        ("message", 1, b"plain!")]
    assert r._decoder.fed == []  # type: ignore[union-attr]


def test_compressed_rsv1_on_continuation() -> None:
    r = compressed_reader(False)
    with pytest.raises(ProtocolError, match="continuation") as info:
        feed(r, raw(TEXT, b"a", rsv=RSV1, fin=False) + raw(CONT, b"b", rsv=RSV1))
    assert info.value.close_code == 1002


def test_compressed_rsv1_on_control() -> None:
    with pytest.raises(ProtocolError, match="control"):
        feed(compressed_reader(False), raw(PING, b"", rsv=RSV1))


def test_compressed_frame_is_not_limited_by_its_wire_length() -> None:
    # the inflated size is what counts; a 4-byte limit allows a 2-byte compressed frame
    # that inflates to 4 bytes plus an empty tail
    r = compressed_reader(False, tail=b"", max_content_length=4)
    assert feed(r, raw(BINARY, b"ab", rsv=RSV1)) == [("message", 2, b"aabb")]


@pytest.mark.parametrize(
    ("limit", "tail", "wire"),
    [
        pytest.param(3, b"", raw(BINARY, b"ab", rsv=RSV1), id="inflating"),
        pytest.param(4, b"!", raw(BINARY, b"ab", rsv=RSV1), id="tail"),
        pytest.param(5, b"", raw(BINARY, b"ab", rsv=RSV1, fin=False) + raw(CONT, b"c"),
                     id="second-fragment"),
    ],
)
def test_compressed_message_too_large_while_inflating(limit: int, tail: bytes,
                                                      wire: bytes) -> None:
    r = compressed_reader(False, tail=tail, max_content_length=limit)
    with pytest.raises(MessageTooLargeError) as info:
        feed(r, wire)
    assert info.value.close_code == 1009


@pytest.mark.parametrize(
    ("tail", "frames"),
    [
        pytest.param(b"", [raw(TEXT, b"\xff", rsv=RSV1)], id="inflated-invalid"),
        pytest.param(b"\xff", [raw(TEXT, b"ok", rsv=RSV1)], id="tail-invalid"),
        pytest.param(b"\x82", [raw(TEXT, b"\xe2", rsv=RSV1)], id="tail-truncated"),
        pytest.param(b"", [raw(TEXT, b"\xe2\x82", rsv=RSV1, fin=False), raw(CONT, b"A")],
                     id="fragments-invalid"),
    ],
)
def test_compressed_text_is_validated_after_inflating(tail: bytes, frames: list[bytes]) -> None:
    with pytest.raises(InvalidTextError):
        feed(compressed_reader(False, tail=tail, factor=1), *frames)


@pytest.mark.parametrize(
    ("tail", "frames", "data"),
    [
        pytest.param(b"\xac", [raw(TEXT, b"\xe2\x82", rsv=RSV1)], "€".encode(),
                     id="tail-completes-code-point"),
        pytest.param(b"", [raw(TEXT, b"\xe2", rsv=RSV1, fin=False), raw(CONT, b"\x82\xac")],
                     "€".encode(), id="code-point-across-fragments"),
    ],
)
def test_compressed_text_valid_across_pieces(tail: bytes, frames: list[bytes],
                                             data: bytes) -> None:
    r = compressed_reader(False, tail=tail, factor=1)
    assert feed(r, *frames) == [("message", 1, data)]


def test_reader_finishes_the_decompressor_once_per_message() -> None:
    r = compressed_reader(False)
    feed(r, raw(TEXT, b"a", rsv=RSV1), raw(BINARY, b"b", rsv=RSV1, fin=False),
         raw(CONT, b"c"))
    assert r._decoder.finished == 2  # type: ignore[union-attr]
