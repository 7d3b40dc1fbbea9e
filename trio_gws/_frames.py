"""Frame encoding (RFC 6455 section 5.2) and the control-frame events of the reader.

Encoding is one function that returns the complete frame as one bytes object, so the
connection sends every frame with a single ``send_all`` and frames can never
interleave.
"""

from __future__ import annotations

import struct

from ._mask import Buffer, apply_mask, new_mask_key
from ._types import Opcode

FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
MASK_BIT = 0x80

MAX_CONTROL_PAYLOAD = 125

_pack_short = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


#: Every reserved bit of the first header byte; an extension owns some of them.
RSV_BITS = RSV1 | RSV2 | RSV3


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv: int = 0,
                 mask_key: bytes | None = None) -> bytes:
    """The header of a frame: first byte, minimal length encoding, optional mask key.

    ``rsv`` is the reserved bits to set, as they sit in the first byte (``RSV1``...).
    """
    first = opcode | (FIN if fin else 0) | rsv
    mask_flag = MASK_BIT if mask_key is not None else 0
    if length < 126:
        header = _pack_short(first, mask_flag | length)
    elif length < 0x10000:
        header = _pack_medium(first, mask_flag | 126, length)
    else:
        header = _pack_long(first, mask_flag | 127, length)
    if mask_key is not None:
        header += mask_key
    return header


def encode_frame(opcode: int, payload: Buffer, *, fin: bool = True, rsv: int = 0,
                 mask: bool = False) -> bytes:
    """A whole frame as bytes; masked with a fresh random key when ``mask`` (client side)."""
    if mask:
        key = new_mask_key()
        return frame_header(opcode, len(payload), fin=fin, rsv=rsv, mask_key=key) + apply_mask(
            payload, key
        )
    return frame_header(opcode, len(payload), fin=fin, rsv=rsv) + payload


def check_control_payload(opcode: Opcode, payload: Buffer) -> None:
    """Control frames carry at most 125 bytes (section 5.5); say so before sending."""
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"{opcode.name} payload is {len(payload)} bytes, at most {MAX_CONTROL_PAYLOAD}"
        )


class Ping:
    """A ping frame was received."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    """A pong frame was received."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class CloseReceived:
    """A valid close frame was received (code 1005 when it carried none)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: bytes) -> None:
        self.code = code
        self.reason = reason


class StreamWhole:
    """A data message that arrived whole, in one read (streaming mode): its handler
    gets a finished stream without a task of its own."""

    __slots__ = ("opcode", "data")

    def __init__(self, opcode: Opcode, data: bytes) -> None:
        self.opcode = opcode
        self.data = data

    def __repr__(self) -> str:
        return f"StreamWhole({self.opcode.name}, {len(self.data)} bytes)"


class StreamStart:
    """A data message begins (streaming mode: ``EventHandler.on_stream``)."""

    __slots__ = ("opcode",)

    def __init__(self, opcode: Opcode) -> None:
        self.opcode = opcode

    def __repr__(self) -> str:
        return f"StreamStart({self.opcode.name})"


class StreamData:
    """More of the message being streamed: decoded, checked, never empty."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"StreamData({len(self.data)} bytes)"


class StreamEnd:
    """The message being streamed is complete; ``data`` is its last piece (may be empty)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"StreamEnd({len(self.data)} bytes)"
