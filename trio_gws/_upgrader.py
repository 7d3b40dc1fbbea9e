"""``Upgrader``: the server side of the opening handshake on any Trio stream.

One request per stream: its head is read (bounded by the head limits), then it is
either a WebSocket upgrade (checked, its origin checked, authorized, answered with
101: a ``Conn``) or a plain HTTP request, answered by ``Config.http_handler`` (a
health check, a page) and closed. Everything, the application's callbacks included,
is bounded by ``handshake_timeout``; every refusal is a real HTTP response.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import MutableMapping
from typing import Any

import trio

from ._config import Config
from ._conn import Conn
from ._errors import HandshakeError, WebSocketTimeoutError
from ._extension import negotiate_server
from ._handler import EventHandler
from ._handshake import (
    Request,
    build_accept_response,
    build_error_response,
    check_request,
    choose_subprotocol,
    parse_request_line,
)
from ._http import find_head_end, header_items, parse_head
from ._response import Accept, Response
from ._transport import half_close

#: How long we spend trying to deliver an HTTP response that closes the connection.
_RESPONSE_TIMEOUT = 1.0

#: Errors of a transport that failed during the handshake.
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)


def is_upgrade(request: Request) -> bool:
    """True when the request asks for a WebSocket (``Upgrade: websocket``)."""
    return "websocket" in request.headers.tokens("Upgrade")


async def send_response_and_close(stream: trio.abc.Stream, response: bytes) -> None:
    """Send a response that ends the connection (bounded), then close the stream.

    The response is followed by a half-close and a drain of what the client still
    sends, so the kernel does not answer unread input with a reset that could destroy
    the response before the client reads it.
    """
    with trio.move_on_after(_RESPONSE_TIMEOUT):
        try:
            await stream.send_all(response)
            if await half_close(stream):
                while await stream.receive_some(65536):
                    pass
        except (*_TRANSPORT_ERRORS, trio.BusyResourceError):
            pass
    await trio.aclose_forcefully(stream)


class Upgrader:
    """Turns accepted streams into ``Conn`` objects (gws's Upgrader).

    Args:
        handler: the ``EventHandler`` of every connection it makes.
        config: options; the server side uses the handshake limits, ``subprotocols``,
            ``response_header``, ``origins``, ``authorize`` and ``http_handler``.
    """

    def __init__(self, handler: EventHandler, config: Config | None = None) -> None:
        self.handler = handler
        self.config = config if config is not None else Config()
        self._extra_headers = header_items(self.config.response_header)
        origins = self.config.origins
        self._origins = (None if origins is None else
                         frozenset(o.lower() if o is not None else None for o in origins))

    async def upgrade(self, stream: trio.abc.Stream) -> Conn:
        """Run the server side of the opening handshake on ``stream``.

        Bounded by ``handshake_timeout`` (a TLS handshake included). On success returns
        the ``Conn``: run it with ``listen()``. On failure the client gets a real HTTP
        response and the stream is closed.

        Raises:
            HandshakeError: the request was refused (``status`` is what the client got:
                400, 403, 405, 414, 426, 431, 505, or what ``authorize`` chose), or it
                was a plain HTTP request answered by ``http_handler`` (its status), or
                the transport failed (``status`` 0).
            WebSocketTimeoutError: not finished within ``handshake_timeout`` (408).
        """
        outcome = await self.handle(stream)
        if isinstance(outcome, Conn):
            return outcome
        raise HandshakeError(f"not a WebSocket upgrade: answered {outcome.status} by "
                             "http_handler", status=outcome.status,
                             headers=outcome.header_items, body=outcome.body_bytes)

    async def upgrade_request(self, stream: trio.abc.Stream, request: Request,
                              leftover: bytes = b"") -> Conn:
        """Upgrade a request whose head another HTTP server already read and parsed.

        For embedding trio-gws in an HTTP server (an h11-based one, say): pass the
        stream, the request (method, target, headers) and whatever bytes that server
        read past the head (``leftover``: the client's first frames may be there).
        The request is checked exactly as ``upgrade`` checks it; ``http_handler`` is
        not consulted (the embedding server answers its own plain requests).

        Raises:
            HandshakeError, WebSocketTimeoutError: as ``upgrade``.
        """
        outcome = await self.handle(stream, request, leftover)
        assert isinstance(outcome, Conn)
        return outcome

    async def handle(self, stream: trio.abc.Stream, request: Request | None = None,
                     leftover: bytes = b"") -> Conn | Response:
        """One request: the ``Conn`` of an upgrade, or the ``Response`` a plain request
        was answered with (the stream is closed then). Raises as ``upgrade``."""
        config = self.config
        try:
            with trio.fail_after(config.handshake_timeout):
                if request is None:
                    request, leftover = await self._read_request(stream)
                    if config.http_handler is not None and not is_upgrade(request):
                        response = await self._http_response(request)
                        if response is not None:
                            await send_response_and_close(stream, build_error_response(
                                response.status, response.body_bytes, response.header_items,
                                head_only=request.method == "HEAD"))
                            return response
                return await self._accept(stream, request, leftover)
        except trio.TooSlowError:
            await self._reject(stream, HandshakeError("handshake timed out", status=408))
            raise WebSocketTimeoutError(
                f"opening handshake not finished within {config.handshake_timeout}s"
            ) from None
        except HandshakeError as exc:
            await self._reject(stream, exc)
            raise
        except _TRANSPORT_ERRORS as exc:
            await trio.aclose_forcefully(stream)
            raise HandshakeError(f"transport failed during the handshake: {exc!r}",
                                 status=0) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _read_request(self, stream: trio.abc.Stream) -> tuple[Request, bytes]:
        """Read and parse one request head; (request, bytes that came after it)."""
        config = self.config
        buf = bytearray()
        while True:
            end = find_head_end(buf, config.max_request_line, config.max_header_bytes)
            if end >= 0:
                break
            data = await stream.receive_some(config.read_buffer_size)
            if not data:
                raise HandshakeError("client closed the stream during the handshake", status=0)
            buf += data
        start_line, headers = parse_head(bytes(buf[:end]), config.max_header_count)
        method, target = parse_request_line(start_line)
        return Request(method, target, headers), bytes(buf[end:])

    async def _accept(self, stream: trio.abc.Stream, request: Request, leftover: bytes
                      ) -> Conn:
        config = self.config
        key = check_request(request)
        self._check_origin(request)
        headers = request.headers
        subprotocol = choose_subprotocol(headers, config.subprotocols)
        extension = extensions = None
        agreed = negotiate_server(headers, config)
        if agreed is not None:
            extension, extensions = agreed

        session: MutableMapping[str, Any] = {}
        accepted = await self._authorize(request, session)
        extra = self._extra_headers
        if accepted is not None:
            extra = [*extra, *accepted.header_items]

        response = build_accept_response(key, subprotocol=subprotocol, extensions=extensions,
                                         extra_headers=extra)
        await stream.send_all(response)
        conn = Conn(stream, self.handler, config, is_server=True, request=request,
                    subprotocol=subprotocol, extension=extension, leftover=leftover)
        conn.session = session
        return conn

    def _check_origin(self, request: Request) -> None:
        """Cross-site WebSocket hijacking: a page of another site may open a WebSocket
        to us with the user's cookies; only the configured origins get through."""
        if self._origins is None:
            return
        values = request.headers.get_all("Origin")
        if len(values) > 1:
            raise HandshakeError("Origin header repeated")
        origin = values[0].lower() if values else None
        if origin not in self._origins:
            raise HandshakeError(f"origin {origin!r} not allowed", status=403,
                                 body=b"origin not allowed\n")

    async def _authorize(self, request: Request, session: MutableMapping[str, Any]
                         ) -> Accept | None:
        authorize = self.config.authorize
        if authorize is None:
            return None
        verdict = await self._call_app("authorize", authorize, request, session)
        if verdict is None or verdict is True:
            return None
        if isinstance(verdict, Accept):
            return verdict
        if verdict is False:
            raise HandshakeError("authorize refused the request", status=403, body=b"forbidden")
        if isinstance(verdict, Response):
            raise HandshakeError(f"authorize rejected the request with {verdict.status}",
                                 status=verdict.status, headers=verdict.header_items,
                                 body=verdict.body_bytes)
        self.config.logger.error("authorize returned %r for %s; expected True, False, "
                                 "None, an Accept or a Response", verdict, request.target)
        raise HandshakeError(f"authorize returned {verdict!r}", status=500,
                             body=b"internal server error")

    async def _http_response(self, request: Request) -> Response | None:
        assert self.config.http_handler is not None
        response = await self._call_app("http_handler", self.config.http_handler, request)
        if response is None or isinstance(response, Response):
            return response
        self.config.logger.error("http_handler returned %r for %s %s; expected a "
                                 "gws.Response or None", response, request.method,
                                 request.target)
        raise HandshakeError(f"http_handler returned {response!r}", status=500,
                             body=b"internal server error")

    async def _call_app(self, name: str, function: Any, *args: Any) -> Any:
        """Call an application callback, sync or async; an exception is a 500."""
        try:
            result = function(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except trio.Cancelled:
            raise
        except Exception as exc:
            self.config.logger.exception("%s raised for %s", name, args[0].target)
            raise HandshakeError(f"{name} raised {exc!r}", status=500,
                                 body=b"internal server error") from exc

    async def _reject(self, stream: trio.abc.Stream, error: HandshakeError) -> None:
        """Send the HTTP error response (bounded), then close the stream."""
        if not error.status:
            await trio.aclose_forcefully(stream)
            return
        body = error.body or (str(error) + "\n").encode("utf-8")
        await send_response_and_close(stream,
                                      build_error_response(error.status, body, error.headers))

    async def upgrade_quietly(self, stream: trio.abc.Stream) -> Conn | Response | None:
        """``handle`` for a server loop: failures are logged, never raised."""
        try:
            return await self.handle(stream)
        except (HandshakeError, WebSocketTimeoutError) as exc:
            self.config.logger.debug("handshake failed: %s", exc)
        except Exception:
            self.config.logger.exception("unexpected error during the handshake")
        return None
