"""Fuzz target: the server's side of the opening handshake, bytes to verdict.

Input: ``[flags] [split count] [split sizes...] [request bytes...]``; flags bits 0-1
pick the head limits from ``LIMITS``, bits 2-3 the server's subprotocols, bits 4-6
its permessage-deflate config (0: off).

The request goes through what ``Server._handshake`` calls, in its order:
``find_head_end`` on a buffer growing by the given pieces, ``parse_head``,
``parse_request_line``, ``check_request``, ``choose_subprotocol``,
``negotiate_server``.

Invariants: only ``HandshakeError`` escapes, with a status a server may answer
(400/405/414/426/431/505) and an error response that is itself a valid HTTP head;
where the head ends (or which limit it breaks) does not depend on the pieces; the
buffer awaiting a head's end never exceeds the limits plus one piece; an accepted
head respects every limit; an accepted request line has a token method and a target
of visible ASCII; parsed headers are well-formed (token names, values
without controls) and survive a ``build_head`` round trip; ``Headers`` lookups agree
with each other whatever the case; an accepted request has a path target and a
16-byte key, and the 101 response built for it passes the client's own checks.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Sequence

from _harness import Input, split
from fuzz_extensions import agree

from trio_gws._config import Config
from trio_gws._deflate import accept_server_response, negotiate_server
from trio_gws._errors import HandshakeError
from trio_gws._handshake import ResponseHead as Response
from trio_gws._handshake import (
    Request,
    build_accept_response,
    build_error_response,
    check_request,
    check_response,
    choose_subprotocol,
    parse_request_line,
    parse_status_line,
)
from trio_gws._http import Headers, build_head, find_head_end, parse_head

#: (max_request_line, max_header_bytes, max_header_count)
LIMITS = ((8 * 1024, 16 * 1024, 100), (64, 256, 8), (24, 80, 2), (1, 4, 1))
SUBPROTOCOLS: tuple[tuple[str, ...], ...] = ((), ("chat",), ("v2.json", "chat"), ("a", "b", "c"))
DEFLATE = (
    None,
    Config(compress_enabled=True),
    Config(compress_enabled=True, server_max_window_bits=15, client_max_window_bits=15),
    Config(compress_enabled=True, server_max_window_bits=8, client_max_window_bits=8,
           server_context_takeover=False, client_context_takeover=False),
    Config(compress_enabled=True, server_max_window_bits=9, client_context_takeover=False),
)
SERVER_STATUSES = frozenset({400, 405, 414, 426, 431, 505})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VISIBLE = re.compile(r"[\x21-\x7e]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def head_end(pieces: Sequence[bytes], max_line: int, max_head: int) -> int | HandshakeError:
    """Where the head ends, or the limit error, feeding ``pieces`` as the server reads.

    Like the server it checks before every read (so also with an empty buffer).
    """
    buf = bytearray()
    for piece in [*pieces, None]:
        try:
            end = find_head_end(buf, max_line, max_head)
        except HandshakeError as exc:
            return exc
        if end >= 0:
            return end
        # Bounded buffering: what waits is within the limits (plus a trailing CR).
        assert len(buf) <= max_line + max_head + 1, (len(buf), max_line, max_head)
        if piece is None:
            return -1
        buf += piece
    raise AssertionError("unreachable")


def check_headers(headers: Headers, start: str) -> None:
    """Well-formed fields, consistent lookups, and a lossless build/parse round trip."""
    items = headers.items()
    assert len(headers) == len(items) == len(list(headers))
    for name, value in items:
        assert _TOKEN.fullmatch(name), name
        assert not _BAD_VALUE.search(value), value
        assert value == value.strip(" \t"), value
        wanted = [v for n, v in items if n.lower() == name.lower()]
        for spelling in (name, name.lower(), name.upper(), name.swapcase()):
            assert headers.get_all(spelling) == wanted
            assert headers.get(spelling) == wanted[0]
            assert spelling in headers
        for token in headers.tokens(name):
            assert token and token == token.strip().lower() and "," not in token
    assert "\r" not in start and "\n" not in start
    again_start, again = parse_head(build_head(start, items), len(items))
    assert (again_start, again.items()) == (start, items)


def check_error(exc: HandshakeError) -> None:
    assert exc.status in SERVER_STATUSES, (exc.status, exc)
    response = build_error_response(exc.status, str(exc), exc.headers)
    end = response.index(b"\r\n\r\n") + 4
    start, headers = parse_head(response[:end], 100)
    assert parse_status_line(start)[0] == exc.status
    assert headers.get("Content-Length") == str(len(response) - end)


def handshake(request: bytes, end: int, config: Config) -> bytes:
    """Server._handshake's checks on a complete head: the 101 response, or raises."""
    start, headers = parse_head(request[:end], config.max_header_count)
    assert len(headers) <= config.max_header_count
    check_headers(headers, start)
    method, target = parse_request_line(start)
    # RFC 9112 3: the method is a token, the target visible ASCII (RFC 3986 characters).
    assert _TOKEN.fullmatch(method), method
    assert target.startswith("/") and _VISIBLE.fullmatch(target), target
    key = check_request(Request(method, target, headers))
    assert method == "GET"
    assert len(base64.b64decode(key, validate=True)) == 16
    subprotocol = choose_subprotocol(headers, config.subprotocols)
    if subprotocol is not None:
        assert subprotocol in config.subprotocols
        offered = ",".join(headers.get_all("Sec-WebSocket-Protocol")).split(",")
        assert subprotocol in [t.strip() for t in offered]
    extensions = None
    agreed = None
    if config.compress_enabled:
        agreed = negotiate_server(headers.get_all("Sec-WebSocket-Extensions"), config)
        if agreed is not None:
            extensions = agreed[1]
    response = build_accept_response(key, subprotocol=subprotocol, extensions=extensions)
    # The client's checks accept what we answered (with a client as permissive as
    # the offer allows: every window, takeover as the server decided).
    resp_start, resp_headers = parse_head(response, 100)
    status, reason = parse_status_line(resp_start)
    offered_protocols = [subprotocol] if subprotocol is not None else []
    assert check_response(Response(status, reason, resp_headers), key,
                          offered_protocols) == subprotocol
    if agreed is not None:
        client = Config(compress_enabled=True, client_max_window_bits=15)
        agree(agreed[0], accept_server_response(
            resp_headers.get_all("Sec-WebSocket-Extensions"), client))
    return response


def check(data: bytes) -> None:
    source = Input(data)
    flags = source.byte()
    max_line, max_head, max_count = LIMITS[flags & 3]
    deflate = DEFLATE[(flags >> 4) % len(DEFLATE)]
    config = dataclasses.replace(
        deflate if deflate is not None else Config(),
        max_request_line=max_line, max_header_bytes=max_head, max_header_count=max_count,
        subprotocols=SUBPROTOCOLS[(flags >> 2) & 3],
    )
    sizes = source.sizes()
    request = source.rest()

    whole = head_end([request], max_line, max_head)
    pieces = head_end(split(request, sizes), max_line, max_head)
    if isinstance(whole, HandshakeError):
        assert isinstance(pieces, HandshakeError) and pieces.status == whole.status, (
            whole, pieces)
        check_error(whole)
        return
    assert pieces == whole, (pieces, whole)
    if whole < 0:
        assert b"\r\n\r\n" not in request
        return
    assert whole == request.index(b"\r\n\r\n") + 4
    first_line = request.index(b"\r\n")
    assert first_line <= max_line and whole - first_line <= max_head
    try:
        handshake(request, whole, config)
    except HandshakeError as exc:
        check_error(exc)
