"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

Pure protocol core: strings and bytes in, decisions and bytes out, no I/O. The one
implementation of the extension seam (``_extension``): negotiation gives a
:class:`DeflateParams`, the ``Extension`` a connection holds, whose ``encoder()`` is
a :class:`Compressor` and ``decoder()`` a :class:`Decompressor`, each owned by one
side of one connection for its lifetime.

Two zlib facts shape this module:

* zlib cannot *compress* raw deflate with an 8-bit (256-byte) window: 1.2.9+ refuses
  it, older releases quietly used 9 bits. When our side must stay within 256 bytes we
  compress with ``Z_RLE``, whose matches all have distance 1 by zlib's documented
  contract, so the output is valid for any window. It compresses less, which only
  test suites (the only peers known to ask for 8) will notice.
* zlib *inflates* with any window from 8 to 15 bits. We inflate with at least 9 bits:
  a larger window than the peer's is always safe, and it tolerates peers that agreed
  to 8 but compress with old zlib's 9.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from ._config import Config
from ._errors import HandshakeError, MessageTooLargeError, ProtocolError
from ._extension import PLAIN
from ._frames import RSV1
from ._mask import Buffer

__all__ = [
    "EXTENSION_NAME",
    "INVALID_DATA_CLOSE_CODE",
    "DeflateParams",
    "parse_extensions",
    "negotiate_server",
    "client_offer",
    "accept_server_response",
    "Compressor",
    "Decompressor",
    "memory_level",
]

EXTENSION_NAME = "permessage-deflate"

#: Close code for a compressed payload that does not inflate. RFC 7692 only says "fail
#: the connection"; 1007 ("invalid frame payload data") fits a well-framed message
#: whose payload is not what its RSV1 bit declares, and matches what ws (Node) sends.
INVALID_DATA_CLOSE_CODE = 1007

# Every sync (or full) flush ends with this empty stored block; RFC 7692 7.2.1 has the
# sender strip it and the receiver put it back.
_TAIL = b"\x00\x00\xff\xff"

# An empty message compresses to the header byte of an empty stored block (7.2.3.6).
_EMPTY_MESSAGE = b"\x00"

# Window-bits values exactly as they may be spelled: decimal, no leading zeros, 8..15.
_BITS = {str(bits): bits for bits in range(8, 16)}

_MAX_LENGTH = sys.maxsize  # zlib's max_length is a Py_ssize_t

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


# ---------------------------------------------------------------------------------
# Compression (RFC 7692 section 7.2)
# ---------------------------------------------------------------------------------


def memory_level(window_bits: int) -> int:
    """zlib memLevel for a compression window: scaled down with small windows.

    Deflate state is about ``2**(wbits+2) + 2**(memLevel+9)`` bytes; the default
    memLevel 8 alone is 128 KiB, which would dwarf a 1 KiB window. Measured on JSON
    traffic, memLevel below ``wbits - 6`` costs ratio while more gains nothing.
    """
    return max(4, min(8, window_bits - 6))


def _new_deflater(window_bits: int, level: int) -> zlib._Compress:
    if window_bits <= 8:
        # Distance-1 matches only: valid whatever window the peer inflates with.
        return zlib.compressobj(level, zlib.DEFLATED, -9, memory_level(9), zlib.Z_RLE)
    return zlib.compressobj(level, zlib.DEFLATED, -window_bits, memory_level(window_bits))


class Compressor:
    """Compresses whole messages for one side of a connection.

    ``is_server`` picks the side: a server compresses under the ``server_*`` params.
    Without context takeover a *full* flush ends each message: it empties the history
    exactly as a fresh compressor would, without reallocating one per message.
    """

    __slots__ = ("window_bits", "no_context_takeover", "threshold", "_deflater",
                 "_flush_mode", "_level")

    def __init__(self, params: DeflateParams, *, is_server: bool, level: int,
                 threshold: int = 0) -> None:
        if is_server:
            bits, no_takeover = params.server_max_window_bits, params.server_no_context_takeover
        else:
            bits, no_takeover = params.client_max_window_bits, params.client_no_context_takeover
        self.window_bits = bits
        self.no_context_takeover = no_takeover
        self.threshold = threshold  # smaller messages are sent as they are
        self._level = level
        self._deflater = _new_deflater(bits, level)
        self._flush_mode = zlib.Z_FULL_FLUSH if no_takeover else zlib.Z_SYNC_FLUSH

    def encode(self, data: Buffer) -> tuple[Buffer, int]:
        """The ``MessageEncoder`` side: compressed with RSV1 from ``threshold`` on."""
        if len(data) < self.threshold:
            return data, 0
        return self.compress(data), RSV1

    def encode_fragment(self, data: Buffer, *, first: bool, last: bool
                        ) -> tuple[Buffer, int]:
        """A fragment of a streamed message, always compressed (its size is unknown
        when its first frame goes). Every fragment but the last ends with a sync
        flush, whose empty stored block stays in place, so the peer can inflate each
        fragment as it arrives; the last ends the message as ``compress`` does
        (RFC 7692 7.2.1: the message's data is the fragments' payloads joined)."""
        rsv = RSV1 if first else 0
        if first and last:
            return self.compress(data), rsv
        deflater = self._deflater
        out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        if not last:
            return out, rsv
        if self.no_context_takeover:
            # A flush with no new input may do nothing at all, reset included: start
            # the next message from a new compressor instead.
            self._deflater = _new_deflater(self.window_bits, self._level)
        # No new input since the last fragment's flush: zlib emits nothing, and the
        # last fragment is empty (that flush's empty block already ends the data).
        return (out[:-4] if out[-4:] == _TAIL else out), rsv

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """One whole message -> the payload to send with RSV1 (flush tail stripped)."""
        if not data:
            # zlib would emit nothing for a flush with no new input; 7.2.3.6 says 0x00.
            return _EMPTY_MESSAGE
        head = self._deflater.compress(data)
        tail = self._deflater.flush(self._flush_mode)
        if tail[-4:] != _TAIL:  # pragma: no cover - zlib guarantees it after new input
            raise RuntimeError("zlib flush did not end with an empty stored block")
        if not head:
            return tail[:-4]
        return b"".join((head, memoryview(tail)[:-4]))


