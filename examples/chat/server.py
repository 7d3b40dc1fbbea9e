"""A broadcast chat room: open http://127.0.0.1:8000/ in two browser tabs.

One port serves everything, through ``gws.serve_listeners``:

* ``GET /`` (and ``HEAD``): the page, answered by ``Config.http_handler``;
* ``GET /healthz``: ``ok``, for a load balancer or a Kubernetes probe;
* ``ws://127.0.0.1:8000/chat?name=alice``: the chat itself.

Browsers on other sites cannot join: ``Config.origins`` lists this server's own page
(both ``127.0.0.1`` and ``localhost`` for a loopback server), and every other
``Origin`` gets 403 before ``authorize`` runs (cross-site WebSocket hijacking).
Clients that send no Origin (scripts, command-line tools) are admitted by the ``None``
entry.

The protocol: the browser sends plain text; the server sends JSON objects to
everyone with ``gws.Broadcaster`` (encoded, and compressed where it can be shared,
once per message, then queued to each connection without waiting):

* ``{"type": "welcome", "name": ..., "users": [...]}`` to a newcomer only;
* ``{"type": "join" | "leave", "name": ..., "address": ..., "count": n}``;
* ``{"type": "message", "name": ..., "address": "ip:port", "text": ...}``.

A client too slow to take its messages fills its bounded write queue and is
disconnected (close 1008) rather than holding up the room; keepalive pings find
dead peers.

Every event goes through a hub (``gws.open_hub``): in-process by default, or Redis
with ``--redis URL``, so that servers in several processes or on several hosts
share one room: run two on two ports with the same ``--redis`` and a message typed
on one reaches the other. ``users`` and ``count`` are then those of the server the
event came from. If Redis goes away, what is typed meanwhile is refused with a
``{"type": "notice"}`` to its sender, and after Redis is back every member is told
that messages may have been missed (the hub's ``on_gap``).

Run: ``python examples/chat/server.py [--host 127.0.0.1] [--port 8000] [--redis
redis://127.0.0.1:6379/0]``; Ctrl+C shuts down gracefully (everyone gets close 1001).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import MutableMapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

import trio_gws as gws

PAGE = Path(__file__).with_name("index.html")
MAX_NAME = 24
MAX_TEXT = 2000
ROOM = "chat"  # the hub topic of the room


def _address(conn: gws.Conn) -> str:
    remote = conn.remote_address
    if not remote:
        return "?"
    host, port = remote[0], remote[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChatRoom(gws.EventHandler):
    """Everyone connected here, by connection; every event is told to the whole room,
    on every server sharing the hub."""

    def __init__(self, page: bytes = b"") -> None:
        self.members: dict[gws.Conn, str] = {}
        self.hub: gws.Hub = gws.LocalHub()  # run_chat puts the hub it opened here
        self.page = page

    # -- plain HTTP on the same port --------------------------------------------------

    def http(self, request: gws.Request) -> gws.Response | None:
        """The page and a health check; anything else: 404 (or 405)."""
        if request.method not in ("GET", "HEAD"):
            return gws.Response(405, {"Allow": "GET, HEAD"}, "GET only\n")
        if request.path in ("/", "/index.html"):
            return gws.Response(200, {"Content-Type": "text/html; charset=utf-8",
                                      "Cache-Control": "no-store"}, self.page)
        if request.path == "/healthz":
            return gws.Response(200, {"Cache-Control": "no-store"},
                                f"ok {len(self.members)} members\n")
        if request.path == "/chat":
            return None  # not an upgrade: the default 426 says what to do
        return gws.Response(404, body="not found\n")

    # -- who may join ----------------------------------------------------------------

    def authorize(self, request: gws.Request,
                  session: MutableMapping[str, object]) -> bool | gws.Response:
        if request.path != "/chat":
            return gws.Response(404, body="the chat is at /chat\n")
        names = parse_qs(request.query).get("name", [""])
        session["name"] = " ".join(names[0].split())[:MAX_NAME]
        return True

    # -- events ----------------------------------------------------------------------

    async def on_open(self, conn: gws.Conn) -> None:
        remote = conn.remote_address
        name = str(conn.session.get("name") or f"guest-{remote[1] if remote else '?'}")
        # Joined first: the welcome tells the newcomer it will hear everything from now.
        # (A hub that cannot reach Redis raises here: the newcomer is closed with 1011.)
        await self.hub.join(ROOM, conn)
        self.members[conn] = name
        await conn.write_message(gws.Opcode.TEXT, json.dumps(
            {"type": "welcome", "name": name, "users": sorted(self.members.values())}))
        await self.tell_everyone({"type": "join", "name": name, "address": _address(conn),
                                  "count": len(self.members)})

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        if message.opcode is not gws.Opcode.TEXT:
            await conn.write_close(1003, "text messages only")
            return
        text = message.text.strip()[:MAX_TEXT]
        if text and not await self.tell_everyone(
                {"type": "message", "name": self.members[conn], "address": _address(conn),
                 "text": text}):
            await conn.write_message(gws.Opcode.TEXT, json.dumps(
                {"type": "notice", "text": "the room is unreachable: not sent, try again"}))

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        await self._leave(conn)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        await self._leave(conn)

    async def _leave(self, conn: gws.Conn) -> None:
        # The hub forgot the connection by itself when it ended; the room says goodbye.
        name = self.members.pop(conn, None)
        if name is not None:
            await self.tell_everyone({"type": "leave", "name": name,
                                      "address": _address(conn), "count": len(self.members)})

    async def tell_everyone(self, event: dict[str, Any]) -> bool:
        """Publish ``event`` to the room (every server); False if the hub is down."""
        try:
            await self.hub.publish(ROOM, gws.Opcode.TEXT, json.dumps(event))
        except gws.HubUnavailableError:
            return False
        return True

    async def on_gap(self, topic: str, members: frozenset[gws.Conn]) -> None:
        """Redis was away (or this server fell behind): say so; a real application
        would send the state to resync from here."""
        gws.Broadcaster(gws.Opcode.TEXT, json.dumps(
            {"type": "notice", "text": "the connection to the room was lost for a while: "
                                       "messages may have been missed"})).broadcast_all(members)


# -- running it ---------------------------------------------------------------------


def own_origins(host: str, port: int) -> list[str | None]:
    """The origins of our own page: what the browser sends when it loaded it from us."""
    names = {f"[{host}]" if ":" in host else host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    suffix = "" if port == 80 else f":{port}"
    return [*(f"http://{name}{suffix}" for name in sorted(names)), None]


async def run_chat(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    redis: str | None = None,
    task_status: trio.TaskStatus[gws.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the page, the health check and the chat on one port until cancelled;
    with ``redis`` (a URL) the room is shared with every server using that Redis."""
    # Listen first: with port 0 the port is known only then, and the allowed origins
    # depend on it.
    listeners = await gws.open_tcp_listeners(port, host=host)
    port = int(listeners[0].socket.getsockname()[1])
    room = ChatRoom(PAGE.read_bytes())
    async with (gws.open_hub(redis, on_gap=room.on_gap) if redis else gws.open_hub()) as hub:
        room.hub = hub
        await _serve(room, listeners, host, port, task_status)


async def _serve(room: ChatRoom, listeners: list[trio.SocketListener], host: str, port: int,
                 task_status: trio.TaskStatus[gws.Server]) -> None:
    config = gws.Config(
        http_handler=room.http,
        origins=own_origins(host, port),
        authorize=room.authorize,
        ping_interval=20,          # keepalive: a ping every 20 s...
        ping_timeout=10,           # ...and a peer that does not answer in 10 s is dropped
        max_content_length=16 * 1024,
        write_queue_size=256,      # a member this far behind is disconnected (1008)
        compress_enabled=True,
        close_timeout=3,
        max_connections=1000,
        max_connections_per_ip=50,
    )
    await gws.serve_listeners(room, listeners, config=config, task_status=task_status)


async def main(host: str, port: int, redis: str | None) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_chat, host, port, redis=redis))
        shown = f"[{host}]" if ":" in host else host
        print(f"chat on http://{shown}:{server.port}/ (WebSocket at /chat, health at /healthz)"
              f"{f', shared through {redis}' if redis else ''}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trio-gws broadcast chat example")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--redis", metavar="URL", help="share the room through this Redis "
                        "(redis://host:port/db; needs trio-gws[redis])")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port, args.redis)
    except KeyboardInterrupt:
        pass
