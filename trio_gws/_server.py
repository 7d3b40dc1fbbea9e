"""The server side: ``Upgrader`` (HTTP upgrade on any stream) and ``serve`` (TCP/TLS)."""

from __future__ import annotations

import inspect
import ssl
from collections.abc import MutableMapping
from typing import Any

import trio

from ._config import Config
from ._conn import Conn
from ._errors import HandshakeError, WebSocketError, WebSocketTimeoutError
from ._extension import negotiate_server
from ._handler import EventHandler
from ._handshake import (
    Rejection,
    Request,
    build_accept_response,
    build_error_response,
    check_request,
    choose_subprotocol,
    parse_request_line,
)
from ._http import find_head_end, header_items, parse_head
from ._transport import half_close

#: How long we spend trying to deliver an HTTP error response to a client.
_ERROR_RESPONSE_TIMEOUT = 1.0


class Upgrader:
    """Turns accepted streams into ``Conn`` objects (gws's Upgrader)."""

    def __init__(self, handler: EventHandler, config: Config | None = None) -> None:
        self.handler = handler
        self.config = config if config is not None else Config()
        self._extra_headers = header_items(self.config.response_header)

    async def upgrade(self, stream: trio.abc.Stream) -> Conn:
        """Run the server side of the opening handshake on ``stream``.

        Bounded by ``handshake_timeout`` (TLS handshake included). On success returns the
        ``Conn`` (run it with ``listen()``); on failure the client gets a real HTTP error
        response, the stream is closed and HandshakeError (or WebSocketTimeoutError) is
        raised.
        """
        config = self.config
        try:
            with trio.fail_after(config.handshake_timeout):
                return await self._handshake(stream)
        except trio.TooSlowError:
            await self._reject(stream, HandshakeError("handshake timed out", status=408))
            raise WebSocketTimeoutError(
                f"opening handshake not finished within {config.handshake_timeout}s"
            ) from None
        except HandshakeError as exc:
            await self._reject(stream, exc)
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                ssl.SSLError) as exc:
            await trio.aclose_forcefully(stream)
            raise HandshakeError(f"transport failed during the handshake: {exc!r}",
                                 status=0) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _handshake(self, stream: trio.abc.Stream) -> Conn:
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
        request = Request(method, target, headers)
        key = check_request(request)

        subprotocol = choose_subprotocol(headers, config.subprotocols)
        extension = extensions = None
        agreed = negotiate_server(headers.get_all("Sec-WebSocket-Extensions"), config)
        if agreed is not None:
            extension, extensions = agreed

        session: MutableMapping[str, Any] = {}
        await self._authorize(request, session)

        response = build_accept_response(key, subprotocol=subprotocol, extensions=extensions,
                                         extra_headers=self._extra_headers)
        await stream.send_all(response)
        conn = Conn(stream, self.handler, config, is_server=True, request=request,
                    subprotocol=subprotocol, extension=extension, leftover=bytes(buf[end:]))
        conn.session = session
        return conn

    async def _authorize(self, request: Request, session: MutableMapping[str, Any]) -> None:
        authorize = self.config.authorize
        if authorize is None:
            return
        try:
            verdict = authorize(request, session)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except trio.Cancelled:
            raise
        except Exception as exc:
            self.config.logger.exception("authorize raised for %s", request.target)
            raise HandshakeError(f"authorize raised {exc!r}", status=500,
                                 body=b"internal server error") from exc
        if verdict is None or verdict is True:
            return
        if verdict is False:
            raise HandshakeError("authorize refused the request", status=403, body=b"forbidden")
        if isinstance(verdict, Rejection):
            body = verdict.body.encode("utf-8") if isinstance(verdict.body, str) else verdict.body
            raise HandshakeError(f"authorize rejected the request with {verdict.status}",
                                 status=verdict.status, headers=header_items(verdict.headers),
                                 body=body)
        raise HandshakeError(f"authorize returned {verdict!r}; expected bool or Rejection",
                             status=500, body=b"internal server error")

    async def _reject(self, stream: trio.abc.Stream, error: HandshakeError) -> None:
        """Send the HTTP error response (bounded), then close the stream."""
        if error.status:
            body = error.body or (str(error) + "\n").encode("utf-8")
            response = build_error_response(error.status, body, error.headers)
            with trio.move_on_after(_ERROR_RESPONSE_TIMEOUT):
                try:
                    await stream.send_all(response)
                    # Let the response reach the client before closing: half-close and
                    # discard what it still sends, so the kernel does not answer with RST.
                    if await half_close(stream):
                        while await stream.receive_some(65536):
                            pass
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                        ssl.SSLError, trio.BusyResourceError):
                    pass
        await trio.aclose_forcefully(stream)

    async def _upgrade_quietly(self, stream: trio.abc.Stream) -> Conn | None:
        """``upgrade`` for a server loop: failures are logged, never raised."""
        try:
            return await self.upgrade(stream)
        except (HandshakeError, WebSocketTimeoutError) as exc:
            self.config.logger.debug("handshake failed: %s", exc)
        except Exception:
            self.config.logger.exception("unexpected error during the handshake")
        return None


