"""Serving: ``serve`` (TCP or TLS on a port) and ``serve_listeners`` (any listeners).

Every accepted stream is counted from accept to close against the connection limits,
then handed to the ``Upgrader``: a WebSocket upgrade becomes a ``Conn`` that runs
here until it ends, a plain request gets ``http_handler``'s response. A ``Server``
(reported through ``task_status``) shows the listeners and the open connections.

Cancelling the serve call is a graceful shutdown, whatever the listeners: they are
closed, requests and handshakes in progress are abandoned, every open connection is
sent 1001 and given ``close_timeout`` to finish its close handshake; the rest are
closed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence, Set
from functools import partial
from typing import Any

import trio

from ._config import Config
from ._conn import Conn
from ._errors import WebSocketError
from ._handler import EventHandler
from ._handshake import build_error_response
from ._listeners import open_tcp_listeners
from ._transport import stream_addresses
from ._upgrader import Upgrader, send_response_and_close

#: What a client refused by a connection limit is told to wait before retrying (s).
RETRY_AFTER = 1


class ConnectionsView(Set[Conn]):
    """The open connections of a server, read-only: ``len()``, ``in``, iteration (over
    a snapshot, so connections may come and go meanwhile)."""

    __slots__ = ("_live",)

    def __init__(self, live: set[Conn]) -> None:
        self._live = live

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, conn: object) -> bool:
        return conn in self._live

    def __iter__(self) -> Iterator[Conn]:
        return iter(tuple(self._live))

    def __repr__(self) -> str:
        return f"<{len(self._live)} open connections>"


class Server:
    """A running server, as ``serve`` / ``serve_listeners`` report it.

    ``listeners`` are what it accepts on; ``connections`` its open WebSocket
    connections (completed handshakes, until they end); ``port`` the TCP port of its
    first TCP listener (None without one).
    """

    def __init__(self, listeners: Sequence[trio.abc.Listener[Any]], live: set[Conn]) -> None:
        self.listeners: list[trio.abc.Listener[Any]] = list(listeners)
        self.connections = ConnectionsView(live)

    @property
    def port(self) -> int | None:
        for listener in self.listeners:
            sock = _socket_of_listener(listener)
            if sock is not None and sock.family in (trio.socket.AF_INET, trio.socket.AF_INET6):
                return int(sock.getsockname()[1])
        return None

    def __repr__(self) -> str:
        return f"<Server port={self.port} {self.connections!r}>"


def _socket_of_listener(listener: trio.abc.Listener[Any]) -> Any:
    while isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    return getattr(listener, "socket", None)


def _peer_ip(stream: trio.abc.Stream) -> str | None:
    """The client's IP address (None for a Unix socket or an unknown peer)."""
    remote, _ = stream_addresses(stream)
    if isinstance(remote, tuple) and remote and isinstance(remote[0], str):
        return remote[0]
    return None


class _ConnectionTracker:
    """The streams of one server: limits, handshakes in progress, open connections.

    Connections run in a nursery under a shielded cancel scope: cancelling the server
    must not tear them down mid-frame, but send them 1001 and give them
    ``close_timeout`` to finish their close handshakes; only then is that nursery
    cancelled. One shield for the server rather than one cancel scope per connection
    keeps idle connections small. Handshakes still in progress have their own scope
    and are abandoned at once.
    """

    def __init__(self, upgrader: Upgrader) -> None:
        self._upgrader = upgrader
        config = upgrader.config
        self._max = config.max_connections
        self._max_per_ip = config.max_connections_per_ip
        self._count = 0  # streams from accept to close
        self._per_ip: dict[str, int] = {}
        self.live: set[Conn] = set()
        self._handshaking: set[trio.CancelScope] = set()
        self._all_done = trio.Event()
        self._all_done.set()

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        per_ip = self._max_per_ip
        ip = _peer_ip(stream) if per_ip is not None else None
        if ((self._max is not None and self._count >= self._max)
                or (per_ip is not None and ip is not None
                    and self._per_ip.get(ip, 0) >= per_ip)):
            await self._refuse(stream, ip)
            return
        self._count += 1
        if ip is not None:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            await self._run(stream)
        finally:
            self._count -= 1
            if ip is not None:
                left = self._per_ip[ip] - 1
                if left:
                    self._per_ip[ip] = left
                else:
                    del self._per_ip[ip]

    async def _refuse(self, stream: trio.abc.Stream, ip: str | None) -> None:
        """503 at once: nothing is read, no Conn is made."""
        self._upgrader.config.logger.debug("connection limit reached: 503 to %s", ip)
        await send_response_and_close(stream, build_error_response(
            503, b"too many connections, try again later\n",
            [("Retry-After", str(RETRY_AFTER))]))

    async def _run(self, stream: trio.abc.Stream) -> None:
        outcome = None
        with trio.CancelScope() as scope:
            self._handshaking.add(scope)
            try:
                outcome = await self._upgrader.upgrade_quietly(stream)
            finally:
                self._handshaking.discard(scope)
        if not isinstance(outcome, Conn):
            return  # failed, answered as plain HTTP, or abandoned: the stream is closed
        conn = outcome
        self.live.add(conn)
        if self._all_done.is_set():
            self._all_done = trio.Event()
        try:
            await conn.listen()
        finally:
            self.live.discard(conn)
            if not self.live:
                self._all_done.set()

    async def shutdown(self, timeout: float, connections: trio.Nursery) -> None:
        """Abandon handshakes, send 1001 to every live connection, and cancel those
        still open after ``timeout``."""
        for scope in list(self._handshaking):
            scope.cancel()
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for conn in list(self.live):
                    nursery.start_soon(self._going_away, conn)
                await self._all_done.wait()
        connections.cancel_scope.cancel()

    @staticmethod
    async def _going_away(conn: Conn) -> None:
        try:
            await conn.write_close(1001, b"server shutting down")
        except WebSocketError:
            pass  # already closing or broken: its listen() is ending anyway


