"""Close frame payloads (``_close``): parsing what we receive, building what we send."""

from __future__ import annotations

import struct

import pytest

from trio_gws._lifecycle import (
    MAX_REASON_BYTES,
    build_close_payload,
    is_valid_close_code,
    parse_close_payload,
)
from trio_gws._errors import InvalidTextError, ProtocolError
from trio_gws._types import CloseCode

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES, ids=str)
def test_valid_codes(code: int) -> None:
    assert is_valid_close_code(code)
    payload = struct.pack("!H", code)
    assert parse_close_payload(payload) == (code, b"")
    assert parse_close_payload(payload + b"bye") == (code, b"bye")
    assert build_close_payload(code) == payload
    assert build_close_payload(code, b"bye") == payload + b"bye"


@pytest.mark.parametrize("code", INVALID_CODES, ids=str)
def test_invalid_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(struct.pack("!H", code))
    assert info.value.close_code == 1002
    assert type(info.value) is ProtocolError
    with pytest.raises(ValueError):
        build_close_payload(code, b"x")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"", (1005, b""), id="empty-means-no-status"),
        pytest.param(b"\x03\xe8", (1000, b""), id="code-only"),
        pytest.param(b"\x03\xe8bye", (1000, b"bye"), id="code-and-reason"),
        pytest.param(b"\x03\xe9" + "é€😀".encode(), (1001, "é€😀".encode()), id="utf8-reason"),
        pytest.param(b"\x0f\xa0" + b"r" * 123, (4000, b"r" * 123), id="123-byte-reason"),
    ],
)
def test_parse_close_payload(payload: bytes, expected: tuple[int, bytes]) -> None:
    assert parse_close_payload(payload) == expected


@pytest.mark.parametrize(
    ("payload", "error", "code"),
    [
        pytest.param(b"\x03", ProtocolError, 1002, id="one-byte"),
        pytest.param(b"\x00\x00", ProtocolError, 1002, id="code-0"),
        pytest.param(b"\x03\xed", ProtocolError, 1002, id="code-1005-on-wire"),
        pytest.param(b"\x03\xe8\xff", InvalidTextError, 1007, id="reason-ff"),
        pytest.param(b"\x03\xe8\xed\xa0\x80", InvalidTextError, 1007, id="reason-surrogate"),
        pytest.param(b"\x03\xe8ok\xe2\x82", InvalidTextError, 1007, id="reason-truncated"),
        pytest.param(b"\x03\xe8\xc0\x80", InvalidTextError, 1007, id="reason-overlong"),
    ],
)
def test_parse_close_payload_errors(payload: bytes, error: type[ProtocolError],
                                    code: int) -> None:
    with pytest.raises(error) as info:
        parse_close_payload(payload)
    assert type(info.value) is error
    assert info.value.close_code == code


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        pytest.param(1000, b"", b"\x03\xe8", id="normal"),
        pytest.param(1000, "", b"\x03\xe8", id="normal-str"),
        pytest.param(1001, "bye", b"\x03\xe9bye", id="str-reason"),
        pytest.param(4000, "é", b"\x0f\xa0\xc3\xa9", id="str-reason-encoded"),
        pytest.param(1011, b"x" * 123, b"\x03\xf3" + b"x" * 123, id="123-bytes"),
        pytest.param(1000, "é" * 61 + "x", b"\x03\xe8" + "é".encode() * 61 + b"x",
                     id="123-bytes-multibyte"),
        pytest.param(1005, b"", b"", id="no-status-is-empty"),
        pytest.param(1005, "", b"", id="no-status-is-empty-str"),
        pytest.param(CloseCode.GOING_AWAY, b"", b"\x03\xe9", id="enum-code"),
    ],
)
def test_build_close_payload(code: int, reason: bytes | str, expected: bytes) -> None:
    payload = build_close_payload(code, reason)
    assert payload == expected
    assert len(payload) <= 125


@pytest.mark.parametrize(
    ("code", "reason", "match"),
    [
        pytest.param(1000, b"x" * 124, "124 bytes", id="reason-124-bytes"),
        pytest.param(1000, "é" * 62, "124 bytes", id="str-reason-124-bytes"),
        pytest.param(1000, b"\xff", "UTF-8", id="reason-not-utf8"),
        pytest.param(1000, b"\xed\xa0\x80", "UTF-8", id="reason-surrogate"),
        pytest.param(1005, b"why", "1005", id="no-status-with-reason"),
        pytest.param(1006, b"", "1006", id="abnormal"),
        pytest.param(1015, b"", "1015", id="tls"),
        pytest.param(1004, b"", "1004", id="reserved"),
        pytest.param(2999, b"", "2999", id="unassigned"),
        pytest.param(5000, b"", "5000", id="above-4999"),
        pytest.param(0, b"", "0", id="zero"),
    ],
)
def test_build_close_payload_refuses(code: int, reason: bytes | str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_close_payload(code, reason)


def test_build_then_parse_round_trip() -> None:
    for code in VALID_CODES:
        for reason in (b"", b"a", "ünïcödé".encode(), b"z" * MAX_REASON_BYTES):
            assert parse_close_payload(build_close_payload(code, reason)) == (code, reason)


def test_max_reason_bytes() -> None:
    assert MAX_REASON_BYTES == 123