class Decompressor:
    """Inflates the messages of one side of a connection, each capped at ``max_size``.

    Feed every frame payload of a compressed message, then call :meth:`finish`. After
    an exception the connection is to be failed and this object dropped.
    """

    __slots__ = (
        "window_bits",
        "no_context_takeover",
        "max_size",
        "_wbits",
        "_inflater",
        "_size",
        "_ended",
        "_after_end",
    )

    def __init__(self, params: DeflateParams, *, is_server: bool, max_size: int) -> None:
        if is_server:
            bits, no_takeover = params.client_max_window_bits, params.client_no_context_takeover
        else:
            bits, no_takeover = params.server_max_window_bits, params.server_no_context_takeover
        self.window_bits = bits
        self.no_context_takeover = no_takeover
        self.max_size = max_size
        self._wbits = -max(bits, 9)
        self._inflater = zlib.decompressobj(self._wbits)
        self._size = 0  # bytes inflated so far for the current message
        self._ended = False  # the deflate stream ended (BFINAL) inside this message
        self._after_end = 0  # bytes seen after that end

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Inflate more of the current message; raises before exceeding ``max_size``.

        zlib is asked for at most one byte past the budget, so a tiny frame that would
        inflate to gigabytes never gets the chance to allocate them.
        """
        if self._ended:
            self._check_after_end(data)
            return b""
        inflater = self._inflater
        try:
            out = inflater.decompress(data, min(self.max_size - self._size + 1, _MAX_LENGTH))
        except zlib.error as exc:
            raise ProtocolError(
                f"invalid compressed data: {exc}", INVALID_DATA_CLOSE_CODE
            ) from None
        self._size += len(out)
        if self._size > self.max_size:
            raise MessageTooLargeError(
                f"decompressed message exceeds the limit of {self.max_size} bytes"
            )
        if inflater.eof:
            self._ended = True
            self._check_after_end(inflater.unused_data)
        return out

    def finish(self) -> bytes:
        """End of message: flush it out and get ready for the next one."""
        out = b"" if self._ended else self.feed(_TAIL)
        self._next_message()
        return out

    def _next_message(self) -> None:
        if self._ended or self.no_context_takeover:
            # A peer that ended its deflate stream restarts with an empty window, as a
            # zlib sender using Z_FINISH must; and without takeover history is dropped.
            self._inflater = zlib.decompressobj(self._wbits)
            self._ended = False
            self._after_end = 0
        self._size = 0

    def feed_pieces(self, data: bytes | bytearray | memoryview, limit: int
                    ) -> Iterator[bytes]:
        """``feed``, in pieces of at most ``limit`` bytes (streaming): memory stays
        bounded however far the input inflates."""
        if self._ended:
            self._check_after_end(data)
            return
        inflater = self._inflater
        while True:
            try:
                out = inflater.decompress(data, min(limit, self.max_size - self._size + 1))
            except zlib.error as exc:
                raise ProtocolError(
                    f"invalid compressed data: {exc}", INVALID_DATA_CLOSE_CODE
                ) from None
            self._size += len(out)
            if self._size > self.max_size:
                raise MessageTooLargeError(
                    f"decompressed message exceeds the limit of {self.max_size} bytes"
                )
            if out:
                yield out
            if inflater.eof:
                self._ended = True
                self._check_after_end(inflater.unused_data)
                return
            data = inflater.unconsumed_tail
            # A full piece may leave output inside zlib even with no input left.
            if not data and len(out) < limit:
                return

    def finish_pieces(self, limit: int) -> Iterator[bytes]:
        """``finish``, in pieces of at most ``limit`` bytes (streaming)."""
        if not self._ended:
            yield from self.feed_pieces(_TAIL, limit)
        self._next_message()

    def _check_after_end(self, data: bytes | bytearray | memoryview) -> None:
        # RFC 7692 7.2.3.3: after a BFINAL block the sender may add one 0x00 octet so
        # that, with the 00 00 ff ff the receiver appends, an empty stored block follows.
        # Anything else after the end of the stream is not part of any valid message.
        if not data:
            return
        self._after_end += len(data)
        if self._after_end > 1 or bytes(data) != b"\x00":
            raise ProtocolError(
                "data after the end of the deflate stream", INVALID_DATA_CLOSE_CODE
            )
