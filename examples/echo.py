"""Echo server: ws://127.0.0.1:3000/connect sends every message back and prints events.

Run it with ``python examples/echo.py`` (``--host``/``--port`` to change where it
listens). Other paths are refused with 404 by ``Config.authorize``.
"""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping
from functools import partial

import trio

import trio_gws as gws

PATH = "/connect"


class Echo(gws.EventHandler):
    async def on_open(self, conn: gws.Conn) -> None:
        print(f"open    {conn.remote_address} {conn.request.target}", flush=True)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        print(f"message {conn.remote_address} {message!r}", flush=True)
        await conn.write_message(message.opcode, message.data)

    async def on_ping(self, conn: gws.Conn, payload: bytes) -> None:
        print(f"ping    {conn.remote_address} {payload!r}", flush=True)
        await super().on_ping(conn, payload)

    async def on_pong(self, conn: gws.Conn, payload: bytes) -> None:
        print(f"pong    {conn.remote_address} {payload!r}", flush=True)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        print(f"close   {conn.remote_address} code={code} reason={reason!r}", flush=True)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        print(f"error   {conn.remote_address} {error!r}", flush=True)


def only_connect_path(
    request: gws.Request, session: MutableMapping[str, object]
) -> bool | gws.Response:
    if request.path != PATH:
        return gws.Response(404, body=f"no WebSocket endpoint at {request.path}\n")
    return True


async def main(host: str, port: int) -> None:
    config = gws.Config(authorize=only_connect_path)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve, Echo(), port, host=host,
                                             config=config))
        print(f"echo server on ws://{host}:{server.port}{PATH}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
