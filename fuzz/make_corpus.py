"""Build the committed seed corpora (fuzz/corpus/<target>/) from real traffic shapes.

Real traffic comes from two independent implementations talking to each other in
memory: the ``websockets`` library's sans-I/O client and server (handshakes, every
frame kind, fragmentation, compression under several negotiated parameter sets) and
trio-gws's own request/response builders and compressor; a few shapes browsers and
test suites send (Chrome's and Firefox's requests, Autobahn's deflate offers, its
invalid UTF-8 and framing cases) are written out by hand. Each seed is a complete
target input, options bytes included (see each target's docstring).

Run ``python fuzz/make_corpus.py`` to add new shapes (existing files stay, among them
inputs promoted by ``make fuzz-merge``); with ``--clean`` after changing an input
layout, which wipes every seed folder first. Mask keys, handshake keys and the Date header are made deterministic so
that the same code gives the same files.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import secrets
import shutil
import struct
import sys
import zlib
from collections.abc import Iterator, Sequence
from functools import partial

import _harness  # noqa: F401  (sys.path for helpers)
from helpers import build_frame

from trio_gws._config import Config
from trio_gws._deflate import DeflateParams, client_offer, negotiate_server
from trio_gws._deflate_codec import Compressor
from trio_gws._handshake import build_accept_response, build_error_response, build_request

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
RFC_KEY = b"the sample nonce"  # base64: dGhlIHNhbXBsZSBub25jZQ== (RFC 6455 1.3)
_rng = random.Random(6455)


def _token_bytes(n: int | None = None) -> bytes:
    # websockets draws mask keys (4) and handshake keys (16) from here.
    if n == 16:
        return RFC_KEY
    return bytes(_rng.randrange(256) for _ in range(n or 32))


secrets.token_bytes = _token_bytes  # type: ignore[assignment]
email.utils.formatdate = lambda *a, **k: "Sun, 06 Nov 1994 08:49:37 GMT"  # websockets' Date

from websockets.client import ClientProtocol  # noqa: E402
from websockets.extensions.permessage_deflate import (  # noqa: E402
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request, Response  # noqa: E402
from websockets.server import ServerProtocol  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402

SPLITS: tuple[tuple[int, ...], ...] = ((), (1, 1, 1), (2, 0, 7, 3), (5, 130, 1))


# -- real conversations ---------------------------------------------------------------


def connect(offer: ClientPerMessageDeflateFactory | None, subprotocols: Sequence[str] = (),
            server_deflate: ServerPerMessageDeflateFactory | None = None,
            ) -> tuple[ClientProtocol, ServerProtocol, bytes, bytes]:
    """A websockets client and server after their handshake, and the two heads."""
    client = ClientProtocol(parse_uri("ws://example.com:8080/chat?room=1"),
                            extensions=[offer] if offer else None,
                            subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
                            max_size=None)
    request = client.connect()
    client.send_request(request)
    request_bytes = b"".join(client.data_to_send())
    server = ServerProtocol(extensions=[server_deflate or ServerPerMessageDeflateFactory()],
                            subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
                            max_size=None)
    server.receive_data(request_bytes)
    received = server.events_received()[0]
    assert isinstance(received, Request)
    response = server.accept(received)
    server.send_response(response)
    response_bytes = b"".join(server.data_to_send())
    client.receive_data(response_bytes)
    answer = client.events_received()[0]
    assert isinstance(answer, Response) and answer.status_code == 101
    return client, server, request_bytes, response_bytes


def converse(side: ClientProtocol | ServerProtocol, script: str) -> bytes:
    """The frames ``side`` sends for one of the scripted conversations."""
    text = "Hello, world! κόσμε 🌍 " * 3
    json = '{"type":"update","id":%d,"payload":{"price":101.25,"qty":3,"tags":["a","b"]}}'
    if script == "kinds":
        side.send_text(text.encode())
        side.send_binary(bytes(range(256)))
        side.send_ping(b"keepalive")
        side.send_pong(b"keepalive")
        side.send_text(b"")
        side.send_binary(b"x" * 300)
        side.send_close(1000, "bye")
    elif script == "fragments":
        side.send_text("κόσ".encode()[:3], fin=False)  # a character split across frames
        side.send_ping(b"in between")
        side.send_continuation("κόσ".encode()[3:] + b"me", fin=False)
        side.send_continuation(b"", fin=False)
        side.send_continuation(b"!", fin=True)
        side.send_binary(b"\x00\x01", fin=False)
        side.send_continuation(b"\x02" * 200, fin=True)
        side.send_close(1001, "going away")
    elif script == "json":
        for i in range(4):
            side.send_text((json % i).encode())
        side.send_text((json % 9).encode()[:20], fin=False)
        side.send_continuation((json % 9).encode()[20:], fin=True)
        side.send_close()
    else:
        raise ValueError(script)
    return b"".join(side.data_to_send())


def reader_seed(server: bool, check_text: bool, max_index: int, params: DeflateParams | None,
                split_sizes: Sequence[int], stream: bytes) -> bytes:
    flags = (server and 1) | (check_text and 2) | (max_index << 5)
    windows = 0
    if params is not None:
        flags |= 4 | (params.server_no_context_takeover and 8) | (
            params.client_no_context_takeover and 16)
        windows = (params.server_max_window_bits - 8) | ((params.client_max_window_bits - 8) << 3)
    return bytes([flags, windows, len(split_sizes), *split_sizes]) + stream


def _params(client: ClientProtocol) -> DeflateParams | None:
    if not client.extensions:
        return None
    ext = client.extensions[0]
    assert isinstance(ext, PerMessageDeflate)
    return DeflateParams(ext.remote_no_context_takeover, ext.local_no_context_takeover,
                         ext.remote_max_window_bits or 15, ext.local_max_window_bits or 15)


OFFERS: list[ClientPerMessageDeflateFactory | None] = [
    None,
    ClientPerMessageDeflateFactory(),
    ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                   client_no_context_takeover=True),
    ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
    ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9,
                                   client_no_context_takeover=True),
]


def reader_seeds() -> Iterator[bytes]:
    n = 0
    for offer in OFFERS:
        for script in ("kinds", "fragments", "json"):
            client, server, _, _ = connect(offer)
            params = _params(client)
            from_client = converse(client, script)
            from_server = converse(server, script)
            for server_side, stream in ((True, from_client), (False, from_server)):
                sizes = SPLITS[n % len(SPLITS)]
                n += 1
                yield reader_seed(server_side, True, 6, params, sizes, stream)
                if script == "kinds":
                    yield reader_seed(server_side, False, 2 + n % 3, params, (), stream)
    yield from reader_hand_seeds()


def _zlib_message(data: bytes, finish: bool) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    if finish:  # a sender that ends the stream (BFINAL) and adds the 0x00 of 7.2.3.3
        return z.compress(data) + z.flush(zlib.Z_FINISH) + b"\x00"
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def reader_hand_seeds() -> Iterator[bytes]:
    """Frames our own code sends, Autobahn's invalid cases, and unusual but legal ones."""
    for server in (True, False):
        # zero mask keys keep masked payloads readable to the fuzzer's mutations
        frame = partial(build_frame, mask=server, key=b"\x00\x00\x00\x00")
        for bits in (8, 9, 15):
            params = DeflateParams(False, False, bits, bits)
            compressor = Compressor(params, is_server=not server, level=1)
            stream = b"".join(frame(1, compressor.compress(b"compress me " * 20),
                                          rsv=4) for _ in range(3))
            yield reader_seed(server, True, 5, params, (3, 1), stream)
        params = DeflateParams(True, True, 15, 15)
        stream = (frame(2, _zlib_message(b"finished " * 30, True), rsv=4)
                  + frame(1, b"\x00", rsv=4)  # an empty compressed message
                  + frame(1, _zlib_message(b"a" * 2000, False)[:5], rsv=4, fin=False)
                  + frame(0, _zlib_message(b"a" * 2000, False)[5:]))
        yield reader_seed(server, True, 4, params, (), stream)
        # after the final block only one 0x00 may follow (RFC 7692 7.2.3.3)
        yield reader_seed(server, True, 4, params, (),
                          frame(1, _zlib_message(b"end", True) + b"\x00", rsv=4))
        # a bomb: 2 KiB that inflates to 1 MiB, against a 64 KiB limit
        yield reader_seed(server, True, 6, params, (),
                          frame(2, _zlib_message(b"\x00" * 2**20, False), rsv=4))
        invalid_utf8 = "κόσμε".encode() + b"\xed\xa0\x80edited"
        cases = [
            frame(1, invalid_utf8),
            frame(1, invalid_utf8[:7], fin=False) + frame(0, invalid_utf8[7:]),
            frame(1, b"x", rsv=2),
            frame(3, b""),
            frame(0xB, b""),
            frame(9, b"x" * 126),
            frame(9, b"frag", fin=False),
            frame(0, b"nothing to continue"),
            frame(1, b"a", fin=False) + frame(1, b"b"),
            frame(8, b"\x03"),
            frame(8, struct.pack("!H", 1005)),
            frame(8, struct.pack("!H", 3000) + b"\xff"),
            frame(2, b"long form", length_bytes=8) + frame(2, b"x" * 70, length_bytes=2),
            frame(2, b"", length=2**63),
            frame(2, b"x" * 200, mask=not server, key=b"\x01\x02\x03\x04"),
        ]
        for i, stream in enumerate(cases):
            yield reader_seed(server, True, 5, None, SPLITS[i % len(SPLITS)], stream)


