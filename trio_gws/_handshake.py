"""The WebSocket opening handshake (RFC 6455 section 4), both sides, without I/O.

The server half validates an upgrade request and builds the 101 response or a real
HTTP error response; the client half builds the request and validates the server's
answer. Extension negotiation lives in ``_deflate``; this module only carries the
header values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import HandshakeError
from ._http import Headers, build_head, status_phrase

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HTTP_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_ABSOLUTE_FORM = re.compile(r"(?i)(?:http|https|ws|wss)://[^/?#\s]+")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
VERSION = "13"


@dataclass(slots=True)  # every connection keeps one
class Request:
    """The handshake request as the server received it (or the client sent it)."""

    method: str
    target: str
    headers: Headers

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (without ``?``), empty when there is none."""
        return self.target.partition("?")[2]


@dataclass
class ResponseHead:
    """An HTTP response as the client side of the handshake received it."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""


def accept_value(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (section 4.2.2, step 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 bytes from the OS's secure random source."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _single(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise HandshakeError(f"{name} header repeated")
    return values[0] if values else None


# -- server side -------------------------------------------------------------------


def parse_request_line(line: str) -> tuple[str, str]:
    """(method, target) of a request line ``METHOD target HTTP/1.1``.

    The target is origin-form (``/path?query``); absolute-form (``http://host/path``),
    which RFC 9112 section 3.2.2 obliges servers to accept, is reduced to its path.
    400 for anything else (a method that is not a token, a target with a character
    that is not visible ASCII), 505 for another HTTP/1.x or 2+ version.
    """
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HandshakeError(f"malformed request line {line[:80]!r}")
    method, target, version = parts
    # RFC 9112 3: the method is a token; the target (RFC 3986) is visible ASCII, so no
    # control or non-ASCII character reaches the application's path.
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target):
        raise HandshakeError(f"malformed request line {line[:80]!r}")
    if not _HTTP_VERSION.fullmatch(version):
        raise HandshakeError(f"malformed HTTP version {version[:20]!r}")
    if version != "HTTP/1.1":
        raise HandshakeError(f"unsupported HTTP version {version[:20]!r}, HTTP/1.1 required",
                             status=505)
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute:
        target = target[absolute.end():] or "/"
        if target[0] == "?":
            target = "/" + target
    if not target.startswith("/"):
        raise HandshakeError(f"request target must be a path, got {target[:80]!r}")
    return method, target


def check_request(request: Request) -> str:
    """Validate an upgrade request; return its Sec-WebSocket-Key.

    The status of the HandshakeError follows the failure: 405 for a method other than
    GET, 426 (with ``Sec-WebSocket-Version: 13``) for a missing or unsupported version,
    426 for a plain HTTP request without ``Upgrade: websocket``, 400 otherwise.
    """
    if request.method != "GET":
        raise HandshakeError(f"method {request.method} not allowed, use GET", status=405,
                             headers=[("Allow", "GET")])
    headers = request.headers
    if "websocket" not in headers.tokens("Upgrade"):
        raise HandshakeError("missing 'Upgrade: websocket' header", status=426,
                             headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                      ("Sec-WebSocket-Version", VERSION)])
    if "upgrade" not in headers.tokens("Connection"):
        raise HandshakeError("missing 'Connection: Upgrade' header")
    host = _single(headers, "Host")
    if not host:
        raise HandshakeError("missing Host header")
    version = _single(headers, "Sec-WebSocket-Version")
    if version != VERSION:
        what = "missing" if version is None else f"unsupported ({version[:20]!r})"
        raise HandshakeError(f"Sec-WebSocket-Version {what}, only 13 is supported",
                             status=426, headers=[("Sec-WebSocket-Version", VERSION)])
    key = _single(headers, "Sec-WebSocket-Key")
    if key is None:
        raise HandshakeError("missing Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def choose_subprotocol(headers: Headers, supported: Sequence[str]) -> str | None:
    """The first of our ``supported`` subprotocols (our preference order) the client offered."""
    if not supported:
        return None
    offered = {token for token in (t.strip() for v in headers.get_all("Sec-WebSocket-Protocol")
                                   for t in v.split(",")) if token}
    for name in supported:
        if name in offered:
            return name
    return None


def build_accept_response(
    key: str,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The 101 Switching Protocols response."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_value(key)),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    headers.extend(extra_headers)
    return build_head("HTTP/1.1 101 Switching Protocols", headers)


def build_error_response(
    status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = (),
    *, head_only: bool = False,
) -> bytes:
    """A complete HTTP response that closes the connection (one request per
    connection); ``head_only`` leaves the body out (the answer to a HEAD request),
    its Content-Length still the body's."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    all_headers = []
    connection = ["close"]
    for name, value in headers:
        lowered = name.lower()
        if lowered == "connection":
            connection.insert(0, value)  # e.g. 426's "Upgrade": one header, both tokens
        elif lowered not in ("content-length", "transfer-encoding"):
            all_headers.append((name, value))  # ours is the framing that matches the body
    if not any(name.lower() == "content-type" for name, _ in all_headers):
        all_headers.append(("Content-Type", "text/plain; charset=utf-8"))
    all_headers.append(("Content-Length", str(len(body))))
    all_headers.append(("Connection", ", ".join(connection)))
    head = build_head(f"HTTP/1.1 {status} {status_phrase(status)}", all_headers)
    return head if head_only else head + body


# -- client side -------------------------------------------------------------------


def build_request(
    host: str,
    target: str,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    extensions: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The client's upgrade request."""
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", VERSION),
    ]
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    headers.extend(extra_headers)
    return build_head(f"GET {target} HTTP/1.1", headers)


def parse_status_line(line: str) -> tuple[int, str]:
    """(status, reason) of a response status line."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if (not version.startswith("HTTP/1.") or len(code) != 3 or not code.isascii()
            or not code.isdigit()):
        raise HandshakeError(f"malformed status line {line[:80]!r}", status=0)
    return int(code), reason


def check_response(response: ResponseHead, key: str, subprotocols: Sequence[str]) -> str | None:
    """Validate the server's answer to our upgrade request; return the subprotocol.

    Extension headers are validated by the caller, who knows what it offered.
    """

    def fail(message: str) -> HandshakeError:
        return HandshakeError(message, status=response.status, headers=response.headers.items(),
                              body=response.body)

    if response.status != 101:
        raise fail(f"server answered {response.status} {response.reason}, expected 101")
    headers = response.headers
    if "websocket" not in headers.tokens("Upgrade"):
        raise fail("response lacks 'Upgrade: websocket'")
    if "upgrade" not in headers.tokens("Connection"):
        raise fail("response lacks 'Connection: Upgrade'")
    accepts = headers.get_all("Sec-WebSocket-Accept")
    if len(accepts) != 1 or accepts[0].strip() != accept_value(key):
        raise fail("missing or wrong Sec-WebSocket-Accept")
    chosen = headers.get_all("Sec-WebSocket-Protocol")
    if not chosen:
        return None
    if len(chosen) > 1 or "," in chosen[0]:
        raise fail("server chose more than one subprotocol")
    name = chosen[0].strip()
    if name not in subprotocols:
        raise fail(f"server chose subprotocol {name!r}, which we did not offer")
    return name
