"""aiohttp echo server (stock asyncio loop, access log off)."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from _common import parse_args, raise_fd_limit, ready


def make_app(compress: bool) -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(compress=compress)
        await websocket.prepare(request)
        async for message in websocket:
            if message.type == WSMsgType.TEXT:
                await websocket.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await websocket.send_bytes(message.data)
        return websocket

    app = web.Application()
    app.router.add_get("/", echo)
    return app


async def main(host: str, port: int, compress: bool) -> None:
    runner = web.AppRunner(make_app(compress), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    ready(port)
    await asyncio.Future()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_fd_limit()
    asyncio.run(main(args.host, args.port, args.compress))
