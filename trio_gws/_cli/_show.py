"""How the command line shows what happens: pure functions from events to text.

Nothing here does I/O, so the exact wording is tested without a terminal. Whatever a
peer sends is shown with its control characters escaped: a message can neither break
the one-line-per-event layout nor send escape sequences to the user's terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from .._errors import HandshakeError
from .._types import CloseCode, Opcode

#: Bytes of a binary message shown in hex.
PREVIEW_BYTES = 16
#: Characters of a rejecting response's body shown.
MAX_BODY_SHOWN = 2000

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) escaped, e.g. ``\\n``, ``\\x1b``."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def hex_preview(data: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes in hex, ``…`` when there are more."""
    shown = data[:limit].hex(" ")
    return shown + (" …" if len(data) > limit else "")


def describe_message(opcode: Opcode, data: bytes, text: str | None = None) -> str:
    """One line for a received data message: its type, size and content."""
    kind = "text" if opcode == Opcode.TEXT else "binary"
    head = f"< {kind} ({len(data)} B)"
    if not data:
        return head
    if opcode != Opcode.TEXT:
        return f"{head}: {hex_preview(data)}"
    if text is None:
        text = data.decode("utf-8", "replace")
    return f"{head}: {printable(text)}"


def close_code_name(code: int) -> str:
    """``1000 (normal)``, ``1009 (message too big)``; an unnamed code as itself."""
    try:
        name = CloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        if 4000 <= code <= 4999:
            return f"{code} (application's own)"
        return str(code)
    return f"{code} ({name})"


def describe_close(code: int, reason: bytes) -> str:
    """``1000 (normal)``, with the reason when there is one."""
    shown = close_code_name(code)
    if reason:
        shown += f', reason "{printable(reason.decode("utf-8", "replace"))}"'
    return shown


def clean_close(code: int) -> bool:
    """A close that says all went well: 1000, 1001, or no code at all (1005)."""
    return code in (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS)


def describe_refusal(error: HandshakeError) -> list[str]:
    """The lines that explain a failed opening handshake: the HTTP status and body
    when the server answered, else what went wrong."""
    if not error.status:
        return [f"handshake failed: {error}"]
    if error.status == 101:
        return [f"handshake failed: the server accepted, but {error}"]
    lines = [f"the server refused the handshake: {error}"]
    body = error.body.decode("utf-8", "replace").strip()
    if body:
        if len(body) > MAX_BODY_SHOWN:
            body = body[:MAX_BODY_SHOWN] + " …"
        lines.append("response body:")
        lines.extend("  " + printable(line) for line in body.splitlines())
    return lines


def redact(url: str) -> str:
    """``url`` with the password of its user:password part (if any) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed: shown in an error message as it was given
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def describe_connected(url: str, subprotocol: str | None, compressed: bool,
                       extra: Sequence[str] = ()) -> str:
    """The line shown once the handshake is done."""
    details = [f"subprotocol {subprotocol}"] if subprotocol else []
    if compressed:
        details.append("permessage-deflate")
    details.extend(extra)
    return f"* connected to {url}" + (f" ({', '.join(details)})" if details else "")
