"""The extension seam: what a negotiated extension gives a connection.

An extension (RFC 6455 section 9) is agreed in the opening handshake and then owns
some of the frame header's reserved bits. trio-gws supports per-message extensions,
the kind RFC 7692 defines: the bits are set on a message's first frame and the
message's payload is transformed as a whole. permessage-deflate (``_deflate``) is the
one implementation.

Negotiation is the only place an extension is named. Afterwards a connection holds an
``Extension`` and knows nothing else about it:

* the reader accepts exactly the reserved bits in ``Extension.rsv`` (any other one
  fails the connection with 1002) and passes a marked message's payload through the
  ``MessageDecoder`` from ``decoder()``;
* the writer passes each outgoing message through the ``MessageEncoder`` from
  ``encoder()``, which returns the payload and the bits to set;
* ``Broadcaster`` asks ``broadcast_key()`` whether a message encoded once by
  ``shared_encoder()`` may go unchanged to every connection with the same key.

Nothing runs per frame besides a bit test: no hook on the hot path. Adding an
extension means a module implementing these three protocols and a line in each
negotiation function below.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from ._mask import Buffer

if TYPE_CHECKING:
    from ._config import Config
    from ._http import Headers


#: The broadcast key of a message sent as it is, extension or not (see
#: ``Extension.broadcast_key``).
PLAIN: Hashable = ("plain",)


class MessageEncoder(Protocol):
    """Transforms whole outgoing messages, in the order they are sent."""

    def encode(self, data: Buffer) -> tuple[Buffer, int]:
        """(payload to send, reserved bits to set on the message's first frame)."""
        ...

    def encode_fragment(self, data: Buffer, *, first: bool, last: bool
                        ) -> tuple[Buffer, int]:
        """One fragment of a message sent in pieces: (its payload, the reserved bits
        for its frame). The receiver must be able to decode each fragment as it
        arrives; the bits go on the first fragment only."""
        ...


class MessageDecoder(Protocol):
    """Undoes the transformation of incoming marked messages, frame by frame.

    Raises ``ProtocolError`` (with its close code) for data it cannot decode and
    ``MessageTooLargeError`` before a message grows past its ``max_size``.
    """

    def feed(self, data: Buffer) -> bytes:
        """Decode more of the current message."""
        ...

    def finish(self) -> bytes:
        """The message ended: the rest of its decoded bytes."""
        ...

    def feed_pieces(self, data: Buffer, limit: int) -> Iterator[bytes]:
        """``feed`` for a streamed message: its output in pieces of at most ``limit``."""
        ...

    def finish_pieces(self, limit: int) -> Iterator[bytes]:
        """``finish`` for a streamed message, in pieces of at most ``limit``."""
        ...


class Extension(Protocol):
    """A negotiated extension: the same parameters on both sides of a connection."""

    @property
    def name(self) -> str:
        """Its registered name, e.g. ``permessage-deflate``."""
        ...

    @property
    def rsv(self) -> int:
        """The reserved bits (of the first header byte, e.g. RSV1 = 0x40) it owns."""
        ...

    def encoder(self, *, is_server: bool, config: Config) -> MessageEncoder:
        """A fresh encoder for one side of one connection."""
        ...

    def decoder(self, *, is_server: bool, config: Config) -> MessageDecoder:
        """A fresh decoder for one side of one connection."""
        ...

    def broadcast_key(self, config: Config, length: int) -> Hashable | None:
        """For a server connection and a message of ``length`` bytes: a key under which
        one encoding of it is valid for every connection with the same key (``PLAIN``:
        the message as it is, without the extension), or None when it must go through
        this connection's own encoder (its state depends on history)."""
        ...

    def shared_encoder(self, config: Config) -> MessageEncoder:
        """An encoder whose output is valid for every connection of ``broadcast_key``."""
        ...


def negotiate_server(headers: Headers, config: Config) -> tuple[Extension, str] | None:
    """The extension a server accepts from the client's ``Sec-WebSocket-Extensions``,
    and the value to answer with; None to go on without one. The headers are only
    looked at when an extension is enabled (most handshakes: none is)."""
    if config.compress_enabled:
        from ._deflate import negotiate_server as deflate

        return deflate(headers.get_all("Sec-WebSocket-Extensions"), config)
    return None


def client_offer(config: Config) -> str | None:
    """The client's ``Sec-WebSocket-Extensions`` value, or None to offer nothing."""
    if config.compress_enabled:
        from ._deflate import client_offer as deflate

        return deflate(config)
    return None


def accept_server_response(answers: Sequence[str], config: Config,
                           offered: bool) -> Extension | None:
    """Check the server's ``Sec-WebSocket-Extensions`` answer to our offer.

    Raises:
        HandshakeError: the server chose something we did not offer or allow.
    """
    if offered:
        from ._deflate import accept_server_response as deflate

        return deflate(answers, config)
    if answers:
        from ._errors import HandshakeError

        raise HandshakeError(f"server answered with extensions {list(answers)!r} "
                             "we did not offer", status=0)
    return None
