"""Both masking implementations (``_mask.apply_mask_python`` and the C ``_speedups``)
against a per-byte reference, plus the choice between them at import.

The C parametrizations are skipped when the extension is not built, unless
``TRIO_GWS_REQUIRE_SPEEDUPS=1`` (set by scripts/test.sh, so CI proves it was built).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gws import _mask
from trio_gws._mask import Buffer, apply_mask_c, apply_mask_python

from helpers import naive_mask

MaskFn = Callable[..., bytes]

REQUIRE_SPEEDUPS = os.environ.get("TRIO_GWS_REQUIRE_SPEEDUPS", "") not in ("", "0")
NOT_BUILT = "trio_gws._speedups is not built (no C compiler at install time?)"
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 section 5.7


def require_c() -> MaskFn:
    if apply_mask_c is None:
        if REQUIRE_SPEEDUPS:
            pytest.fail(f"TRIO_GWS_REQUIRE_SPEEDUPS is set but {NOT_BUILT}")
        pytest.skip(NOT_BUILT)
    return apply_mask_c


@pytest.fixture(params=["python", "c"])
def mask(request: pytest.FixtureRequest) -> MaskFn:
    if request.param == "python":
        return apply_mask_python
    return require_c()


def pattern(n: int) -> bytes:
    return bytes((i * 131 + 7) & 0xFF for i in range(n))


# -- results against the reference -------------------------------------------------------


def test_rfc_example(mask: MaskFn) -> None:
    assert mask(b"Hello", KEY) == bytes.fromhex("7f9f4d5158")
    assert mask(bytes.fromhex("7f9f4d5158"), KEY) == b"Hello"


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("offset", range(8))
def test_empty(mask: MaskFn, data_type: Callable[[bytes], Buffer], offset: int) -> None:
    result = mask(data_type(b""), KEY, offset)
    assert result == b"" and type(result) is bytes


@pytest.mark.parametrize("length", range(1, 18))
@pytest.mark.parametrize("offset", range(8))
@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
def test_small_against_reference(mask: MaskFn, length: int, offset: int,
                                 data_type: Callable[[bytes], Buffer]) -> None:
    data = pattern(length)
    masked = mask(data_type(data), KEY, offset)
    assert type(masked) is bytes
    assert masked == naive_mask(data, KEY, offset)
    assert mask(masked, KEY, offset) == data


@pytest.mark.parametrize("start", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("offset", range(8))
def test_memoryview_slice(mask: MaskFn, start: int, offset: int) -> None:
    # a slice that starts mid-buffer: unaligned for the 8-byte loads in C
    buf = bytearray(pattern(start + 70))
    view = memoryview(buf)[start:start + 61]
    assert mask(view, KEY, offset) == naive_mask(bytes(view), KEY, offset)


@pytest.mark.parametrize("length", [(1 << 16) - 1, 1 << 16, (1 << 20) + 3])
@pytest.mark.parametrize("offset", [0, 3])
def test_large(mask: MaskFn, length: int, offset: int) -> None:
    # around and past the size where the C version releases the GIL
    data = pattern(length)
    key = b"\x00\xff\x5a\xa5"
    masked = mask(data, key, offset)
    assert masked == naive_mask(data, key, offset)
    assert mask(masked, key, offset) == data


@pytest.mark.parametrize("offset", [4, 2**31 + 1, 2**63 + 2, 2**70 + 3])
def test_only_low_offset_bits_matter(mask: MaskFn, offset: int) -> None:
    data = pattern(13)
    assert mask(data, KEY, offset) == naive_mask(data, KEY, offset & 3)


def test_keywords_and_input_untouched(mask: MaskFn) -> None:
    data = bytearray(pattern(20))
    before = bytes(data)
    assert mask(data=data, key=KEY, offset=1) == naive_mask(before, KEY, 1)
    assert mask(data, KEY, offset=2) == naive_mask(before, KEY, 2)
    assert data == before


def test_bytearray_key(mask: MaskFn) -> None:
    assert mask(b"Hello", bytearray(KEY)) == bytes.fromhex("7f9f4d5158")


def test_multibyte_format_memoryview_is_raw_bytes(mask: MaskFn) -> None:
    # the byte length counts, not the item count
    data = pattern(24)
    as_ints = memoryview(data).cast("I")
    assert mask(as_ints, KEY, 1) == naive_mask(data, KEY, 1)
    two_d = memoryview(data).cast("B", (4, 6))
    assert mask(two_d, KEY, 2) == naive_mask(data, KEY, 2)


def test_split_equals_whole(mask: MaskFn) -> None:
    data = pattern(100)
    for split in range(0, 101, 7):
        assert mask(data[:split], KEY, 5) + mask(data[split:], KEY, 5 + split) == (
            mask(data, KEY, 5)
        )


def test_threads(mask: MaskFn) -> None:
    # large inputs run with the GIL released in C: results must stay exact
    data = pattern((1 << 17) + 5)
    expected = naive_mask(data, KEY, 1)
    results: list[bytes] = []

    def work() -> None:
        for _ in range(5):
            results.append(mask(data, KEY, 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20 and all(result == expected for result in results)


# -- errors, identical in both ----------------------------------------------------------


@pytest.mark.parametrize("key", [b"", b"\x01", b"abc", b"abcde", b"abcdefgh"])
@pytest.mark.parametrize("data", [b"", b"payload"])
def test_wrong_key_length(mask: MaskFn, key: bytes, data: bytes) -> None:
    with pytest.raises(ValueError, match=f"mask key must be 4 bytes, got {len(key)}"):
        mask(data, key)


@pytest.mark.parametrize("offset", [-1, -4, -(2**70)])
@pytest.mark.parametrize("data", [b"", b"payload"])
def test_negative_offset(mask: MaskFn, offset: int, data: bytes) -> None:
    with pytest.raises(ValueError, match="offset must be non-negative"):
        mask(data, KEY, offset)


@pytest.mark.parametrize("step", [2, -1])
def test_non_contiguous_memoryview(mask: MaskFn, step: int) -> None:
    # the C version asks for PyBUF_SIMPLE, which a strided view refuses with BufferError;
    # the pure version checks and raises the same rather than silently copying
    view = memoryview(pattern(16))[::step]
    with pytest.raises(BufferError, match="not C-contiguous"):
        mask(view, KEY)
    with pytest.raises(BufferError, match="not C-contiguous"):
        mask(b"data", memoryview(pattern(8))[::2])


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2, 3]])
def test_not_a_buffer(mask: MaskFn, data: Any) -> None:
    with pytest.raises(TypeError):
        mask(data, KEY)
    with pytest.raises(TypeError):
        mask(b"data", "abcd")


def test_bad_offset_type(mask: MaskFn) -> None:
    with pytest.raises(TypeError):
        mask(b"data", KEY, 1.5)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((b"data",), {}),
        ((b"data", KEY, 0, 0), {}),
        ((b"data", KEY), {"offset": 0, "bogus": 1}),
        ((b"data", KEY), {"key": KEY}),
        ((), {"key": KEY}),
    ],
    ids=["none", "no-key", "too-many", "unknown-keyword", "twice", "no-data"],
)
def test_bad_arguments(mask: MaskFn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        mask(*args, **kwargs)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, d: m(d, KEY),
        lambda m, d: m(d, b"abc"),
        lambda m, d: m(d, KEY, -1),
        lambda m, d: m(d, KEY, "1"),
        lambda m, d: m(d, bytearray(b"abc")),
    ],
    ids=["ok", "bad-key", "negative-offset", "bad-offset", "bytearray-key"],
)
def test_buffers_released(mask: MaskFn, call: Callable[[MaskFn, bytearray], object]) -> None:
    # a bytearray cannot resize while a buffer export is alive: every path must release
    data = bytearray(pattern(100))
    try:
        call(mask, data)
    except (ValueError, TypeError):
        pass
    data.extend(b"more")
    key = bytearray(KEY)
    mask(b"x", key)
    key.append(0)


# -- C against pure Python --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4),
       offset=st.integers(0, 2**66), start=st.integers(0, 9))
def test_c_matches_python(data: bytes, key: bytes, offset: int, start: int) -> None:
    c_mask = require_c()
    assert c_mask(data, key, offset) == apply_mask_python(data, key, offset)
    view = memoryview(data)[min(start, len(data)):]
    assert c_mask(view, key, offset) == apply_mask_python(view, key, offset)


# -- the choice at import ---------------------------------------------------------------


def import_flags(env_value: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIO_GWS_NO_SPEEDUPS"}
    if env_value is not None:
        env["TRIO_GWS_NO_SPEEDUPS"] = env_value
    code = (
        "from trio_gws import _mask as m\n"
        "print(m.SPEEDUPS, m.apply_mask is m.apply_mask_python,"
        " m.apply_mask is m.apply_mask_c, m.apply_mask_c is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_env_forces_python(value: str) -> None:
    speedups, is_python, is_c, built = import_flags(value)
    assert (speedups, is_python, is_c) == ("False", "True", "False")
    assert built == str(apply_mask_c is not None)  # still importable for comparisons


@pytest.mark.parametrize("value", [None, "", "0"], ids=["unset", "empty", "zero"])
def test_speedups_used_when_built(value: str | None) -> None:
    if apply_mask_c is None:
        require_c()
    speedups, is_python, is_c, _ = import_flags(value)
    assert (speedups, is_python, is_c) == ("True", "False", "True")


def test_in_process_flags_are_consistent() -> None:
    assert _mask.SPEEDUPS == (_mask.apply_mask is apply_mask_c)
    assert _mask.SPEEDUPS != (_mask.apply_mask is apply_mask_python)
