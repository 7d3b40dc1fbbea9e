"""Masking (RFC 6455 section 5.3): a compiled loop when available, pure Python otherwise.

Every byte a client sends and every byte a server receives goes through here. The
pure-Python version is one big-integer XOR over the whole buffer (Python cannot XOR
byte strings directly, but it XORs arbitrary-size integers in C), about 200 MiB/s. The
optional C extension ``trio_gws._speedups`` XORs 8 bytes at a time and is many times
faster, so it is used whenever it was built. Setting ``TRIO_GWS_NO_SPEEDUPS`` to a
non-empty value other than ``0`` forces the pure version (to compare or debug).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Protocol, Union

Buffer = Union[bytes, bytearray, memoryview]


class _MaskFunction(Protocol):
    def __call__(self, data: Buffer, key: bytes, offset: int = 0) -> bytes: ...


def _raw_bytes(obj: Buffer) -> memoryview:
    """A flat byte view of a C-contiguous buffer: what the C version reads (PyBUF_SIMPLE)."""
    view = memoryview(obj)  # TypeError for non-buffers, as in C
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def apply_mask_python(data: Buffer, key: bytes, offset: int = 0) -> bytes:
    """Mask or unmask ``data`` with the 4-byte ``key``.

    ``offset`` is the position of ``data`` within the frame payload, so a payload that
    arrives in pieces can be unmasked piece by piece. Errors match the C version's, so
    the two are interchangeable: ValueError for a key that is not 4 bytes or a negative
    offset, BufferError for a non-contiguous buffer, TypeError for a non-buffer.
    """
    if type(data) is not bytes and type(data) is not bytearray:
        data = _raw_bytes(data)  # memoryviews: byte length, not item count
    if type(key) is not bytes:
        key = _raw_bytes(key).tobytes()
    if len(key) != 4:
        raise ValueError(f"mask key must be 4 bytes, got {len(key)}")
    if offset < 0:
        raise ValueError("offset must be non-negative")
    size = len(data)
    if size == 0:
        return b""
    key = key_at(key, offset)
    repeated = key * ((size >> 2) + 1)
    mask_int = int.from_bytes(repeated[:size], "little")
    return (int.from_bytes(data, "little") ^ mask_int).to_bytes(size, "little")


def key_at(key: bytes, offset: int) -> bytes:
    """The mask key as it applies from ``offset`` bytes into a payload (byte i of a
    payload is masked with ``key[i % 4]``, RFC 6455 section 5.3)."""
    shift = offset & 3
    return key[shift:] + key[:shift] if shift else key


def _speedups_disabled() -> bool:
    value = os.environ.get("TRIO_GWS_NO_SPEEDUPS", "")
    return value not in ("", "0")


apply_mask_c: Optional[_MaskFunction]
try:
    from ._speedups import apply_mask as apply_mask_c
except ImportError:  # not built: no C compiler at install time, or another interpreter
    apply_mask_c = None

apply_mask: _MaskFunction = (
    apply_mask_c if apply_mask_c is not None and not _speedups_disabled() else apply_mask_python
)

#: True when ``apply_mask`` is the compiled version.
SPEEDUPS: bool = apply_mask is apply_mask_c

#: The compiled short path of the frame reader (``_reader``), or None: pure Python.
#: It goes with the masking: both on, or (TRIO_GWS_NO_SPEEDUPS) both off.
scan_frames: Optional[Callable[..., tuple[list[Any], int]]] = None
#: Large messages filled in place (``_reader``): a bytes object of n bytes, and the
#: function that unmasks a piece into it; None: pure Python (pieces joined at the end).
new_payload: Optional[Callable[[int], bytes]] = None
unmask_into: Optional[Callable[[bytes, int, Buffer, int, int, Optional[bytes]], None]] = None
if SPEEDUPS:
    try:
        from ._speedups import new_payload as _new_payload_c
        from ._speedups import scan_frames as _scan_c
        from ._speedups import unmask_into as _unmask_into_c
    except ImportError:  # an extension built from an older _speedups.c
        pass
    else:
        scan_frames = _scan_c
        new_payload = _new_payload_c
        unmask_into = _unmask_into_c


def new_mask_key() -> bytes:
    """A fresh masking key from the operating system's secure random source."""
    return os.urandom(4)