async def serve_listeners(
    handler: EventHandler,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket (and ``http_handler``) requests on any Trio listeners until
    cancelled: TCP, Unix sockets (``gws.open_unix_listener``), inherited or pre-bound
    sockets wrapped in ``trio.SocketListener``, TLS listeners...

    Args:
        handler: the ``EventHandler`` of every connection.
        listeners: what to accept on; they are closed when this returns.
        config: options (``Config()`` by default).
        ssl_context: wrap every listener in TLS.
        task_status: ``nursery.start`` gets the running ``Server``.

    Cancelling it shuts down gracefully: no new connections, requests and handshakes
    in progress abandoned, every open connection sent close 1001 and given
    ``close_timeout`` to finish its handshake, then the rest closed.
    """
    upgrader = Upgrader(handler, config)
    tracker = _ConnectionTracker(upgrader)
    served: list[trio.abc.Listener[Any]] = list(listeners)
    if ssl_context is not None:
        served = [trio.SSLListener(listener, ssl_context, https_compatible=False)
                  for listener in served]
    server = Server(served, tracker.live)
    async with trio.open_nursery() as outer:
        connections: trio.Nursery = await outer.start(_shielded_nursery)
        try:
            async with trio.open_nursery() as accepting:
                await accepting.start(partial(trio.serve_listeners, tracker.serve_stream,
                                              served, handler_nursery=connections))
                task_status.started(server)
        finally:
            # serve_listeners only ends by an exception (normally cancellation); its
            # listeners are closed by now, so no new connection can arrive.
            with trio.CancelScope(shield=True):
                await tracker.shutdown(upgrader.config.close_timeout, connections)


async def serve(
    handler: EventHandler,
    port: int,
    *,
    host: str | bytes | None = None,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept WebSocket connections on ``port`` until cancelled (like ``trio.serve_tcp``).

    Args:
        handler: the ``EventHandler`` of every connection.
        port: the TCP port; 0 picks a free one (``Server.port`` says which).
        host: the interface (None: every IPv4 and IPv6 address).
        config: options (``Config()`` by default).
        ssl_context: serve TLS (wss://).
        reuse_port: SO_REUSEPORT, so that several processes serve one port and the
            kernel spreads connections between them (Linux only).
        task_status: ``nursery.start`` gets the running ``Server``.

    Raises:
        NotImplementedError: ``reuse_port`` where the platform cannot.
        OSError: the port is in use (without ``reuse_port`` on every side).

    Cancelling it shuts down gracefully, as ``serve_listeners``.
    """
    listeners = await open_tcp_listeners(port, host=host, reuse_port=reuse_port)
    await serve_listeners(handler, listeners, config=config, ssl_context=ssl_context,
                          task_status=task_status)


async def _shielded_nursery(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery that an outer cancellation cannot reach (see _ConnectionTracker);
    it runs until its own cancel scope is cancelled."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()
