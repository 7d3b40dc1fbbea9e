"""Fail-fast incremental UTF-8 validation (``_utf8``)."""

from __future__ import annotations

import pytest

from trio_gws._errors import InvalidTextError, ProtocolError
from trio_gws._utf8 import Utf8Validator, decode_text

VALID = [
    pytest.param(b"", id="empty"),
    pytest.param(b"hello", id="ascii"),
    pytest.param(b"\x00\x7f", id="ascii-edges"),
    pytest.param("é".encode(), id="2-byte"),
    pytest.param(b"\xc2\x80", id="2-byte-min-U+0080"),
    pytest.param(b"\xdf\xbf", id="2-byte-max-U+07FF"),
    pytest.param("€".encode(), id="3-byte"),
    pytest.param(b"\xe0\xa0\x80", id="3-byte-min-U+0800"),
    pytest.param(b"\xed\x9f\xbf", id="U+D7FF-before-surrogates"),
    pytest.param(b"\xee\x80\x80", id="U+E000-after-surrogates"),
    pytest.param(b"\xef\xbf\xbf", id="U+FFFF"),
    pytest.param(b"\xef\xbb\xbf", id="bom"),
    pytest.param("😀".encode(), id="4-byte"),
    pytest.param(b"\xf0\x90\x80\x80", id="4-byte-min-U+10000"),
    pytest.param(b"\xf4\x8f\xbf\xbf", id="max-U+10FFFF"),
    pytest.param("κόσμε".encode(), id="autobahn-kosme"),
    pytest.param("Hello-µ@ßöäüàá-UTF-8!!".encode(), id="autobahn-6.2"),
]

INVALID = [
    pytest.param(b"\x80", id="lone-continuation"),
    pytest.param(b"\xbf", id="lone-continuation-bf"),
    pytest.param(b"a\x80b", id="continuation-in-ascii"),
    pytest.param(b"\xc0\x80", id="overlong-nul"),
    pytest.param(b"\xc1\xbf", id="overlong-2-byte"),
    pytest.param(b"\xe0\x80\x80", id="overlong-3-byte"),
    pytest.param(b"\xe0\x9f\xbf", id="overlong-3-byte-max"),
    pytest.param(b"\xf0\x80\x80\x80", id="overlong-4-byte"),
    pytest.param(b"\xf0\x8f\xbf\xbf", id="overlong-4-byte-max"),
    pytest.param(b"\xed\xa0\x80", id="surrogate-high-D800"),
    pytest.param(b"\xed\xbf\xbf", id="surrogate-low-DFFF"),
    pytest.param(b"\xed\xa0\x80\xed\xb0\x80", id="surrogate-pair-cesu"),
    pytest.param(b"\xf4\x90\x80\x80", id="above-U+10FFFF"),
    pytest.param(b"\xf5\x80\x80\x80", id="f5-lead"),
    pytest.param(b"\xf8\x88\x80\x80\x80", id="5-byte-form"),
    pytest.param(b"\xfe", id="fe"),
    pytest.param(b"\xff", id="ff"),
    pytest.param(b"\xc2", id="truncated-2-byte"),
    pytest.param(b"\xe2\x82", id="truncated-3-byte"),
    pytest.param(b"\xf0\x9f\x98", id="truncated-4-byte"),
    pytest.param(b"\xc2a", id="2-byte-bad-continuation"),
    pytest.param(b"\xe2\x28\xa1", id="3-byte-bad-continuation"),
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
                 id="autobahn-6.3.1"),
]

# (prefix that must be rejected immediately without final=True, id)
FAIL_FAST = [
    pytest.param(b"\x80", id="continuation"),
    pytest.param(b"\xc0", id="c0"),
    pytest.param(b"\xc1", id="c1"),
    pytest.param(b"\xf5", id="f5"),
    pytest.param(b"\xff", id="ff"),
    pytest.param(b"\xe0\x80", id="overlong-3-second-byte"),
    pytest.param(b"\xf0\x80", id="overlong-4-second-byte"),
    pytest.param(b"\xf4\x90", id="above-max-second-byte"),
    pytest.param(b"\xed\xa0", id="surrogate-second-byte-a0"),
    pytest.param(b"\xed\xbf", id="surrogate-second-byte-bf"),
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90", id="autobahn-6.4.1"),
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0", id="kosme-surrogate"),
    pytest.param(b"\xc2a", id="bad-continuation"),
]

