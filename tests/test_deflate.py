"""permessage-deflate (RFC 7692) core: negotiation tables, compression, inflate limits."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gws._config import Config
from trio_gws._deflate import (
    DeflateParams,
    accept_server_response,
    client_offer,
    negotiate_server,
    parse_extensions,
)
from trio_gws._deflate_codec import Compressor, Decompressor, memory_level
from trio_gws._errors import HandshakeError, MessageTooLargeError, ProtocolError

PMD = "permessage-deflate"
TAIL = b"\x00\x00\xff\xff"


def cfg(**overrides: Any) -> Config:
    """Compression on, 15-bit windows: the tables below are written against that base."""
    overrides.setdefault("compress_enabled", True)
    overrides.setdefault("server_max_window_bits", 15)
    overrides.setdefault("client_max_window_bits", 15)
    return Config(**overrides)


def test_default_windows_are_12_bits() -> None:
    config = Config(compress_enabled=True)
    agreed = negotiate_server([PMD + "; client_max_window_bits"], config)
    assert agreed is not None
    params, answer = agreed
    assert params.client_max_window_bits == 12
    assert params.server_max_window_bits <= 15  # we may always compress with less
    assert "client_max_window_bits=12" in answer
    assert "server_max_window_bits=12" in client_offer(config)


def corpus(count: int = 40, seed: int = 7) -> list[bytes]:
    """Deterministic JSON-ish messages: repetitive within and across messages."""
    rnd = random.Random(seed)
    words = "alpha beta gamma delta price volume order trade user status active".split()
    messages = []
    for seq in range(count):
        items = [
            {
                "id": rnd.randrange(10**6),
                "sym": rnd.choice(["BTC-USD", "ETH-USD", "SOL-USD"]),
                "px": round(rnd.uniform(10, 60000), 2),
                "note": " ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 6))),
            }
            for _ in range(rnd.choice([1, 4, 16, 64]))
        ]
        messages.append(json.dumps({"type": "update", "seq": seq, "items": items}).encode())
    messages.append(b"")
    messages.append(bytes(rnd.randrange(256) for _ in range(3000)))  # incompressible
    return messages


# ---------------------------------------------------------------------------------
# Header grammar
# ---------------------------------------------------------------------------------

PARSE_OK = [
    ([], []),
    ([""], []),
    ([" , ,"], []),
    ([PMD], [(PMD, [])]),
    (
        [f"{PMD}; client_max_window_bits"],
        [(PMD, [("client_max_window_bits", None)])],
    ),
    (
        [f"  {PMD} ;client_max_window_bits = 10 ;\tserver_no_context_takeover  "],
        [(PMD, [("client_max_window_bits", "10"), ("server_no_context_takeover", None)])],
    ),
    ([f'{PMD}; server_max_window_bits="10"'], [(PMD, [("server_max_window_bits", "10")])]),
    (['x; a="b\\c"'], [("x", [("a", "bc")])]),
    (["a, b; c=d", "e"], [("a", []), ("b", [("c", "d")]), ("e", [])]),
    (["a,,b, "], [("a", []), ("b", [])]),
    (
        [f"{PMD}; s=1; s=2, {PMD}"],
        [(PMD, [("s", "1"), ("s", "2")]), (PMD, [])],
    ),
]

PARSE_BAD = [
    f"{PMD};",
    f"{PMD}; =1",
    f"{PMD}; a=",
    f'{PMD}; a="1',
    f'{PMD}; a="1 2"',
    f'{PMD}; a=""',
    f"{PMD}; a=1=2",
    f"{PMD}; a=b c",
    f"{PMD}; a=(b)",
    "permessage deflate",
    "; a",
    f"{PMD}\x00",
    "pérmessage-deflate",
]


@pytest.mark.parametrize(("values", "expected"), PARSE_OK)
def test_parse_extensions(values: list[str], expected: list[Any]) -> None:
    assert parse_extensions(values) == expected


@pytest.mark.parametrize("value", PARSE_BAD)
def test_parse_extensions_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions([value])


# ---------------------------------------------------------------------------------
# Server negotiation
# ---------------------------------------------------------------------------------

P = DeflateParams
AUTOBAHN_13_7 = (
    f"{PMD}; client_no_context_takeover; client_max_window_bits; "
    "server_no_context_takeover; server_max_window_bits=8, "
    f"{PMD}; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, "
    f"{PMD}; client_no_context_takeover; client_max_window_bits"
)

NEGOTIATE_ACCEPT: list[tuple[list[str], dict[str, Any], str, DeflateParams]] = [
    ([PMD], {}, PMD, P()),
    ([f"{PMD}; client_max_window_bits"], {}, PMD, P()),
    ([f"{PMD}; client_max_window_bits=15"], {}, PMD, P()),
    ([f"{PMD}; client_max_window_bits=10"], {}, f"{PMD}; client_max_window_bits=10", P(client_max_window_bits=10)),
    ([f"{PMD}; client_max_window_bits"], {"client_max_window_bits": 12}, f"{PMD}; client_max_window_bits=12", P(client_max_window_bits=12)),
    ([f"{PMD}; client_max_window_bits=14"], {"client_max_window_bits": 12}, f"{PMD}; client_max_window_bits=12", P(client_max_window_bits=12)),
    ([f"{PMD}; client_max_window_bits=10"], {"client_max_window_bits": 12}, f"{PMD}; client_max_window_bits=10", P(client_max_window_bits=10)),
    ([f"{PMD}; client_max_window_bits=8"], {}, f"{PMD}; client_max_window_bits=8", P(client_max_window_bits=8)),
    # The client did not offer client_max_window_bits: its window cannot be limited.
    ([PMD], {"client_max_window_bits": 12}, PMD, P()),
    ([f"{PMD}; server_max_window_bits=10"], {}, f"{PMD}; server_max_window_bits=10", P(server_max_window_bits=10)),
    ([f"{PMD}; server_max_window_bits=10"], {"server_max_window_bits": 9}, f"{PMD}; server_max_window_bits=9", P(server_max_window_bits=9)),
    ([f"{PMD}; server_max_window_bits=15"], {}, f"{PMD}; server_max_window_bits=15", P()),
    ([f"{PMD}; server_max_window_bits=15"], {"server_max_window_bits": 12}, f"{PMD}; server_max_window_bits=12", P(server_max_window_bits=12)),
    # Our own smaller window needs no announcing: the client inflates it with 15 bits.
    ([PMD], {"server_max_window_bits": 12}, PMD, P(server_max_window_bits=12)),
    # 8 bits: accepted, honoured with distance-1 (Z_RLE) compression.
    ([f"{PMD}; server_max_window_bits=8"], {}, f"{PMD}; server_max_window_bits=8", P(server_max_window_bits=8)),
    ([f"{PMD}; server_no_context_takeover"], {}, f"{PMD}; server_no_context_takeover", P(server_no_context_takeover=True)),
    ([f"{PMD}; client_no_context_takeover"], {}, f"{PMD}; client_no_context_takeover", P(client_no_context_takeover=True)),
    ([PMD], {"server_context_takeover": False}, f"{PMD}; server_no_context_takeover", P(server_no_context_takeover=True)),
    ([PMD], {"client_context_takeover": False}, f"{PMD}; client_no_context_takeover", P(client_no_context_takeover=True)),
    (
        [f"{PMD}; client_max_window_bits=9; server_max_window_bits=11; client_no_context_takeover; server_no_context_takeover"],
        {},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=9",
        P(True, True, 11, 9),
    ),
    ([f'{PMD}; server_max_window_bits="10"'], {}, f"{PMD}; server_max_window_bits=10", P(server_max_window_bits=10)),
    ([f'{PMD};client_max_window_bits="9"'], {}, f"{PMD}; client_max_window_bits=9", P(client_max_window_bits=9)),
    ([f"  {PMD}\t;  server_max_window_bits = 10 ;client_max_window_bits  "], {}, f"{PMD}; server_max_window_bits=10", P(server_max_window_bits=10)),
    # Several offers: the first acceptable one wins.
    ([f"{PMD}; foo, {PMD}; client_max_window_bits=11"], {}, f"{PMD}; client_max_window_bits=11", P(client_max_window_bits=11)),
    ([f"{PMD}; server_max_window_bits=10, {PMD}"], {}, f"{PMD}; server_max_window_bits=10", P(server_max_window_bits=10)),
    ([f"{PMD}; server_max_window_bits=16, {PMD}"], {}, PMD, P()),
    # Several header lines, other extensions skipped.
    (["x-webkit-deflate-frame", f"{PMD}; server_max_window_bits=11"], {}, f"{PMD}; server_max_window_bits=11", P(server_max_window_bits=11)),
    ([f"foo; bar=baz, {PMD}"], {}, PMD, P()),
    # Autobahn 13.7.x offers three fallbacks; we take the first (the 8-bit one).
    (
        [AUTOBAHN_13_7],
        {},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8",
        P(True, True, 8, 15),
    ),
]


@pytest.mark.parametrize(("values", "overrides", "response", "params"), NEGOTIATE_ACCEPT)
def test_negotiate_server_accepts(
    values: list[str], overrides: dict[str, Any], response: str, params: DeflateParams
) -> None:
    assert negotiate_server(values, cfg(**overrides)) == (params, response)
    # What we answer is what a client (us) accepts as meaning the same parameters.
    client_cfg = cfg(client_max_window_bits=min(15, params.client_max_window_bits))
    assert accept_server_response([response], client_cfg) is not None


NEGOTIATE_DECLINE: list[tuple[list[str], dict[str, Any]]] = [
    ([PMD], {"compress_enabled": False}),
    ([], {}),
    ([""], {}),
    (["x-webkit-deflate-frame"], {}),
    (["PERMESSAGE-DEFLATE"], {}),
    ([f"{PMD}; foo"], {}),
    ([f"{PMD}; foo=1"], {}),
    ([f"{PMD}; server_no_context_takeover; server_no_context_takeover"], {}),
    ([f"{PMD}; client_no_context_takeover; client_no_context_takeover"], {}),
    ([f"{PMD}; server_max_window_bits=10; server_max_window_bits=10"], {}),
    ([f"{PMD}; client_max_window_bits; client_max_window_bits=10"], {}),
    ([f"{PMD}; server_no_context_takeover=true"], {}),
    ([f"{PMD}; client_no_context_takeover=1"], {}),
    ([f"{PMD}; server_max_window_bits"], {}),
    *[([f"{PMD}; server_max_window_bits={v}"], {}) for v in ("16", "7", "0", "08", "010", "-9", "+9", "9.0", "a", "1e1")],
    ([f'{PMD}; server_max_window_bits=""'], {}),
    ([f'{PMD}; server_max_window_bits=" 9"'], {}),
    *[([f"{PMD}; client_max_window_bits={v}"], {}) for v in ("16", "7", "08", "x")],
    # A header that does not parse is declined whole, even beside a valid offer.
    ([f"{PMD}; server_max_window_bits=10 junk"], {}),
    ([PMD, "garbage;;"], {}),
]


@pytest.mark.parametrize(("values", "overrides"), NEGOTIATE_DECLINE)
def test_negotiate_server_declines(values: list[str], overrides: dict[str, Any]) -> None:
    assert negotiate_server(values, cfg(**overrides)) is None


# ---------------------------------------------------------------------------------
# Client offer and response validation
# ---------------------------------------------------------------------------------

OFFERS = [
    ({}, f"{PMD}; client_max_window_bits"),
    ({"server_context_takeover": False}, f"{PMD}; server_no_context_takeover; client_max_window_bits"),
    ({"client_context_takeover": False}, f"{PMD}; client_no_context_takeover; client_max_window_bits"),
    ({"client_max_window_bits": 8}, f"{PMD}; client_max_window_bits=8"),
    # Asking for a smaller server window comes with a fallback offer (RFC 7692 7.1.3).
    (
        {"server_max_window_bits": 8},
        f"{PMD}; server_max_window_bits=8; client_max_window_bits, {PMD}; client_max_window_bits",
    ),
    (
        {"server_context_takeover": False, "client_context_takeover": False, "server_max_window_bits": 10, "client_max_window_bits": 9},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9, "
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9",
    ),
]


@pytest.mark.parametrize(("overrides", "offer"), OFFERS)
def test_client_offer(overrides: dict[str, Any], offer: str) -> None:
    config = cfg(**overrides)
    assert client_offer(config) == offer
    # Our own server accepts our own offer, and the result round-trips.
    negotiated = negotiate_server([offer], config)
    assert negotiated is not None
    params, response = negotiated
    assert accept_server_response([response], config) == params
    assert params.server_max_window_bits == config.server_max_window_bits


def test_client_fallback_offer() -> None:
    config = cfg(server_max_window_bits=10)
    assert parse_extensions([client_offer(config)]) == [
        (PMD, [("server_max_window_bits", "10"), ("client_max_window_bits", None)]),
        (PMD, [("client_max_window_bits", None)]),
    ]
    # A server that took the fallback: accepted, we inflate with 15 bits.
    assert accept_server_response([PMD], config) == P()


def test_unannounced_server_window_is_covered_by_the_clients() -> None:
    """Found by fuzz/fuzz_extensions.py: the two sides' DeflateParams differ in one field.

    A server that limits its own window without being asked must not announce it (RFC
    7692 7.1.2.1), so its client assumes 15 bits: a larger window than the server
    compresses with, which inflates everything it sends.
    """
    agreed = negotiate_server([f"{PMD}; client_max_window_bits"], cfg(server_max_window_bits=9))
    assert agreed is not None
    server_params, response = agreed
    assert server_params == P(server_max_window_bits=9)
    assert response == PMD
    client_params = accept_server_response([response], cfg())
    assert client_params == P()
    data = random.Random(7).randbytes(600) * 4  # repeats at distances beyond 2**9
    compressor = Compressor(server_params, is_server=True, level=1)
    decompressor = Decompressor(client_params, is_server=False, max_size=len(data))
    for _ in range(3):
        assert decompressor.feed(compressor.compress(data)) + decompressor.finish() == data


RESPONSES_OK: list[tuple[list[str], dict[str, Any], DeflateParams | None]] = [
    ([], {}, None),
    ([""], {}, None),
    ([], {"compress_enabled": False}, None),
    ([PMD], {}, P()),
    ([f"{PMD}; server_no_context_takeover"], {}, P(server_no_context_takeover=True)),
    ([f"{PMD}; client_no_context_takeover"], {}, P(client_no_context_takeover=True)),
    ([PMD], {"client_context_takeover": False}, P(client_no_context_takeover=True)),
    ([f"{PMD}; server_max_window_bits=10"], {}, P(server_max_window_bits=10)),
    ([f"{PMD}; server_max_window_bits=8"], {}, P(server_max_window_bits=8)),
    ([f"{PMD}; server_max_window_bits=10"], {"server_max_window_bits": 10}, P(server_max_window_bits=10)),
    ([f"{PMD}; server_max_window_bits=9"], {"server_max_window_bits": 10}, P(server_max_window_bits=9)),
    # Tolerated: the server ignored our requests; we inflate with what it announced.
    ([PMD], {"server_max_window_bits": 10}, P()),
    ([PMD], {"server_context_takeover": False}, P()),
    ([f"{PMD}; client_max_window_bits=9"], {}, P(client_max_window_bits=9)),
    ([f"{PMD}; client_max_window_bits=8"], {}, P(client_max_window_bits=8)),
    ([PMD], {"client_max_window_bits": 12}, P(client_max_window_bits=12)),
    ([f"{PMD}; client_max_window_bits=10"], {"client_max_window_bits": 12}, P(client_max_window_bits=10)),
    ([f"{PMD}; client_max_window_bits=12"], {"client_max_window_bits": 12}, P(client_max_window_bits=12)),
    ([f'{PMD}; client_max_window_bits="10"'], {}, P(client_max_window_bits=10)),
    # Larger windows than we asked for are safe, so tolerated: we inflate with the
    # server's window and keep compressing within ours (Autobahn 13.4 / 13.6).
    ([f"{PMD}; server_max_window_bits=11"], {"server_max_window_bits": 10}, P(server_max_window_bits=11, client_max_window_bits=15)),
    ([f"{PMD}; client_max_window_bits=12"], {"client_max_window_bits": 10}, P(client_max_window_bits=10)),
    ([f"{PMD}; client_max_window_bits=15"], {"client_max_window_bits": 12}, P(client_max_window_bits=12)),
    (
        [f" {PMD} ; server_no_context_takeover ;client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10 "],
        {},
        P(True, True, 9, 10),
    ),
]


@pytest.mark.parametrize(("values", "overrides", "params"), RESPONSES_OK)
def test_accept_server_response(
    values: list[str], overrides: dict[str, Any], params: DeflateParams | None
) -> None:
    assert accept_server_response(values, cfg(**overrides)) == params


RESPONSES_BAD: list[tuple[list[str], dict[str, Any]]] = [
    ([PMD], {"compress_enabled": False}),
    ([f"{PMD}, {PMD}"], {}),
    ([PMD, PMD], {}),
    (["x-foo"], {}),
    ([f"{PMD}, x-foo"], {}),
    ([f"x-foo, {PMD}"], {}),
    ([f"{PMD}; foo"], {}),
    ([f"{PMD}; server_no_context_takeover; server_no_context_takeover"], {}),
    ([f"{PMD}; client_max_window_bits=10; client_max_window_bits=10"], {}),
    ([f"{PMD}; server_no_context_takeover=1"], {}),
    ([f"{PMD}; client_no_context_takeover=x"], {}),
    ([f"{PMD}; server_max_window_bits"], {}),
    *[([f"{PMD}; server_max_window_bits={v}"], {}) for v in ("16", "7", "08", "x")],
    ([f"{PMD}; client_max_window_bits"], {}),
    *[([f"{PMD}; client_max_window_bits={v}"], {}) for v in ("16", "7", "010")],
    ([f"{PMD};"], {}),
    ([f"{PMD}; server_max_window_bits=10 x"], {}),
]


@pytest.mark.parametrize(("values", "overrides"), RESPONSES_BAD)
def test_accept_server_response_rejects(values: list[str], overrides: dict[str, Any]) -> None:
    with pytest.raises(HandshakeError) as info:
        accept_server_response(values, cfg(**overrides))
    assert info.value.status == 0


# ---------------------------------------------------------------------------------
# Negotiation against an independent implementation (websockets)
# ---------------------------------------------------------------------------------

pmd_ext = pytest.importorskip("websockets.extensions.permessage_deflate")
ws_headers = pytest.importorskip("websockets.headers")
ws_frames = pytest.importorskip("websockets.frames")


def _ws_extension_params(header: str) -> Any:
    ((name, params),) = ws_headers.parse_extension(header)
    assert name == PMD
    return params


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {},
        {"server_no_context_takeover": True},
        {"client_no_context_takeover": True},
        {"server_max_window_bits": 10},
        {"server_max_window_bits": 8},
        {"client_max_window_bits": 11},
        {"client_max_window_bits": None},
        {"server_no_context_takeover": True, "server_max_window_bits": 9, "client_max_window_bits": 12},
    ],
)
@pytest.mark.parametrize("server_overrides", [{}, {"server_max_window_bits": 12, "client_max_window_bits": 10}, {"server_context_takeover": False}])
def test_websockets_client_against_our_server(
    client_kwargs: dict[str, Any], server_overrides: dict[str, Any]
) -> None:
    factory = pmd_ext.ClientPerMessageDeflateFactory(**client_kwargs)
    offer = ws_headers.build_extension([(PMD, factory.get_request_params())])
    negotiated = negotiate_server([offer], cfg(**server_overrides))
    assert negotiated is not None
    params, response = negotiated
    ext = factory.process_response_params(_ws_extension_params(response), [])
    assert ext.remote_no_context_takeover == params.server_no_context_takeover
    assert ext.local_no_context_takeover == params.client_no_context_takeover
    assert ext.remote_max_window_bits >= params.server_max_window_bits  # they may inflate wider
    assert ext.local_max_window_bits == params.client_max_window_bits


@pytest.mark.parametrize(
    "client_overrides",
    [
        {},
        {"server_context_takeover": False},
        {"client_context_takeover": False},
        {"server_max_window_bits": 10},
        {"client_max_window_bits": 9},
        {"server_context_takeover": False, "client_context_takeover": False, "server_max_window_bits": 11, "client_max_window_bits": 12},
    ],
)
@pytest.mark.parametrize(
    "server_kwargs",
    [{}, {"server_max_window_bits": 12, "client_max_window_bits": 10}, {"server_no_context_takeover": True, "client_no_context_takeover": True}],
)
def test_our_client_against_websockets_server(
    client_overrides: dict[str, Any], server_kwargs: dict[str, Any]
) -> None:
    config = cfg(**client_overrides)
    factory = pmd_ext.ServerPerMessageDeflateFactory(**server_kwargs)
    # websockets' server takes the first offer it can accept.
    for _, offer_params in ws_headers.parse_extension(client_offer(config)):
        try:
            response_params, ext = factory.process_request_params(offer_params, [])
            break
        except pmd_ext.NegotiationError:
            continue
    else:
        pytest.fail("websockets declined every offer")
    response = ws_headers.build_extension([(PMD, response_params)])
    params = accept_server_response([response], config)
    assert params is not None
    assert ext.local_no_context_takeover == params.server_no_context_takeover
    assert ext.local_max_window_bits <= params.server_max_window_bits
    assert ext.remote_max_window_bits >= params.client_max_window_bits
    if ext.remote_no_context_takeover:
        assert params.client_no_context_takeover


# ---------------------------------------------------------------------------------
# RFC 7692 section 7.2.3 examples
# ---------------------------------------------------------------------------------


def inflate_all(payloads: list[bytes], params: DeflateParams = P(), *, is_server: bool = False) -> list[bytes]:
    d = Decompressor(params, is_server=is_server, max_size=1 << 24)
    return [d.feed(p) + d.finish() for p in payloads]


RFC_EXAMPLES = [
    ("7.2.3.1 one block", ["f2 48 cd c9 c9 07 00"]),
    ("7.2.3.2 shared window", ["f2 48 cd c9 c9 07 00", "f2 00 11 00 00"]),
    ("7.2.3.3 BFINAL", ["f3 48 cd c9 c9 07 00 00"]),
    ("7.2.3.4 two blocks", ["f2 48 05 00 00 00 ff ff ca c9 c9 07 00"]),
    ("7.2.3.5 stored block", ["00 05 00 fa ff 48 65 6c 6c 6f 00"]),
    ("BFINAL then shared window", ["f3 48 cd c9 c9 07 00 00", "f2 48 cd c9 c9 07 00"]),
    ("BFINAL without padding", ["f3 48 cd c9 c9 07 00", "f3 48 cd c9 c9 07 00", "f2 48 cd c9 c9 07 00"]),
]


@pytest.mark.parametrize(("name", "payloads"), RFC_EXAMPLES)
def test_rfc_examples_inflate(name: str, payloads: list[str]) -> None:
    assert inflate_all([bytes.fromhex(p) for p in payloads]) == [b"Hello"] * len(payloads)


def test_rfc_example_fragmented_message() -> None:
    d = Decompressor(P(), is_server=False, max_size=100)
    assert d.feed(bytes.fromhex("f2 48 cd")) + d.feed(bytes.fromhex("c9 c9 07 00")) + d.finish() == b"Hello"


@pytest.mark.parametrize("level", [-1, 1, 6, 9])
def test_rfc_examples_compress(level: int) -> None:
    c = Compressor(P(), is_server=True, level=level)
    assert c.compress(b"Hello") == bytes.fromhex("f2 48 cd c9 c9 07 00")
    assert c.compress(b"Hello") == bytes.fromhex("f2 00 11 00 00")  # 7.2.3.2


def test_empty_message() -> None:
    c = Compressor(P(), is_server=True, level=1)
    assert c.compress(b"") == b"\x00"  # 7.2.3.6
    assert c.compress(b"") == b"\x00"
    assert inflate_all([b"\x00", c.compress(b"Hello"), b"\x00"]) == [b"", b"Hello", b""]


# ---------------------------------------------------------------------------------
# Round trips, context takeover and window limits
# ---------------------------------------------------------------------------------

TAKEOVER = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("bits", range(8, 16))
@pytest.mark.parametrize(("server_nct", "client_nct"), TAKEOVER)
@pytest.mark.parametrize("sender_is_server", [True, False])
def test_round_trip(bits: int, server_nct: bool, client_nct: bool, sender_is_server: bool) -> None:
    params = P(server_nct, client_nct, bits, bits)
    sender = Compressor(params, is_server=sender_is_server, level=1)
    receiver = Decompressor(params, is_server=not sender_is_server, max_size=1 << 20)
    # An independent strict inflater with exactly the negotiated window (8 included).
    strict = zlib.decompressobj(-bits)
    no_takeover = server_nct if sender_is_server else client_nct
    for message in corpus() * 2:
        payload = sender.compress(message)
        assert receiver.feed(payload) + receiver.finish() == message
        if no_takeover:
            strict = zlib.decompressobj(-bits)  # each message stands alone
        assert strict.decompress(payload + TAIL) == message


@pytest.mark.parametrize("bits", range(9, 16))
def test_takeover_reuses_history(bits: int) -> None:
    message = corpus()[1][:200]  # zlib matches reach 250 bytes back at 9 bits
    keep = Compressor(P(server_max_window_bits=bits), is_server=True, level=1)
    first, second = keep.compress(message), keep.compress(message)
    assert len(second) * 4 < len(first)
    reset = Compressor(P(server_no_context_takeover=True, server_max_window_bits=bits), is_server=True, level=1)
    assert reset.compress(message) == reset.compress(message) == first


def _far_repeats(seed: int = 3) -> bytes:
    rnd = random.Random(seed)
    block = bytes(rnd.randrange(256) for _ in range(200))
    return block * 4 + bytes(rnd.randrange(256) for _ in range(300)) + block


def test_window_8_compression() -> None:
    with pytest.raises(ValueError):
        zlib.compressobj(1, zlib.DEFLATED, -8)  # zlib refuses a 256-byte deflate window
    # Ours stays decodable with exactly 256 bytes of history, across messages too.
    ours = Compressor(P(server_max_window_bits=8), is_server=True, level=9)
    strict = zlib.decompressobj(-8)
    sizes = []
    for message in [_far_repeats(), _far_repeats()[:100], bytes(1000), _far_repeats()]:
        payload = ours.compress(message)
        sizes.append(len(payload))
        assert strict.decompress(payload + TAIL) == message
    assert sizes[2] < 20  # runs still compress


def test_memory_level_scales_with_window() -> None:
    assert [memory_level(b) for b in range(8, 16)] == [4, 4, 4, 5, 6, 7, 8, 8]


# ---------------------------------------------------------------------------------
# Frames against an independent implementation (websockets)
# ---------------------------------------------------------------------------------


def _ws_client(params: DeflateParams) -> Any:
    """A websockets client-side extension agreeing on ``params``."""
    return pmd_ext.PerMessageDeflate(
        params.server_no_context_takeover, params.client_no_context_takeover,
        params.server_max_window_bits, max(9, params.client_max_window_bits),
    )


@pytest.mark.parametrize("bits", range(9, 16))
@pytest.mark.parametrize(("server_nct", "client_nct"), TAKEOVER)
def test_interop_with_websockets(bits: int, server_nct: bool, client_nct: bool) -> None:
    params = P(server_nct, client_nct, bits, bits)
    ws_client = _ws_client(params)
    ours_c = Compressor(params, is_server=True, level=1)
    ours_d = Decompressor(params, is_server=True, max_size=1 << 20)
    for message in corpus():
        if not message:
            continue  # websockets does not compress empty frames the RFC way
        frame = ws_client.decode(ws_frames.Frame(ws_frames.Opcode.BINARY, ours_c.compress(message), rsv1=True))
        assert bytes(frame.data) == message
        sent = ws_client.encode(ws_frames.Frame(ws_frames.Opcode.BINARY, message))
        assert sent.rsv1
        assert ours_d.feed(sent.data) + ours_d.finish() == message


def test_interop_window_8_with_websockets() -> None:
    # websockets inflates an 8-bit server window with exactly 256 bytes of history.
    params = P(server_max_window_bits=8)
    ws_client = _ws_client(params)
    ours = Compressor(params, is_server=True, level=6)
    for message in corpus() + [_far_repeats()]:
        if message:
            frame = ws_frames.Frame(ws_frames.Opcode.BINARY, ours.compress(message), rsv1=True)
            assert bytes(ws_client.decode(frame).data) == message


# ---------------------------------------------------------------------------------
# Decompressor: framing, limits, invalid data
# ---------------------------------------------------------------------------------


def test_feed_in_any_chunking() -> None:
    c = Compressor(P(), is_server=True, level=1)
    payloads = [c.compress(m) for m in corpus()]
    for step in (1, 3, 1000):
        d = Decompressor(P(), is_server=False, max_size=1 << 20)
        for message, payload in zip(corpus(), payloads):
            out = b"".join(d.feed(payload[i : i + step]) for i in range(0, len(payload), step))
            assert out + d.finish() == message


@pytest.mark.parametrize("size", [1, 1000, 70000])
def test_max_size_boundary(size: int) -> None:
    message = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    c = Compressor(P(), is_server=True, level=1)
    payload = c.compress(message)
    d = Decompressor(P(), is_server=False, max_size=size)
    for _ in range(3):  # the budget is per message
        assert d.feed(payload) + d.finish() == message
        payload = c.compress(message)
    c2 = Compressor(P(), is_server=True, level=1)
    d2 = Decompressor(P(), is_server=False, max_size=size - 1)
    with pytest.raises(MessageTooLargeError) as info:
        d2.feed(c2.compress(message))
        d2.finish()
    assert info.value.close_code == 1009


def test_too_large_across_frames() -> None:
    payload = Compressor(P(), is_server=True, level=1).compress(bytes(100_000))
    d = Decompressor(P(), is_server=False, max_size=50_000)
    with pytest.raises(MessageTooLargeError):
        for i in range(0, len(payload), 10):
            assert len(d.feed(payload[i : i + 10])) <= 50_000
        d.finish()


def _bomb(mib: int) -> bytes:
    """Raw deflate inflating to ``mib`` MiB of zeros, about 1 KiB per MiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    prefix = c.compress(bytes(32768)) + c.flush(zlib.Z_SYNC_FLUSH)
    # With a window full of zeros this block means "1 MiB of zeros" wherever it sits.
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
    return (prefix + block * mib)[:-4]


