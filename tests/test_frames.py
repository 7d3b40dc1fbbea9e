"""Frame encoding (``_frames``) and masking (``_mask``): pure functions, byte-exact."""

from __future__ import annotations

import struct

import pytest

from trio_gws._frames import (
    FIN,
    MASK_BIT,
    MAX_CONTROL_PAYLOAD,
    RSV1,
    check_control_payload,
    encode_frame,
    frame_header,
)
from trio_gws._mask import apply_mask, new_mask_key
from trio_gws._types import Opcode

from helpers import naive_mask

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 section 5.7


def split_header(frame: bytes) -> tuple[int, int, bool, int, bytes | None, bytes]:
    """Independent decoder for one frame: (b0, length, masked, header_len, key, payload)."""
    b0, b1 = frame[0], frame[1]
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        pos = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", frame[2:10])
        pos = 10
    masked = bool(b1 & 0x80)
    key = None
    if masked:
        key = frame[pos:pos + 4]
        pos += 4
    return b0, length, masked, pos, key, frame[pos:]


# -- frame_header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected_len_bytes"),
    [
        pytest.param(0, b"\x00", id="0-7bit"),
        pytest.param(1, b"\x01", id="1-7bit"),
        pytest.param(125, b"\x7d", id="125-7bit-max"),
        pytest.param(126, b"\x7e\x00\x7e", id="126-16bit-min"),
        pytest.param(127, b"\x7e\x00\x7f", id="127-16bit"),
        pytest.param(65535, b"\x7e\xff\xff", id="65535-16bit-max"),
        pytest.param(65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00", id="65536-64bit-min"),
        pytest.param(2**32, b"\x7f\x00\x00\x00\x01\x00\x00\x00\x00", id="4GiB-64bit"),
        pytest.param(2**63 - 1, b"\x7f\x7f\xff\xff\xff\xff\xff\xff\xff", id="64bit-max"),
    ],
)
def test_frame_header_minimal_length_encoding(length: int, expected_len_bytes: bytes) -> None:
    assert frame_header(Opcode.BINARY, length) == b"\x82" + expected_len_bytes


@pytest.mark.parametrize(
    ("length", "expected_len_bytes"),
    [
        pytest.param(0, b"\x80", id="0"),
        pytest.param(125, b"\xfd", id="125"),
        pytest.param(126, b"\xfe\x00\x7e", id="126"),
        pytest.param(65535, b"\xfe\xff\xff", id="65535"),
        pytest.param(65536, b"\xff\x00\x00\x00\x00\x00\x01\x00\x00", id="65536"),
    ],
)
def test_frame_header_with_mask_key(length: int, expected_len_bytes: bytes) -> None:
    assert frame_header(Opcode.TEXT, length, mask_key=RFC_KEY) == (
        b"\x81" + expected_len_bytes + RFC_KEY
    )


@pytest.mark.parametrize(
    ("opcode", "fin", "rsv1", "first"),
    [
        pytest.param(Opcode.TEXT, True, False, 0x81, id="text-fin"),
        pytest.param(Opcode.TEXT, False, False, 0x01, id="text-nofin"),
        pytest.param(Opcode.BINARY, True, True, 0xC2, id="binary-fin-rsv1"),
        pytest.param(Opcode.BINARY, False, True, 0x42, id="binary-nofin-rsv1"),
        pytest.param(Opcode.CONTINUATION, True, False, 0x80, id="continuation-fin"),
        pytest.param(Opcode.CONTINUATION, False, False, 0x00, id="continuation-nofin"),
        pytest.param(Opcode.CLOSE, True, False, 0x88, id="close"),
        pytest.param(Opcode.PING, True, False, 0x89, id="ping"),
        pytest.param(Opcode.PONG, True, False, 0x8A, id="pong"),
    ],
)
def test_frame_header_first_byte(opcode: Opcode, fin: bool, rsv1: bool, first: int) -> None:
    header = frame_header(opcode, 3, fin=fin, rsv=RSV1 if rsv1 else 0)
    assert header == bytes([first, 3])


def test_frame_header_bit_constants() -> None:
    assert (FIN, RSV1, MASK_BIT, MAX_CONTROL_PAYLOAD) == (0x80, 0x40, 0x80, 125)


# -- encode_frame ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "payload", "fin", "rsv1", "expected"),
    [
        pytest.param(Opcode.TEXT, b"Hello", True, False, b"\x81\x05Hello",
                     id="rfc-unmasked-hello"),
        pytest.param(Opcode.TEXT, b"Hel", False, False, b"\x01\x03Hel", id="rfc-fragment-1"),
        pytest.param(Opcode.CONTINUATION, b"lo", True, False, b"\x80\x02lo",
                     id="rfc-fragment-2"),
        pytest.param(Opcode.PING, b"Hello", True, False, b"\x89\x05Hello", id="rfc-ping"),
        pytest.param(Opcode.BINARY, b"", True, False, b"\x82\x00", id="empty"),
        pytest.param(Opcode.BINARY, b"\x00" * 256, True, False, b"\x82\x7e\x01\x00" + b"\x00" * 256,
                     id="rfc-256-bytes"),
        pytest.param(Opcode.BINARY, b"z", True, True, b"\xc2\x01z", id="rsv1"),
        pytest.param(Opcode.CLOSE, b"\x03\xe8", True, False, b"\x88\x02\x03\xe8", id="close"),
    ],
)
def test_encode_frame_unmasked(opcode: Opcode, payload: bytes, fin: bool, rsv1: bool,
                               expected: bytes) -> None:
    assert encode_frame(opcode, payload, fin=fin, rsv=RSV1 if rsv1 else 0) == expected