# -- handshakes -----------------------------------------------------------------------


CHROME = (b"GET /socket?token=abc HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
          b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux "
          b"x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
          b"Upgrade: websocket\r\nOrigin: https://example.com\r\nSec-WebSocket-Version: 13\r\n"
          b"Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
FIREFOX = (b"GET /chat HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: Mozilla/5.0 (X11; "
           b"Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com:8080\r\n"
           b"Sec-WebSocket-Protocol: chat, superchat\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: keep-alive, Upgrade\r\n"
           b"Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: websocket\r\nSec-Fetch-Site: same-origin\r\n"
           b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\n\r\n")
PLAIN_HTTP = (b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n"
              b"Accept: */*\r\n\r\n")
ABSOLUTE = (b"GET http://example.com/chat?x=1 HTTP/1.1\r\nHost: example.com\r\n"
            b"Upgrade: WebSocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nextra bytes after the head")


def requests() -> Iterator[bytes]:
    for offer in OFFERS:
        for protocols in ((), ("chat", "superchat")):
            yield connect(offer, protocols)[2]
    for config in (Config(compress_enabled=True), Config(compress_enabled=True,
                   server_max_window_bits=15, client_context_takeover=False)):
        yield build_request("example.com", "/ws", "dGhlIHNhbXBsZSBub25jZQ==",
                            subprotocols=("v2.json", "chat"), extensions=client_offer(config),
                            extra_headers=[("Origin", "https://example.com")])
    yield from (CHROME, FIREFOX, PLAIN_HTTP, ABSOLUTE)
    yield CHROME.replace(b"GET", b"POST", 1)
    yield CHROME.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    yield CHROME.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    yield CHROME.replace(b"\r\nPragma", b"\r\n Pragma")  # obsolete folding


def http_server_seeds() -> Iterator[bytes]:
    for i, request in enumerate(requests()):
        flags = (i % 4) << 2 | (i % 5) << 4  # subprotocols and deflate config vary
        sizes = SPLITS[i % len(SPLITS)]
        yield bytes([flags, len(sizes), *sizes]) + request
        if i % 3 == 0:
            yield bytes([flags | 1 + i % 3, 0]) + request  # under tight limits


def responses() -> Iterator[tuple[int, bytes]]:
    """(client flags, response head) pairs: each response answers an offer we make."""
    for offer in OFFERS:
        for protocols in ((), ("chat",)):
            response = connect(offer, protocols)[3]
            yield (1 if protocols else 0) | (4 if offer else 0), response
    for config_index, config in ((1, Config(compress_enabled=True)),
                                 (3, Config(compress_enabled=True, server_max_window_bits=8,
                                            client_max_window_bits=8,
                                            server_context_takeover=False,
                                            client_context_takeover=False)),
                                 (5, Config(compress_enabled=True, server_max_window_bits=10,
                                            server_context_takeover=False))):
        agreed = negotiate_server([client_offer(config)], config)
        assert agreed is not None
        yield 2 | config_index << 2, build_accept_response(
            "dGhlIHNhbXBsZSBub25jZQ==", subprotocol="chat", extensions=agreed[1])
    yield 0, build_error_response(426, "upgrade required", [("Upgrade", "websocket"),
                                                           ("Sec-WebSocket-Version", "13")])
    yield 0, build_error_response(403, "forbidden") + b"forbidden"
    yield 4, (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
              b"client_max_window_bits=15\r\n\r\n\x81\x05hello")  # Autobahn 13.6 style


def handshake_client_seeds() -> Iterator[bytes]:
    for i, (flags, response) in enumerate(responses()):
        sizes = SPLITS[i % len(SPLITS)]
        yield bytes([flags, len(sizes), *sizes]) + response


EXTENSION_HEADERS = [
    "permessage-deflate; client_max_window_bits",  # Chrome, ws, websockets
    "permessage-deflate",  # Firefox, Safari
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=10, permessage-deflate",  # with a fallback
    'permessage-deflate; server_max_window_bits="12"',  # quoted value
    "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
    "permessage-deflate; unknown_param, permessage-deflate",
    "permessage-deflate; client_max_window_bits=16, permessage-deflate; server_max_window_bits",
    "permessage-deflate;server_max_window_bits=15;server_max_window_bits=15",
    " ,, permessage-deflate ;\tclient_max_window_bits ,",
    # flags that take no value, given one: declined in an offer, refused in a response
    "permessage-deflate; server_no_context_takeover=1, permessage-deflate",
    'permessage-deflate; client_no_context_takeover="x"',
]


def extensions_seeds() -> Iterator[bytes]:
    for i, text in enumerate(EXTENSION_HEADERS):
        yield bytes([i % 8, (i * 3) % 8]) + text.encode()
    for i in range(8):
        yield bytes([i, 7 - i]) + client_offer(
            Config(compress_enabled=True, server_max_window_bits=8 + i,
                   client_max_window_bits=15 - i, server_context_takeover=bool(i & 1))).encode()
    # a server's answers, and two header lines
    yield b"\x01\x02permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"
    yield b"\x03\x03permessage-deflate; client_no_context_takeover\npermessage-deflate"


def close_seeds() -> Iterator[bytes]:
    yield b""
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                 3000, 4999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 999):
        yield struct.pack("!H", code)
    yield struct.pack("!H", 1000) + b"normal closure"
    yield struct.pack("!H", 1001) + "going away κόσμε".encode()
    yield struct.pack("!H", 4000) + "x".encode() * 123
    yield struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
    yield b"\x03"


UTF8 = [
    "Hello, world",
    "κόσμε",
    "日本語のテキスト",
    "emoji 🌍🎉 and ascii",
    "\U0010ffff\u0800\u07ff\x7f",
]
BAD_UTF8 = [
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",  # a surrogate
    b"\xc0\xaf",  # overlong
    b"\xe0\x80\xaf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",  # lone continuation
    b"\xe2\x82",  # truncated
    b"\xf0\x9f\x8c",
    b"\xed\x9f\xbf\xed\xa0",
    b"\xff",
]


def utf8_seeds() -> Iterator[bytes]:
    for i, text in enumerate(UTF8):
        raw = text.encode()
        yield bytes([0]) + raw
        yield bytes([len(raw), *([1] * len(raw))]) + raw  # byte by byte
        yield bytes([2, i % 3 + 1, 3]) + raw
    for i, raw in enumerate(BAD_UTF8):
        yield bytes([0]) + raw
        yield bytes([3, 1, 0, 2]) + raw


# -- writing ---------------------------------------------------------------------------

SEEDS = {
    "reader": reader_seeds,
    "http_server": http_server_seeds,
    "handshake_client": handshake_client_seeds,
    "extensions": extensions_seeds,
    "close": close_seeds,
    "utf8": utf8_seeds,
}


def main(argv: Sequence[str]) -> None:
    assert set(SEEDS) == set(_harness.TARGETS)
    for name, make in SEEDS.items():
        folder = os.path.join(CORPUS, name)
        if "--clean" in argv:
            shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
        count = 0
        for seed in make():
            digest = hashlib.sha1(seed).hexdigest()
            with open(os.path.join(folder, digest), "wb") as f:
                f.write(seed)
            count += 1
        print(f"{name}: {count} seeds")


if __name__ == "__main__":
    main(sys.argv[1:])
