"""permessage-deflate (RFC 7692): the header grammar and the negotiation.

Pure protocol core: strings in, decisions out, no I/O. The one implementation of the
extension seam (``_extension``): negotiation gives a :class:`DeflateParams`, the
``Extension`` a connection holds, whose ``encoder()`` is a ``Compressor`` and
``decoder()`` a ``Decompressor`` (``_deflate_codec``, where the bytes are deflated
and inflated), each owned by one side of one connection for its lifetime.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from ._config import Config
from ._deflate_codec import Compressor, Decompressor
from ._errors import HandshakeError
from ._extension import PLAIN
from ._frames import RSV1

__all__ = [
    "EXTENSION_NAME",
    "DeflateParams",
    "parse_extensions",
    "negotiate_server",
    "client_offer",
    "accept_server_response",
]

EXTENSION_NAME = "permessage-deflate"

# Window-bits values exactly as they may be spelled: decimal, no leading zeros, 8..15.
_BITS = {str(bits): bits for bits in range(8, 16)}

# ---------------------------------------------------------------------------------
# Header grammar (RFC 6455 section 9.1 over RFC 7230 list and token rules)
# ---------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED_RE = re.compile(r'"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)"')
_OWS_RE = re.compile(r"[ \t]*")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)

Param: TypeAlias = "tuple[str, str | None]"
Extension: TypeAlias = "tuple[str, list[Param]]"


def parse_extensions(header_values: Sequence[str]) -> list[Extension]:
    """Parse ``Sec-WebSocket-Extensions`` values into ``(name, [(param, value)])``.

    Several header lines are one comma-separated list (RFC 7230 3.2.2); empty list
    elements are ignored (RFC 7230 7). A quoted value is unescaped and must then be a
    token (RFC 6455 9.1). Order and duplicates are kept: judging them is the
    negotiator's job. Raises ``ValueError`` on anything else.
    """
    extensions: list[Extension] = []
    for value in header_values:
        _parse_list(value, extensions)
    return extensions


def _parse_list(text: str, out: list[Extension]) -> None:
    pos = _skip_ows(text, 0)
    while pos < len(text):
        if text[pos] == ",":  # empty element
            pos = _skip_ows(text, pos + 1)
            continue
        name, pos = _expect_token(text, pos, "extension name")
        params: list[Param] = []
        pos = _skip_ows(text, pos)
        while pos < len(text) and text[pos] == ";":
            pos = _skip_ows(text, pos + 1)
            key, pos = _expect_token(text, pos, "parameter name")
            pos = _skip_ows(text, pos)
            param_value: str | None = None
            if pos < len(text) and text[pos] == "=":
                pos = _skip_ows(text, pos + 1)
                param_value, pos = _parse_value(text, pos)
                pos = _skip_ows(text, pos)
            params.append((key, param_value))
        out.append((name, params))
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"unexpected {text[pos]!r} at {pos} in {text!r}")
            pos = _skip_ows(text, pos + 1)


def _skip_ows(text: str, pos: int) -> int:
    match = _OWS_RE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect_token(text: str, pos: int, what: str) -> tuple[str, int]:
    match = _TOKEN_RE.match(text, pos)
    if match is None:
        raise ValueError(f"expected {what} at {pos} in {text!r}")
    return match.group(), match.end()


def _parse_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        match = _QUOTED_RE.match(text, pos)
        if match is None:
            raise ValueError(f"bad quoted-string at {pos} in {text!r}")
        value = _UNESCAPE_RE.sub(r"\1", match.group(1))
        if _TOKEN_RE.fullmatch(value) is None:
            raise ValueError(f"quoted value {value!r} is not a token in {text!r}")
        return value, match.end()
    return _expect_token(text, pos, "parameter value")


# ---------------------------------------------------------------------------------
# Negotiation (RFC 7692 section 7.1)
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeflateParams:
    """The agreed parameters, named as on the wire; both sides hold the same values,
    with one safe exception: a server that limits its own window unasked may not say so
    (RFC 7692 7.1.2.1), so its client holds 15 for ``server_max_window_bits``.

    Also the negotiated ``Extension`` (see ``_extension``): it owns RSV1.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    @property
    def name(self) -> str:
        return EXTENSION_NAME

    @property
    def rsv(self) -> int:
        return RSV1

    def encoder(self, *, is_server: bool, config: Config) -> Compressor:
        return Compressor(self, is_server=is_server, level=config.compress_level,
                          threshold=config.compress_threshold)

    def decoder(self, *, is_server: bool, config: Config) -> Decompressor:
        return Decompressor(self, is_server=is_server, max_size=config.max_content_length)

    def broadcast_key(self, config: Config, length: int) -> Hashable | None:
        """Below the threshold a message goes uncompressed: the plain frame. Without
        server context takeover the client resets its window after every message, so
        a message compressed from an empty window is valid for all such connections
        with the same window and level. With takeover, the client keeps every message
        in its window and so must our compressor: no sharing."""
        if length < config.compress_threshold:
            return PLAIN
        if not self.server_no_context_takeover:
            return None
        return (EXTENSION_NAME, self.server_max_window_bits, config.compress_level)

    def shared_encoder(self, config: Config) -> Compressor:
        fresh = DeflateParams(server_no_context_takeover=True,
                              server_max_window_bits=self.server_max_window_bits)
        return fresh.encoder(is_server=True, config=config)


