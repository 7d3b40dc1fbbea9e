"""Fuzz target: close frame payloads (RFC 6455 5.5.1 and 7.4).

Input: the payload itself.

Invariants: ``parse_close_payload`` raises only ``ProtocolError`` (1002) or
``InvalidTextError`` (1007), exactly when the independent rules below say the payload
is invalid; a valid one gives its code (1005 when empty) and reason, and
``build_close_payload`` turns them back into the same bytes.
"""

from __future__ import annotations

import struct

from trio_gws._lifecycle import build_close_payload, is_valid_close_code, parse_close_payload
from trio_gws._errors import InvalidTextError, ProtocolError

# RFC 6455 7.4.1 plus the IANA registry (1012-1014); 3000-4999 for applications.
_REGISTERED = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def expected(payload: bytes) -> tuple[int, bytes] | int:
    """(code, reason) of a valid payload, else the close code its failure deserves."""
    if not payload:
        return 1005, b""
    if len(payload) == 1:
        return 1002
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _REGISTERED and not 3000 <= code <= 4999:
        return 1002
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return 1007
    return code, payload[2:]


def check(data: bytes) -> None:
    want = expected(data)
    try:
        got: tuple[int, bytes] | int = parse_close_payload(data)
    except InvalidTextError as exc:
        assert exc.close_code == 1007
        got = 1007
    except ProtocolError as exc:
        assert exc.close_code == 1002
        got = 1002
    assert got == want, (data, got, want)
    if isinstance(got, tuple):
        code, reason = got
        assert is_valid_close_code(code) or code == 1005
        if len(reason) <= 123:
            assert build_close_payload(code, reason) == data
            assert build_close_payload(code, reason.decode("utf-8")) == data
