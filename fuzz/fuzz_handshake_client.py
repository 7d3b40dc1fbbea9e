"""Fuzz target: the client's side of the opening handshake, response bytes to verdict.

Input: ``[flags] [split count] [split sizes...] [response bytes...]``; flags bits 0-1
pick the subprotocols offered, bits 2-4 the client's permessage-deflate config
(0: none offered), bits 5-6 the head limits. The request's key is the RFC 6455
example key (its accept value is ``ACCEPT``), so seeds can carry a matching answer.

The response goes through what ``_client._handshake`` calls: ``find_head_end`` over
the pieces, ``parse_head``, ``parse_status_line``, ``check_response`` and, when an
offer was made, ``accept_server_response``.

Invariants: only ``HandshakeError`` escapes; an accepted response is a 101 with our
accept value and at most one subprotocol, one we offered; accepted deflate
parameters are in range, within what we offered for our own window, and work: a
message compressed by either side inflates back on the other, several times over
(context takeover as agreed).
"""

from __future__ import annotations

import dataclasses

from _harness import Input, split

from trio_gws._config import Config
from trio_gws._deflate import DeflateParams, accept_server_response, client_offer
from trio_gws._deflate_codec import Compressor, Decompressor
from trio_gws._errors import HandshakeError
from trio_gws._handshake import ResponseHead as Response
from trio_gws._handshake import check_response, parse_status_line
from trio_gws._http import find_head_end, parse_head

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
SUBPROTOCOLS: tuple[tuple[str, ...], ...] = ((), ("chat",), ("v2.json", "chat"), ("a", "b"))
DEFLATE = (
    None,
    Config(compress_enabled=True),
    Config(compress_enabled=True, server_max_window_bits=15, client_max_window_bits=15),
    Config(compress_enabled=True, server_max_window_bits=8, client_max_window_bits=8,
           server_context_takeover=False, client_context_takeover=False),
    Config(compress_enabled=True, client_max_window_bits=9, client_context_takeover=False),
    Config(compress_enabled=True, server_max_window_bits=10, server_context_takeover=False),
)
LIMITS = ((8 * 1024, 16 * 1024, 100), (64, 256, 8), (24, 80, 2), (1, 4, 1))
SAMPLE = b'{"op": "update", "seq": 1, "data": "' + b"abcdefgh" * 40 + b'"}'


def read_head(pieces: list[bytes], config: Config) -> tuple[int, bytes] | None:
    buf = bytearray()
    for piece in [*pieces, None]:
        end = find_head_end(buf, config.max_request_line, config.max_header_bytes)
        if end >= 0:
            return end, bytes(buf)
        if piece is None:
            return None
        buf += piece
    return None


def check_deflate(params: DeflateParams, config: Config, message: bytes) -> None:
    for name in ("server_max_window_bits", "client_max_window_bits"):
        assert 8 <= getattr(params, name) <= 15, params
    assert params.client_max_window_bits <= config.client_max_window_bits, params
    if not config.client_context_takeover:
        assert params.client_no_context_takeover, params
    for sender_is_server in (True, False):
        compressor = Compressor(params, is_server=sender_is_server, level=1)
        decompressor = Decompressor(params, is_server=not sender_is_server,
                                    max_size=len(message) + 1)
        for data in (message, message[::-1], b"", message):
            payload = compressor.compress(data)
            assert decompressor.feed(payload) + decompressor.finish() == data


def check(data: bytes) -> None:
    source = Input(data)
    flags = source.byte()
    offer_protocols = SUBPROTOCOLS[flags & 3]
    deflate = DEFLATE[((flags >> 2) & 7) % len(DEFLATE)]
    max_line, max_head, max_count = LIMITS[(flags >> 5) & 3]
    config = dataclasses.replace(deflate if deflate is not None else Config(),
                                 max_request_line=max_line, max_header_bytes=max_head,
                                 max_header_count=max_count)
    offer = client_offer(config) if config.compress_enabled else None
    sizes = source.sizes()
    raw = source.rest()
    try:
        found = read_head(split(raw, sizes), config)
        if found is None:
            return
        end, buf = found
        start, headers = parse_head(buf[:end], config.max_header_count)
        status, reason = parse_status_line(start)
        assert 0 <= status <= 999 and start.startswith("HTTP/1.")
        subprotocol = check_response(Response(status, reason, headers), KEY, offer_protocols)
        assert status == 101
        accepts = headers.get_all("Sec-WebSocket-Accept")
        assert len(accepts) == 1 and accepts[0].strip() == ACCEPT
        assert subprotocol is None or subprotocol in offer_protocols
        answered = headers.get_all("Sec-WebSocket-Extensions")
        if offer is None:
            return
        params = accept_server_response(answered, config)
    except HandshakeError as exc:
        assert isinstance(exc.status, int)
        return
    if params is not None:
        check_deflate(params, config, SAMPLE + raw[:200])