class _ConnectionTracker:
    """The connections of one ``serve()``, for a graceful shutdown.

    Connections run in a nursery under a shielded cancel scope: cancelling ``serve``
    must not tear them down mid-frame, but send them 1001 and give them
    ``close_timeout`` to finish their close handshakes; only then is that nursery
    cancelled. One shield for the server rather than one cancel scope per connection
    keeps idle connections small. Handshakes still in progress have their own scope
    and are abandoned at once.
    """

    def __init__(self, upgrader: Upgrader) -> None:
        self._upgrader = upgrader
        self._live: set[Conn] = set()
        self._handshaking: set[trio.CancelScope] = set()
        self._all_done = trio.Event()
        self._all_done.set()

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        conn = None
        with trio.CancelScope() as scope:
            self._handshaking.add(scope)
            try:
                conn = await self._upgrader._upgrade_quietly(stream)
            finally:
                self._handshaking.discard(scope)
        if conn is None:
            return  # failed or abandoned: upgrade() closed the stream
        self._live.add(conn)
        if self._all_done.is_set():
            self._all_done = trio.Event()
        try:
            await conn.listen()
        finally:
            self._live.discard(conn)
            if not self._live:
                self._all_done.set()

    async def shutdown(self, timeout: float, connections: trio.Nursery) -> None:
        """Abandon handshakes, send 1001 to every live connection, and cancel those
        still open after ``timeout``."""
        for scope in list(self._handshaking):
            scope.cancel()
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for conn in list(self._live):
                    nursery.start_soon(self._going_away, conn)
                await self._all_done.wait()
        connections.cancel_scope.cancel()

    @staticmethod
    async def _going_away(conn: Conn) -> None:
        try:
            await conn.write_close(1001, b"server shutting down")
        except WebSocketError:
            pass  # already closing or broken: its listen() is ending anyway


async def serve(
    handler: EventHandler,
    port: int,
    *,
    host: str | bytes | None = None,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept WebSocket connections on ``port`` until cancelled (like ``trio.serve_tcp``).

    ``port=0`` picks a free port; ``task_status.started`` reports the listeners (their
    ``.socket`` has the address, under ``.transport_listener`` for TLS). With
    ``ssl_context`` every connection is TLS.

    Cancelling it shuts down gracefully: no new connections, every open one is sent
    close 1001 and given ``close_timeout`` to finish its handshake, then the rest are
    closed. Handshakes still in progress are abandoned at once.
    """
    upgrader = Upgrader(handler, config)
    tracker = _ConnectionTracker(upgrader)
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=False)
            for listener in tcp_listeners
        ]
    async with trio.open_nursery() as outer:
        connections: trio.Nursery = await outer.start(_shielded_nursery)
        try:
            await trio.serve_listeners(tracker.serve_stream, listeners,
                                       handler_nursery=connections, task_status=task_status)
        finally:
            # serve_listeners only ends by an exception (normally cancellation); its
            # listeners are closed by now, so no new connection can arrive.
            with trio.CancelScope(shield=True):
                await tracker.shutdown(upgrader.config.close_timeout, connections)


async def _shielded_nursery(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery that an outer cancellation cannot reach (see _ConnectionTracker);
    it runs until its own cancel scope is cancelled."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()
