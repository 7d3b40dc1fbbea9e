"""Type stub for the optional C extension built from ``_speedups.c``."""

from typing import Union

def apply_mask(data: Union[bytes, bytearray, memoryview], key: bytes,
               offset: int = 0) -> bytes: ...
