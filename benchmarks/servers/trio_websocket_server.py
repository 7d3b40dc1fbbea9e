"""trio-websocket echo server (wsproto underneath; no permessage-deflate support)."""

from __future__ import annotations

from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from _common import parse_args, raise_fd_limit, ready, unsupported


async def echo(request: WebSocketRequest) -> None:
    websocket = await request.accept()
    try:
        while True:
            message = await websocket.get_message()
            await websocket.send_message(message)
    except ConnectionClosed:
        pass


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_websocket, echo, host, port, None))
        ready(port)


if __name__ == "__main__":
    args = parse_args(__doc__)
    if args.compress:
        unsupported("trio-websocket has no permessage-deflate")
    raise_fd_limit()
    trio.run(main, args.host, args.port)
