"""websockets (asyncio implementation, stock asyncio loop) echo server."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection, serve

from _common import parse_args, raise_fd_limit, ready


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(host: str, port: int, compress: bool) -> None:
    async with serve(echo, host, port, compression="deflate" if compress else None):
        ready(port)
        await asyncio.Future()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_fd_limit()
    asyncio.run(main(args.host, args.port, args.compress))
