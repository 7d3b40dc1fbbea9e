"""Exception hierarchy.

Every error that ends a connection carries the close code it is sent with in one
attribute, ``close_code`` (None: no close frame can or need be sent, e.g. the
transport failed), so the connection layer never has to guess which code a failure
deserves.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._types import CloseCode


class WebSocketError(Exception):
    """Base class of every error raised by trio-gws.

    ``close_code`` is the code a connection that fails with this error is closed with,
    or None when no close frame is sent for it.
    """

    close_code: int | None = None


class HandshakeError(WebSocketError):
    """The opening handshake failed.

    On the server side ``status``, ``headers`` and ``body`` describe the HTTP response
    that was (or is to be) sent to the client; on the client side they describe the
    response the server gave (``status`` 0 when there was no parsable response).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[str, str]] = list(headers)
        self.body = body


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455 (or RFC 7692); ``close_code`` is what we close with."""

    close_code: int = CloseCode.PROTOCOL_ERROR

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class MessageTooLargeError(ProtocolError):
    """A frame or message exceeded ``Config.max_content_length`` (close code 1009)."""

    close_code = CloseCode.MESSAGE_TOO_BIG


class InvalidTextError(ProtocolError):
    """A text message or close reason was not valid UTF-8 (close code 1007)."""

    close_code = CloseCode.INVALID_DATA


class ConnectionClosed(WebSocketError):
    """The connection is closing or closed: it cannot be written to any more.

    Catch this for any close. ``code`` and ``reason`` say how it ended (or is ending):
    the peer's close frame when it arrived, else the close frame we sent (our code,
    empty reason), else 1006 ("abnormal": no close frame either way).
    """

    def __init__(self, message: str, code: int = CloseCode.ABNORMAL,
                 reason: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """...after a clean close: every close frame so far said 1000 or 1001 (or no code),
    and nothing failed."""


class ConnectionClosedError(ConnectionClosed):
    """...after anything else: an error code, a failure, or no close handshake.

    Also what ``on_error`` gets when the transport fails or the peer vanishes.
    """


class WriteQueueFullError(WebSocketError):
    """``write_nowait`` hit ``Config.write_queue_size``: the peer does not keep up.

    The connection is failed with close code 1008 (the queued messages are counted
    in the error reported to ``on_error``); the caller of ``write_nowait`` gets this
    error too, so no message is dropped without somebody being told.
    """

    close_code = CloseCode.POLICY_VIOLATION


class HandlerError(WebSocketError):
    """Internal: an ``EventHandler`` callback raised; the original is ``__cause__``.

    Not exported: ``on_error`` gets the original exception itself. The connection
    closes with 1011.
    """

    close_code = CloseCode.INTERNAL_ERROR


class WebSocketTimeoutError(WebSocketError, TimeoutError):
    """A bounded wait ran out: handshake, close handshake, keepalive or read deadline.

    Also a builtin ``TimeoutError``, so generic timeout handling catches it.
    """

    close_code = CloseCode.INTERNAL_ERROR



class ProxyError(HandshakeError):
    """The proxy would not open a tunnel to the server (client side).

    ``status`` is the proxy's HTTP answer to CONNECT (407 when it wants credentials or
    refused them, 403, 502...), 0 when it gave no usable answer (it closed, stalled
    into a malformed or over-long reply, or could not be reached). SOCKS refusals use
    the HTTP status that means the same, so one check covers both kinds of proxy:
    authentication refused is 407, a connection the proxy's rules forbid is 403, any
    other SOCKS failure 502; ``socks_code`` keeps the SOCKS reply code when there was
    one. ``proxy`` is the proxy's URL without its credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        proxy: str = "",
        socks_code: int | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, body=body)
        self.proxy = proxy
        self.socks_code = socks_code


class HubError(WebSocketError):
    """A hub (``gws.open_hub``) could not do what was asked, e.g. Redis refused a
    command (the message says which and why)."""


class HubUnavailableError(HubError):
    """The hub's engine (Redis) cannot be reached right now: nothing was buffered.

    ``publish`` raises it while Redis is down (a publish cut off by the outage may or
    may not have reached Redis), ``join`` while the subscription cannot be made. The
    hub reconnects by itself, with bounded backoff; retry later, or tell the client.
    """