@pytest.mark.parametrize(
    "payload_type", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"]
)
def test_encode_frame_accepts_buffers(payload_type: type) -> None:
    payload = payload_type(b"abc")
    frame = encode_frame(Opcode.BINARY, payload)
    assert isinstance(frame, bytes)
    assert frame == b"\x82\x03abc"
    masked = encode_frame(Opcode.BINARY, payload, mask=True)
    _, _, _, _, key, body = split_header(masked)
    assert key is not None and apply_mask(body, key) == b"abc"


@pytest.mark.parametrize(
    "length", [0, 1, 125, 126, 65535, 65536], ids=lambda n: f"len{n}"
)
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY], ids=["text", "binary"])
def test_encode_frame_masked_decodes_back(opcode: Opcode, length: int) -> None:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(length))
    frame = encode_frame(opcode, payload, mask=True)
    b0, decoded_len, masked, header_len, key, body = split_header(frame)
    assert b0 == 0x80 | opcode
    assert masked
    assert decoded_len == length == len(body)
    assert header_len == (6 if length < 126 else 8 if length < 65536 else 14)
    assert key is not None and len(key) == 4
    assert apply_mask(body, key) == payload
    assert naive_mask(body, key) == payload


def test_encode_frame_mask_keys_are_fresh() -> None:
    keys = {split_header(encode_frame(Opcode.BINARY, b"x" * 8, mask=True))[4] for _ in range(32)}
    # 32 draws of a 32-bit random key: a collision down to 1 key means no randomness
    assert len(keys) > 1


def test_encode_frame_masked_rsv1_and_nofin() -> None:
    frame = encode_frame(Opcode.TEXT, b"abc", fin=False, rsv=RSV1, mask=True)
    assert frame[0] == 0x41
    assert frame[1] == 0x83


# -- check_control_payload -------------------------------------------------------------


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE],
                         ids=["ping", "pong", "close"])
@pytest.mark.parametrize(
    ("size", "ok"),
    [pytest.param(0, True, id="0"), pytest.param(125, True, id="125"),
     pytest.param(126, False, id="126"), pytest.param(70000, False, id="70000")],
)
def test_check_control_payload(opcode: Opcode, size: int, ok: bool) -> None:
    if ok:
        check_control_payload(opcode, b"p" * size)
    else:
        with pytest.raises(ValueError, match=opcode.name):
            check_control_payload(opcode, b"p" * size)


def test_opcode_is_control() -> None:
    assert [op.is_control for op in Opcode] == [False, False, False, True, True, True]


# -- masking ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 1000],
                         ids=lambda n: f"len{n}")
@pytest.mark.parametrize("offset", range(8), ids=lambda o: f"offset{o}")
def test_apply_mask_matches_reference(length: int, offset: int) -> None:
    data = bytes((i * 31 + 11) & 0xFF for i in range(length))
    masked = apply_mask(data, RFC_KEY, offset)
    assert isinstance(masked, bytes)
    assert masked == naive_mask(data, RFC_KEY, offset)
    assert apply_mask(masked, RFC_KEY, offset) == data


@pytest.mark.parametrize("split", [0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 99, 100],
                         ids=lambda s: f"split{s}")
@pytest.mark.parametrize("start", range(8), ids=lambda o: f"start{o}")
def test_apply_mask_split_equals_whole(split: int, start: int) -> None:
    data = bytes(range(100))
    whole = apply_mask(data, RFC_KEY, start)
    pieces = apply_mask(data[:split], RFC_KEY, start) + apply_mask(
        data[split:], RFC_KEY, start + split
    )
    assert pieces == whole


def test_apply_mask_many_pieces_equals_whole() -> None:
    data = bytes((i * 13) & 0xFF for i in range(1000))
    out = bytearray()
    pos = 0
    for size in [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31] * 10:
        out += apply_mask(data[pos:pos + size], RFC_KEY, pos)
        pos += size
    out += apply_mask(data[pos:], RFC_KEY, pos)
    assert bytes(out) == naive_mask(data, RFC_KEY)


def test_apply_mask_zero_key_and_leading_zeros() -> None:
    # big-integer XOR must not lose leading or trailing zero bytes
    assert apply_mask(b"\x00\x00\x01\x00\x00", b"\x00\x00\x00\x00") == b"\x00\x00\x01\x00\x00"
    assert apply_mask(b"\x00" * 9, RFC_KEY) == (RFC_KEY * 3)[:9]


def test_new_mask_key() -> None:
    key = new_mask_key()
    assert isinstance(key, bytes) and len(key) == 4
    assert len({new_mask_key() for _ in range(32)}) > 1
