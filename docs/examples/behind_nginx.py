"""The upstream of examples/nginx/trio-gws.conf: a server that only nginx reaches.

It listens on 127.0.0.1 (``--port``) or on a Unix socket (``--unix``, nginx's
``server unix:/run/app/ws.sock;``), pings every 20 s so that nginx's
``proxy_read_timeout`` never drops a quiet client, and greets each client with the
address nginx saw it come from.
"""

from __future__ import annotations

import argparse
from functools import partial

import trio

import trio_gws as gws

CONFIG = gws.Config(
    ping_interval=20,  # well below proxy_read_timeout (300 s in the config, 60 s default)
    ping_timeout=10,
)


def client_address(conn: gws.Conn) -> str:
    """The client's address: nginx's X-Forwarded-For when the request came through
    nginx (trust it only from your own proxy), else the peer's own address."""
    forwarded = conn.request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[-1].strip()  # the hop nginx itself added
    return str(conn.remote_address)


class Greeter(gws.EventHandler):
    async def on_open(self, conn: gws.Conn) -> None:
        scheme = conn.request.headers.get("X-Forwarded-Proto", "ws?")
        await conn.write_string(f"hello {client_address(conn)} ({scheme})")

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)


async def main(
    port: int = 3000,
    unix: str | None = None,
    *,
    task_status: trio.TaskStatus[gws.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    if unix is not None:
        # mode 0o660: nginx's user needs write access (share a group with it)
        listener = await gws.open_unix_listener(unix, mode=0o660)
        await gws.serve_listeners(Greeter(), [listener], config=CONFIG,
                                  task_status=task_status)
    else:
        await gws.serve(Greeter(), port, host="127.0.0.1", config=CONFIG,
                        task_status=task_status)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--unix", help="listen on this Unix socket instead")
    args = parser.parse_args()
    try:
        trio.run(partial(main, args.port, args.unix))
    except KeyboardInterrupt:
        pass
