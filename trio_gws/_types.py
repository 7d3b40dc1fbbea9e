"""Small value types shared by every layer: opcodes, close codes and messages."""

from __future__ import annotations

import enum
from typing import Union


class Opcode(enum.IntEnum):
    """Frame opcodes of RFC 6455 section 5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        return self >= 0x8


class CloseCode(enum.IntEnum):
    """Close codes defined by RFC 6455 section 7.4.1 (and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent on the wire
    ABNORMAL = 1006  # never sent on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never sent on the wire


class Message:
    """One complete data message as the handler receives it.

    ``data`` is the payload after reassembly and decompression. ``text`` decodes it
    lazily (text messages were already validated when ``check_text_encoding`` is on,
    and the reader hands over the decoded string when it had to decode anyway).
    """

    __slots__ = ("opcode", "data", "_text")

    def __init__(self, opcode: Opcode, data: bytes, text: str | None = None) -> None:
        self.opcode = opcode
        self.data = data
        self._text = text

    @property
    def text(self) -> str:
        """The payload as a string (strict UTF-8 decoding)."""
        if self._text is None:
            self._text = self.data.decode("utf-8")
        return self._text

    @property
    def is_text(self) -> bool:
        return self.opcode == Opcode.TEXT

    def __repr__(self) -> str:
        shown = self.data[:32]
        more = "..." if len(self.data) > 32 else ""
        return f"Message({self.opcode.name}, {shown!r}{more}, {len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.opcode == other.opcode and self.data == other.data

    __hash__ = None  # type: ignore[assignment]


#: What a message can be written from.
Payload = Union[bytes, bytearray, memoryview, str]


def data_opcode(opcode: Opcode | int) -> Opcode:
    """``opcode`` as an Opcode, which must be TEXT or BINARY (a message's)."""
    if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
        return opcode  # the common case, without the enum lookup
    opcode = Opcode(opcode)
    if opcode is not Opcode.TEXT and opcode is not Opcode.BINARY:
        raise ValueError(f"messages are TEXT or BINARY, not {opcode.name}")
    return opcode


def as_bytes(payload: Payload) -> bytes | bytearray | memoryview:
    """A payload as bytes-like: ``str`` UTF-8 encoded, views made byte-flat."""
    if type(payload) is bytes:
        return payload  # the common case, first
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, memoryview) and (payload.nbytes != len(payload)
                                            or not payload.c_contiguous):
        # A view of wider items (array("i"), 2-D...): frame lengths count bytes, not
        # items; a strided view cannot be sent or joined as it is.
        return payload.cast("B") if payload.c_contiguous else payload.tobytes()
    return payload
