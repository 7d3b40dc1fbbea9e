"""Fuzz target: permessage-deflate negotiation (RFC 7692 section 7.1), both sides.

Input: ``[server config] [client config] [header text...]``; the config bytes index
``CONFIGS``; the text (latin-1, as ``parse_head`` decodes it) is split on LF into
several header values.

Invariants:

* ``parse_extensions`` raises nothing but ``ValueError``; what it returns is tokens,
  and serialising it parses back to the same;
* ``negotiate_server`` never raises, for every config: it declines (None) or answers
  with a response that a client accepts with the same parameters, parameters that
  honour the offer (no window limit the client did not offer, no value above the
  offered one) and the server's config;
* ``accept_server_response`` (the text read as a server's answer) raises nothing
  but ``HandshakeError``;
* round trip: what ``negotiate_server`` answers to ``client_offer(client config)``
  is accepted by ``accept_server_response``, both sides agree on the parameters
  (see :func:`agree`), and with them a message compressed by either side inflates
  back, several times over.
"""

from __future__ import annotations

from _harness import Input

from trio_gws._config import Config
from trio_gws._deflate import (
    EXTENSION_NAME,
    DeflateParams,
    accept_server_response,
    client_offer,
    negotiate_server,
    parse_extensions,
)
from trio_gws._deflate_codec import Compressor, Decompressor
from trio_gws._errors import HandshakeError

CONFIGS = (
    Config(),  # compression off
    Config(compress_enabled=True),
    Config(compress_enabled=True, server_max_window_bits=15, client_max_window_bits=15),
    Config(compress_enabled=True, server_max_window_bits=8, client_max_window_bits=8),
    Config(compress_enabled=True, server_context_takeover=False),
    Config(compress_enabled=True, client_context_takeover=False, client_max_window_bits=9),
    Config(compress_enabled=True, server_context_takeover=False,
           client_context_takeover=False, server_max_window_bits=10,
           client_max_window_bits=15),
    Config(compress_enabled=True, server_max_window_bits=15, client_max_window_bits=11),
)
#: The most permissive client: it offered every window and takeover.
PERMISSIVE = Config(compress_enabled=True, server_max_window_bits=15, client_max_window_bits=15)
_WINDOWS = frozenset(str(bits) for bits in range(8, 16))
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TCHARS for c in text)


def serialise(extensions: list[tuple[str, list[tuple[str, str | None]]]]) -> str:
    return ", ".join(
        "; ".join([name, *(key if value is None else f"{key}={value}" for key, value in params)])
        for name, params in extensions
    )


def check_parse(values: list[str]) -> None:
    try:
        parsed = parse_extensions(values)
    except ValueError:
        return
    for name, params in parsed:
        assert _is_token(name), name
        for key, value in params:
            assert _is_token(key), key
            assert value is None or _is_token(value), value
    assert parse_extensions([serialise(parsed)]) == parsed


def _offered(values: list[str]) -> list[dict[str, str | None]]:
    """The permessage-deflate offers, as parameter dicts (what the client allowed)."""
    return [dict(params) for name, params in parse_extensions(values) if name == EXTENSION_NAME]


def check_negotiation(values: list[str], config: Config) -> None:
    agreed = negotiate_server(values, config)
    if agreed is None:
        return
    params, response = agreed
    assert config.compress_enabled
    # One of the offers allows exactly these parameters.
    assert any(_allows(offer, params, config) for offer in _offered(values)), (values, params)
    # A client that allowed everything reads parameters it can work with.
    agree(params, accept_server_response([response], PERMISSIVE))


def _allows(offer: dict[str, str | None], params: DeflateParams, config: Config) -> bool:
    if params.server_max_window_bits > config.server_max_window_bits:
        return False
    if params.client_max_window_bits < 15 and "client_max_window_bits" not in offer:
        return False
    for name in ("server_max_window_bits", "client_max_window_bits"):
        if name in offer:
            value = offer[name]
            if value is None:
                if name == "server_max_window_bits":
                    return False  # its value is mandatory
                continue
            if value not in _WINDOWS or getattr(params, name) > int(value):
                return False
    if "server_no_context_takeover" in offer and not params.server_no_context_takeover:
        return False
    if "client_no_context_takeover" in offer and not params.client_no_context_takeover:
        return False
    return (params.server_no_context_takeover or config.server_context_takeover) and (
        params.client_no_context_takeover or config.client_context_takeover)


def agree(server: DeflateParams, client: DeflateParams | None) -> None:
    """Both sides' views of the parameters fit together, direction by direction.

    They are equal but for one licensed difference: a server never announces its own
    window limit unless the client asked for one (RFC 7692 7.1.2.1 forbids it), so
    the client may believe a larger server window than the server uses. Generally,
    in each direction the receiver's view must cover what the sender does: a window
    at least the sender's, and history dropped only if the sender drops it.
    """
    assert client is not None, server
    assert client.server_max_window_bits >= server.server_max_window_bits, (server, client)
    assert client.server_no_context_takeover == server.server_no_context_takeover, (
        server, client)
    assert client.client_max_window_bits == server.client_max_window_bits, (server, client)
    assert client.client_no_context_takeover == server.client_no_context_takeover, (
        server, client)


def check_roundtrip(client: Config, server: Config, message: bytes) -> None:
    if not client.compress_enabled:
        return  # such a client makes no offer
    offer = client_offer(client)
    assert parse_extensions([offer])
    agreed = negotiate_server([offer], server)
    if not server.compress_enabled:
        assert agreed is None
        return
    assert agreed is not None, (offer, server)
    server_params, response = agreed
    client_params = accept_server_response([response], client)
    agree(server_params, client_params)
    assert client_params is not None
    for sender_is_server in (True, False):
        compressor = Compressor(server_params if sender_is_server else client_params,
                                is_server=sender_is_server, level=1)
        decompressor = Decompressor(client_params if sender_is_server else server_params,
                                    is_server=not sender_is_server,
                                    max_size=max(1, len(message)))
        for data in (message, message[::-1], b"", message):
            assert decompressor.feed(compressor.compress(data)) + decompressor.finish() == data


def check(data: bytes) -> None:
    source = Input(data)
    server = CONFIGS[source.byte() % len(CONFIGS)]
    client = CONFIGS[source.byte() % len(CONFIGS)]
    raw = source.rest()
    values = raw.decode("latin-1").split("\n")

    check_parse(values)
    for config in CONFIGS:
        check_negotiation(values, config)
    try:
        params = accept_server_response(values, client)
    except HandshakeError:
        params = None
    if params is not None:
        assert client.compress_enabled
        assert params.client_max_window_bits <= client.client_max_window_bits
    check_roundtrip(client, server, raw)
