"""Just enough HTTP/1.1 (RFC 9110/9112) for the opening handshake: heads, not bodies.

The parser is strict and bounded: CRLF line endings, token header names, no obsolete
line folding, no control characters in values, and explicit limits on the start
line, the header block and the number of fields. Violations raise HandshakeError
with the status a server should answer (400, 414 or 431).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus
from urllib.parse import urlsplit

from ._errors import HandshakeError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Headers:
    """Header fields in arrival order, looked up case-insensitively.

    Every connection keeps its request's headers, so they are stored compactly: one
    flat list of name, value, name, value..., names interned (the same dozen names
    arrive on every connection), and no index: a handshake has a dozen fields and a
    handful of lookups, which a scan serves as fast.
    """

    __slots__ = ("_flat",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._flat: list[str] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._flat += (sys.intern(name), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        wanted = name.lower()
        flat = self._flat
        for i in range(0, len(flat), 2):
            if flat[i].lower() == wanted:
                return flat[i + 1]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order."""
        wanted = name.lower()
        flat = self._flat
        return [flat[i + 1] for i in range(0, len(flat), 2) if flat[i].lower() == wanted]

    def tokens(self, name: str) -> list[str]:
        """Comma-separated list elements of every ``name`` field, lower-cased."""
        return [
            part.strip().lower()
            for value in self.get_all(name)
            for part in value.split(",")
            if part.strip()
        ]

    def items(self) -> list[tuple[str, str]]:
        flat = self._flat
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._flat) // 2

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def header_items(
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | Headers | None,
) -> list[tuple[str, str]]:
    """Normalise the ways users pass extra headers into a list of pairs, validated."""
    if headers is None:
        return []
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in pairs:
        if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
            raise ValueError(f"invalid header name {name!r}")
        try:
            raw_value = value.encode("latin-1")  # what build_head will encode it with
        except UnicodeEncodeError:
            raise ValueError(f"value of header {name!r} is not latin-1") from None
        if _BAD_VALUE_CHAR.search(raw_value):
            raise ValueError(f"invalid character in value of header {name!r}")
    return pairs


def check_names(names: Sequence[str], what: str) -> None:
    """Names that go into a header as a list (subprotocols): a sequence, never one
    string (whose letters would each become a name), of distinct HTTP tokens
    (RFC 6455 4.1; a CR or LF among them would split the head)."""
    if isinstance(names, (str, bytes)):
        raise ValueError(f"{what} is a sequence of names, not one string: {names!r}")
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _TOKEN.fullmatch(
                name.encode("latin-1", "replace")):
            raise ValueError(f"invalid name in {what}: {name!r} (a name is an HTTP "
                             "token: letters, digits and !#$%&'*+-.^_`|~)")
        if name in seen:
            raise ValueError(f"{name!r} appears twice in {what}")
        seen.add(name)


def check_origins(origins: Sequence[str | None]) -> None:
    """Allowed origins as browsers send them in ``Origin`` (RFC 6454 6.2):
    ``scheme://host[:port]``, no path (not even ``/``), query or user; ``"null"``
    and None (no ``Origin`` header) too. One with a path would never match, and
    every browser would get a 403 with nothing saying why."""
    if isinstance(origins, (str, bytes)):
        raise ValueError("origins is a sequence of origins, not one string")
    for origin in origins:
        if origin is None or origin == "null":
            continue
        if not isinstance(origin, str):
            raise ValueError(f"an origin is a str (or None), got {origin!r}")
        parts = urlsplit(origin)
        try:
            parts.port  # noqa: B018 - raises on a port that is not one
        except ValueError:
            raise ValueError(f"origins: {origin!r} has a bad port") from None
        if (not parts.scheme or not parts.hostname or "@" in parts.netloc
                or origin.lower() != f"{parts.scheme}://{parts.netloc}".lower()):
            raise ValueError(f"origins: {origin!r} is not an origin as browsers send "
                             "it: scheme://host[:port], with no path (not even '/')")


def find_head_end(buf: bytes | bytearray, max_line: int, max_head: int) -> int:
    """Index just past the blank line ending the head, or -1 when more data is needed.

    Raises HandshakeError (414 or 431) as soon as the limits make completion impossible.
    """
    end = buf.find(b"\r\n\r\n")
    if end >= 0:
        end += 4
        first_line = buf.find(b"\r\n")
        if first_line > max_line:
            raise HandshakeError("request line too long", status=414)
        if end - first_line > max_head:
            raise HandshakeError("request header fields too large", status=431)
        return end
    first_line = buf.find(b"\r\n")
    if first_line < 0:
        # a trailing CR may be the start of the line's CRLF: it does not count
        if len(buf) - buf.endswith(b"\r") > max_line:
            raise HandshakeError("request line too long", status=414)
    elif first_line > max_line:
        raise HandshakeError("request line too long", status=414)
    elif len(buf) - first_line > max_head:
        raise HandshakeError("request header fields too large", status=431)
    return -1


def parse_head(head: bytes, max_count: int) -> tuple[str, Headers]:
    """Split a complete head (ending with the blank line) into start line and headers."""
    block = head[:-4]
    joined = block.replace(b"\r\n", b"")
    if b"\r" in joined or b"\n" in joined:
        raise HandshakeError("bare CR or LF in the HTTP head")
    lines = block.split(b"\r\n")
    start = lines[0]
    if len(lines) - 1 > max_count:
        raise HandshakeError(f"more than {max_count} header fields", status=431)
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            if line[:1] in (b" ", b"\t"):
                raise HandshakeError("obsolete header line folding")
            raise HandshakeError(f"malformed header line {line[:60]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE_CHAR.search(value):
            raise HandshakeError(f"control character in header {name.decode('ascii')!r}")
        headers.add(name.decode("ascii"), value.decode("latin-1"))
    return start.decode("latin-1"), headers


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def build_head(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [start_line]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