def test_decompression_bomb_is_cut_short(tmp_path: Path) -> None:
    bomb = _bomb(1100)  # ~1.1 MiB on the wire, 1.1 GiB inflated
    assert len(bomb) < 2 << 20
    path = tmp_path / "bomb.bin"
    path.write_bytes(bomb)
    script = textwrap.dedent(
        f"""
        import resource
        from trio_gws._deflate import DeflateParams
        from trio_gws._deflate_codec import Decompressor
        from trio_gws._errors import MessageTooLargeError
        data = open({str(path)!r}, "rb").read()
        for chunk in (len(data), 65536):  # one frame, then many frames
            d = Decompressor(DeflateParams(), is_server=True, max_size=16 << 20)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                for i in range(0, len(data), chunk):
                    d.feed(data[i : i + chunk])
                d.finish()
            except MessageTooLargeError as exc:
                growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
                print(exc.close_code, growth // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 2, result
    for code, growth_mib in lines:
        assert code == "1009"
        assert int(growth_mib) < 64, result.stdout  # KiB -> MiB; measured ~33 MiB


INVALID = [
    ("reserved block type", ["ff ff ff ff"]),
    ("stored length mismatch", ["00 05 00 00 00 48 65"]),
    ("distance beyond history", ["f2 00 11 00 00"]),  # 7.2.3.2's 2nd message, alone
    ("data after BFINAL", ["f3 48 cd c9 c9 07 00 00 00"]),
    ("non-zero after BFINAL", ["f3 48 cd c9 c9 07 00 01"]),
    ("data after BFINAL, next frame", ["f3 48 cd c9 c9 07 00", "00 00"]),
    ("tail cannot complete a stored block", ["01 00"]),
]


@pytest.mark.parametrize(("name", "frames"), INVALID)
def test_invalid_data_is_1007(name: str, frames: list[str]) -> None:
    d = Decompressor(P(), is_server=False, max_size=1 << 20)
    with pytest.raises(ProtocolError) as info:
        for frame in frames:
            d.feed(bytes.fromhex(frame))
        d.finish()
    assert type(info.value) is ProtocolError
    assert info.value.close_code == 1007


@pytest.mark.parametrize("payload", ["01 00 00 ff ff", "01 00 00 ff ff 00", "03 00", "01", "00"])
def test_empty_messages_in_other_encodings(payload: str) -> None:
    # Z_FINISH of nothing, with or without 7.2.3.3 padding; an empty stored block.
    assert inflate_all([bytes.fromhex(payload)] * 2) == [b"", b""]


def test_padding_after_bfinal_in_next_frame() -> None:
    d = Decompressor(P(), is_server=False, max_size=100)
    out = d.feed(bytes.fromhex("f3 48 cd c9 c9 07 00")) + d.feed(b"\x00") + d.finish()
    assert out == b"Hello"


@pytest.mark.parametrize("peer_is_server", [True, False])
def test_peer_no_context_takeover_resets_history(peer_is_server: bool) -> None:
    hello, hello_again = bytes.fromhex("f2 48 cd c9 c9 07 00"), bytes.fromhex("f2 00 11 00 00")
    kept = Decompressor(P(), is_server=not peer_is_server, max_size=100)
    assert [kept.feed(p) + kept.finish() for p in (hello, hello_again)] == [b"Hello"] * 2
    flag = "server_no_context_takeover" if peer_is_server else "client_no_context_takeover"
    reset = Decompressor(P(**{flag: True}), is_server=not peer_is_server, max_size=100)
    assert reset.feed(hello) + reset.finish() == b"Hello"
    with pytest.raises(ProtocolError):  # history was dropped, as agreed
        reset.feed(hello_again)
        reset.finish()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    messages=st.lists(st.lists(st.binary(max_size=40), max_size=4), min_size=1, max_size=4),
    bits=st.integers(8, 15),
    no_takeover=st.booleans(),
)
def test_any_bytes_inflate_or_fail_cleanly(messages: list[list[bytes]], bits: int, no_takeover: bool) -> None:
    params = P(no_takeover, no_takeover, bits, bits)
    d = Decompressor(params, is_server=True, max_size=200)
    try:
        for frames in messages:
            out = b"".join(d.feed(frame) for frame in frames) + d.finish()
            assert isinstance(out, bytes) and len(out) <= 200
    except ProtocolError as exc:
        assert exc.close_code in (1007, 1009)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    messages=st.lists(st.binary(max_size=2000), min_size=1, max_size=6),
    bits=st.integers(8, 15),
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    level=st.integers(-1, 9),
)
def test_any_messages_round_trip(
    messages: list[bytes], bits: int, server_nct: bool, client_nct: bool, level: int
) -> None:
    params = P(server_nct, client_nct, bits, bits)
    for sender_is_server in (True, False):
        c = Compressor(params, is_server=sender_is_server, level=level)
        d = Decompressor(params, is_server=not sender_is_server, max_size=2000)
        for message in messages:
            assert d.feed(c.compress(message)) + d.finish() == message


SMALL_CORPUS = corpus(6, seed=11)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    target=st.integers(0, 5),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
    garbage=st.binary(max_size=8),
    bits=st.integers(8, 15),
    no_takeover=st.booleans(),
)
def test_corrupted_streams_fail_cleanly(
    target: int, position: int, flip: int, garbage: bytes, bits: int, no_takeover: bool
) -> None:
    params = P(no_takeover, no_takeover, bits, bits)
    messages = SMALL_CORPUS
    c = Compressor(params, is_server=False, level=6)
    payloads = [bytearray(c.compress(m)) for m in messages]
    payload = payloads[target]
    if payload:
        payload[position % len(payload)] ^= flip
    payload += garbage
    d = Decompressor(params, is_server=True, max_size=1 << 20)
    try:
        for index, (message, data) in enumerate(zip(messages, payloads)):
            out = d.feed(data) + d.finish()
            if index < target:
                assert out == message
    except ProtocolError as exc:
        assert exc.close_code in (1007, 1009)