# valid prefixes that must NOT be rejected before the rest arrives
PENDING_OK = [
    pytest.param(b"\xc2", id="2-byte-lead"),
    pytest.param(b"\xe2\x82", id="3-byte-two-of-three"),
    pytest.param(b"\xed", id="ed-lead"),
    pytest.param(b"\xed\x9f", id="ed-9f-not-surrogate"),
    pytest.param(b"\xe0\xa0", id="e0-a0"),
    pytest.param(b"\xf0\x90\x80", id="4-byte-three-of-four"),
    pytest.param(b"\xf4\x8f\xbf", id="max-three-of-four"),
]


@pytest.mark.parametrize("data", VALID)
def test_decode_text_valid(data: bytes) -> None:
    assert decode_text(data) == data.decode("utf-8")


@pytest.mark.parametrize("data", INVALID)
def test_decode_text_invalid(data: bytes) -> None:
    with pytest.raises(InvalidTextError) as info:
        decode_text(data)
    assert info.value.close_code == 1007
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("data", VALID)
def test_validator_valid_whole(data: bytes) -> None:
    validator = Utf8Validator()
    validator.feed(data)
    validator.feed(b"", final=True)


@pytest.mark.parametrize("data", VALID)
def test_validator_valid_byte_by_byte(data: bytes) -> None:
    validator = Utf8Validator()
    for i in range(len(data)):
        validator.feed(data[i:i + 1])
    validator.feed(b"", final=True)


@pytest.mark.parametrize("data", VALID)
def test_validator_valid_every_split(data: bytes) -> None:
    for cut in range(len(data) + 1):
        validator = Utf8Validator()
        validator.feed(data[:cut])
        validator.feed(data[cut:], final=True)


@pytest.mark.parametrize("data", INVALID)
def test_validator_invalid_whole_final(data: bytes) -> None:
    with pytest.raises(InvalidTextError):
        Utf8Validator().feed(data, final=True)


@pytest.mark.parametrize("data", INVALID)
def test_validator_invalid_byte_by_byte(data: bytes) -> None:
    validator = Utf8Validator()
    with pytest.raises(InvalidTextError):
        for i in range(len(data)):
            validator.feed(data[i:i + 1])
        validator.feed(b"", final=True)


@pytest.mark.parametrize("prefix", FAIL_FAST)
def test_validator_fails_fast(prefix: bytes) -> None:
    with pytest.raises(InvalidTextError):
        Utf8Validator().feed(prefix)


@pytest.mark.parametrize("prefix", FAIL_FAST)
def test_validator_fails_fast_byte_by_byte(prefix: bytes) -> None:
    validator = Utf8Validator()
    for byte in prefix[:-1]:
        validator.feed(bytes([byte]))
    with pytest.raises(InvalidTextError):
        validator.feed(prefix[-1:])


@pytest.mark.parametrize("prefix", PENDING_OK)
def test_validator_keeps_valid_prefix_pending(prefix: bytes) -> None:
    validator = Utf8Validator()
    validator.feed(prefix)  # must not raise: the sequence may still complete
    with pytest.raises(InvalidTextError):
        validator.feed(b"", final=True)  # ...but it is truncated at the end


@pytest.mark.parametrize(
    "data",
    [pytest.param(b"\xc2", id="2-byte"), pytest.param(b"\xe2\x82", id="3-byte"),
     pytest.param(b"abc\xf0\x9f\x98", id="4-byte-after-ascii")],
)
def test_validator_truncated_at_end_with_final(data: bytes) -> None:
    with pytest.raises(InvalidTextError):
        Utf8Validator().feed(data, final=True)


def test_validator_reset_drops_pending_state() -> None:
    validator = Utf8Validator()
    validator.feed(b"\xe2\x82")
    validator.reset()
    validator.feed(b"ok", final=True)  # the dangling lead byte is gone


def test_validator_without_reset_keeps_pending_state() -> None:
    validator = Utf8Validator()
    validator.feed(b"\xe2\x82")
    with pytest.raises(InvalidTextError):
        validator.feed(b"ok", final=True)


def test_invalid_text_error_message_mentions_utf8() -> None:
    with pytest.raises(InvalidTextError, match="UTF-8"):
        decode_text(b"\xff")
    with pytest.raises(InvalidTextError, match="surrogate"):
        Utf8Validator().feed(b"\xed\xa0")
