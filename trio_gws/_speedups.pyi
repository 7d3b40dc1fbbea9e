"""Type stub for the optional C extension built from ``_speedups.c``."""

from typing import Any, Callable, TypeVar, Union

_M = TypeVar("_M")

def apply_mask(data: Union[bytes, bytearray, memoryview], key: bytes,
               offset: int = 0) -> bytes: ...

def scan_frames(buf: Union[bytes, bytearray, memoryview], pos: int, expect_masked: bool,
                max_length: int, check_text: bool, factory: Callable[[Any, bytes], _M],
                text: Any, binary: Any, /) -> tuple[list[_M], int]: ...

def unmask_into(dest: bytes, offset: int, src: Union[bytes, bytearray, memoryview],
                start: int, length: int, key: Union[bytes, None], /) -> None: ...

def new_payload(n: int, /) -> bytes: ...
