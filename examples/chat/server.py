"""A broadcast chat room: open http://127.0.0.1:8000/ in two browser tabs.

One Trio program, two listeners:

* ``http://127.0.0.1:8000/`` serves ``index.html`` from a tiny HTTP/1.1 responder
  (GET and HEAD of ``/`` only, one request per connection);
* ``ws://127.0.0.1:8001/chat?name=alice`` is the chat, run by ``gws.serve``.

Why two ports: ``serve`` speaks only WebSocket (a plain HTTP request gets 426). One
port is possible with the public API: accept TCP yourself with ``trio.serve_tcp``,
read the request head, answer page requests, and give ``gws.Upgrader.upgrade`` a
stream wrapper that replays the bytes already read. But then the graceful shutdown
that ``serve`` does (1001 to everyone within ``close_timeout``) is yours to write,
so this example keeps the two jobs apart.

The protocol: the browser sends plain text; the server sends JSON objects to
everyone with ``gws.Broadcaster`` (encoded, and compressed where it can be shared,
once per message, then queued to each connection without waiting):

* ``{"type": "welcome", "name": ..., "users": [...]}`` to a newcomer only;
* ``{"type": "join" | "leave", "name": ..., "address": ..., "count": n}``;
* ``{"type": "message", "name": ..., "address": "ip:port", "text": ...}``.

A client too slow to take its messages fills its bounded write queue and is
disconnected (close 1008) rather than holding up the room; keepalive pings find
dead peers. Browsers on other sites cannot join: a request whose ``Origin`` is not
this server's page is refused with 403 (clients that send no Origin, such as
scripts, are allowed).

Run: ``python examples/chat/server.py [--host 127.0.0.1] [--http-port 8000]
[--ws-port 8001]``; Ctrl+C shuts down gracefully.
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


def _address(conn: gws.Conn) -> str:
    remote = conn.remote_address
    if not remote:
        return "?"
    host, port = remote[0], remote[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChatRoom(gws.EventHandler):
    """Everyone connected, by connection; every event is told to the whole room."""

    def __init__(self) -> None:
        self.members: dict[gws.Conn, str] = {}
        self.http_port: int | None = None  # for the Origin check, once it is known

    # -- who may join ----------------------------------------------------------------

    def authorize(self, request: gws.Request,
                  session: MutableMapping[str, object]) -> bool | gws.Rejection:
        if request.path != "/chat":
            return gws.Rejection(404, body="the chat is at /chat\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin != self._our_origin(request):
            return gws.Rejection(403, body="this chat only accepts its own page\n")
        names = parse_qs(request.query).get("name", [""])
        session["name"] = " ".join(names[0].split())[:MAX_NAME]
        return True

    def _our_origin(self, request: gws.Request) -> str:
        """``http://<host the browser used>:<page port>``: where our page comes from."""
        host = request.headers.get("Host") or ""
        if host.startswith("["):  # an IPv6 literal: [::1]:8001
            name = host[:host.find("]") + 1]
        else:
            name = host.partition(":")[0]
        return f"http://{name}" + ("" if self.http_port == 80 else f":{self.http_port}")

    # -- events ----------------------------------------------------------------------

    async def on_open(self, conn: gws.Conn) -> None:
        remote = conn.remote_address
        name = str(conn.session.get("name") or f"guest-{remote[1] if remote else '?'}")
        self.members[conn] = name
        await conn.write_message(gws.Opcode.TEXT, json.dumps(
            {"type": "welcome", "name": name, "users": sorted(self.members.values())}))
        self.tell_everyone({"type": "join", "name": name, "address": _address(conn),
                            "count": len(self.members)})

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        if message.opcode is not gws.Opcode.TEXT:
            await conn.write_close(1003, "text messages only")
            return
        text = message.text.strip()[:MAX_TEXT]
        if text:
            self.tell_everyone({"type": "message", "name": self.members[conn],
                                "address": _address(conn), "text": text})

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self._leave(conn)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self._leave(conn)

    def _leave(self, conn: gws.Conn) -> None:
        name = self.members.pop(conn, None)
        if name is not None:
            self.tell_everyone({"type": "leave", "name": name, "address": _address(conn),
                                "count": len(self.members)})

    def tell_everyone(self, event: dict[str, Any]) -> int:
        """Queue ``event`` to every member; returns how many took it."""
        return gws.Broadcaster(gws.Opcode.TEXT, json.dumps(event)).broadcast_all(
            list(self.members))


# -- the page ----------------------------------------------------------------------


async def serve_page(page: bytes, stream: trio.SocketStream) -> None:
    """Answer one HTTP request: the page for ``GET /``, an error otherwise."""
    try:
        with trio.move_on_after(10):
            head = bytearray()
            while b"\r\n\r\n" not in head and len(head) < 16384:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            method, target, *_ = (bytes(head).split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                                  + ["", ""])
            if method not in ("GET", "HEAD"):
                status, body, extra = "405 Method Not Allowed", b"GET only\n", "Allow: GET, HEAD\r\n"
                ctype = "text/plain"
            elif target.split("?")[0] in ("/", "/index.html"):
                status, body, extra, ctype = "200 OK", page, "", "text/html; charset=utf-8"
            else:
                status, body, extra, ctype = "404 Not Found", b"not found\n", "", "text/plain"
            response = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                        f"Connection: close\r\n{extra}\r\n").encode("latin-1")
            await stream.send_all(response + (body if method == "GET" else b""))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


# -- running both --------------------------------------------------------------------


def _port(listeners: list[Any]) -> int:
    return int(listeners[0].socket.getsockname()[1])


async def run_chat(
    host: str = "127.0.0.1",
    http_port: int = 8000,
    ws_port: int = 8001,
    *,
    task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the page and the chat until cancelled; reports (http_port, ws_port)."""
    room = ChatRoom()
    config = gws.Config(
        authorize=room.authorize,
        ping_interval=20,          # keepalive: a ping every 20 s...
        ping_timeout=10,           # ...and a peer that does not answer in 10 s is dropped
        max_content_length=16 * 1024,
        write_queue_size=256,      # a member this far behind is disconnected (1008)
        compress_enabled=True,
        close_timeout=3,
    )
    async with trio.open_nursery() as nursery:
        ws_listeners = await nursery.start(partial(gws.serve, room, ws_port, host=host,
                                                   config=config))
        actual_ws_port = _port(ws_listeners)
        page = PAGE.read_text("utf-8").replace("{{WS_PORT}}", str(actual_ws_port))
        http_listeners = await nursery.start(partial(
            trio.serve_tcp, partial(serve_page, page.encode("utf-8")), http_port, host=host))
        room.http_port = _port(http_listeners)
        task_status.started((room.http_port, actual_ws_port))


async def main(host: str, http_port: int, ws_port: int) -> None:
    async with trio.open_nursery() as nursery:
        pages, chat = await nursery.start(run_chat, host, http_port, ws_port)
        shown = f"[{host}]" if ":" in host else host
        print(f"chat page on http://{shown}:{pages}/  (WebSocket on ws://{shown}:{chat}/chat)",
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trio-gws broadcast chat example")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000, help="page port (default 8000)")
    parser.add_argument("--ws-port", type=int, default=8001, help="WebSocket port (default 8001)")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.http_port, args.ws_port)
    except KeyboardInterrupt:
        pass
