"""websockets' Trio implementation (websockets.trio, websockets >= 15) echo server."""

from __future__ import annotations

from functools import partial

import trio

from _common import parse_args, raise_fd_limit, ready, unsupported

try:
    from websockets.trio.server import ServerConnection, serve
except ImportError:  # websockets < 15 has no Trio layer
    unsupported("websockets.trio (needs websockets >= 15)")


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(host: str, port: int, compress: bool) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, echo, port, host=host,
                                    compression="deflate" if compress else None))
        ready(port)


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_fd_limit()
    trio.run(main, args.host, args.port, args.compress)