_PARAM_NAMES = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def _param_map(params: list[Param]) -> dict[str, str | None] | str:
    """Params as a dict, or the reason they are unacceptable (unknown or repeated)."""
    seen: dict[str, str | None] = {}
    for key, value in params:
        if key not in _PARAM_NAMES:
            return f"unknown parameter {key!r}"
        if key in seen:
            return f"repeated parameter {key!r}"
        seen[key] = value
    return seen


def negotiate_server(
    header_values: Sequence[str], config: Config
) -> tuple[DeflateParams, str] | None:
    """Accept the client's first acceptable offer: ``(params, response value)`` or None.

    Offers are tried in the client's order of preference (RFC 7692 5.1); an offer with
    an unknown, repeated or invalid parameter is declined, and so is a header that does
    not parse: either way the connection goes on uncompressed rather than failing.
    """
    if not config.compress_enabled:
        return None
    try:
        extensions = parse_extensions(header_values)
    except ValueError:
        return None
    for name, params in extensions:
        if name == EXTENSION_NAME:
            accepted = _accept_offer(params, config)
            if accepted is not None:
                return accepted
    return None


def _accept_offer(params: list[Param], config: Config) -> tuple[DeflateParams, str] | None:
    offer = _param_map(params)
    if isinstance(offer, str):
        return None
    response = [EXTENSION_NAME]

    if "server_no_context_takeover" in offer and offer["server_no_context_takeover"] is not None:
        return None
    server_nct = "server_no_context_takeover" in offer or not config.server_context_takeover
    if server_nct:
        response.append("server_no_context_takeover")

    if "client_no_context_takeover" in offer and offer["client_no_context_takeover"] is not None:
        return None
    client_nct = "client_no_context_takeover" in offer or not config.client_context_takeover
    if client_nct:
        response.append("client_no_context_takeover")

    # We may always compress with a smaller window than agreed, so our own limit needs
    # no announcing; the client's limit on our window must be acknowledged (7.1.2.1).
    server_bits = config.server_max_window_bits
    if "server_max_window_bits" in offer:
        requested = _BITS.get(offer["server_max_window_bits"] or "")
        if requested is None:
            return None  # the value is mandatory in an offer
        server_bits = min(server_bits, requested)
        response.append(f"server_max_window_bits={server_bits}")

    # Limiting the client's window needs its consent: it must have offered the parameter
    # (7.1.2.2). Announcing 15 would say nothing, so it is left out.
    client_bits = 15
    if "client_max_window_bits" in offer:
        raw = offer["client_max_window_bits"]
        offered = 15 if raw is None else _BITS.get(raw)
        if offered is None:
            return None
        client_bits = min(config.client_max_window_bits, offered)
        if client_bits < 15:
            response.append(f"client_max_window_bits={client_bits}")

    params_in_force = DeflateParams(server_nct, client_nct, server_bits, client_bits)
    return params_in_force, "; ".join(response)


