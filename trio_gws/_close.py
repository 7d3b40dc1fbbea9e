"""Close frame payloads (RFC 6455 sections 5.5.1 and 7.4)."""

from __future__ import annotations

import struct

from ._errors import InvalidTextError, ProtocolError

#: Codes an endpoint may put in a close frame. 1004 is reserved, 1005/1006/1015 are
#: only for reporting, 1016-2999 are unassigned protocol codes; 3000-4999 belong to
#: libraries, frameworks and applications.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

MAX_REASON_BYTES = 123  # 125 bytes of control payload minus the 2-byte code


def is_valid_close_code(code: int) -> bool:
    """True for codes that may appear on the wire."""
    return code in _SENDABLE or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int, bytes]:
    """Return (code, reason) of a received close frame; 1005 when it carries no code.

    Raises ProtocolError (1002) for a 1-byte payload or an invalid code, and
    InvalidTextError (1007) when the reason is not UTF-8.
    """
    if not payload:
        return 1005, b""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of 1 byte")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    reason = payload[2:]
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTextError("close reason is not valid UTF-8") from None
    return code, reason


def build_close_payload(code: int, reason: bytes | str = b"") -> bytes:
    """The payload of a close frame we send; validates what the application passed."""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    if code == 1005 and not reason:
        return b""  # "no status": an empty close frame
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    if len(reason) > MAX_REASON_BYTES:
        raise ValueError(f"close reason is {len(reason)} bytes, at most {MAX_REASON_BYTES}")
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("close reason must be valid UTF-8") from None
    return struct.pack("!H", code) + reason