def client_offer(config: Config) -> str:
    """The client's ``Sec-WebSocket-Extensions`` value expressing all four settings.

    ``client_max_window_bits`` is always present (bare when 15) so the server may shrink
    our window if it wants to save memory. When we ask for a smaller server window, a
    second offer without that request follows, as RFC 7692 7.1.3 suggests: a server
    that does not support the parameter then still compresses (we inflate with 15 bits)
    instead of declining compression altogether.
    """
    parts = [EXTENSION_NAME]
    if not config.server_context_takeover:
        parts.append("server_no_context_takeover")
    if not config.client_context_takeover:
        parts.append("client_no_context_takeover")
    if config.client_max_window_bits < 15:
        parts.append(f"client_max_window_bits={config.client_max_window_bits}")
    else:
        parts.append("client_max_window_bits")
    fallback = "; ".join(parts)
    if config.server_max_window_bits == 15:
        return fallback
    parts.insert(-1, f"server_max_window_bits={config.server_max_window_bits}")
    return f"{'; '.join(parts)}, {fallback}"


def accept_server_response(header_values: Sequence[str], config: Config) -> DeflateParams | None:
    """Check the server's answer to :func:`client_offer`; None when it chose no extension.

    Any deviation fails the handshake (RFC 7692 5): another extension or a second one,
    a parameter the response may not carry or we did not allow, a repeated parameter, an
    invalid value. Window sizes larger than we asked for are tolerated, because they
    are always safe: a larger ``server_max_window_bits`` (legal anyway when it answers
    our fallback offer, which does not name one) only means we inflate with a larger
    window; a larger ``client_max_window_bits`` (Autobahn's fuzzingserver sends 15 in
    cases 13.4 and 13.6) is an allowance we need not use: we still compress within the
    window we offered, which the server's inflater handles. Likewise a server that
    ignores our request for ``server_no_context_takeover``.
    """
    try:
        extensions = parse_extensions(header_values)
    except ValueError as exc:
        raise _handshake_error(f"invalid Sec-WebSocket-Extensions header: {exc}") from None
    if not extensions:
        return None
    if not config.compress_enabled:
        raise _handshake_error("server accepted an extension the client did not offer")
    if len(extensions) > 1:
        raise _handshake_error("server accepted more than one extension")
    name, params = extensions[0]
    if name != EXTENSION_NAME:
        raise _handshake_error(f"server accepted unoffered extension {name!r}")
    response = _param_map(params)
    if isinstance(response, str):
        raise _handshake_error(f"{EXTENSION_NAME} response has {response}")

    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in response and response[flag] is not None:
            raise _handshake_error(f"{EXTENSION_NAME} parameter {flag!r} takes no value")

    server_bits = 15
    if "server_max_window_bits" in response:
        server_bits = _response_bits(response, "server_max_window_bits")

    # client_offer always offers client_max_window_bits, with our limit when below 15.
    client_bits = config.client_max_window_bits
    if "client_max_window_bits" in response:
        client_bits = min(client_bits, _response_bits(response, "client_max_window_bits"))

    return DeflateParams(
        server_no_context_takeover="server_no_context_takeover" in response,
        client_no_context_takeover=(
            "client_no_context_takeover" in response or not config.client_context_takeover
        ),
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


def _response_bits(response: dict[str, str | None], key: str) -> int:
    bits = _BITS.get(response[key] or "")
    if bits is None:
        raise _handshake_error(f"invalid {key} value {response[key]!r} in response")
    return bits


def _handshake_error(message: str) -> HandshakeError:
    return HandshakeError(message, status=0)
