"""picows echo server (Cython, stock asyncio loop; frame-level API, no permessage-deflate).

picows hands the application frames, not messages: this server echoes each data frame
as it comes (fin bit kept), which is a whole message for the unfragmented load used
here. It does not validate UTF-8 in text frames.
"""

from __future__ import annotations

import asyncio

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from _common import parse_args, raise_fd_limit, ready, unsupported

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in _DATA:
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(host: str, port: int) -> None:
    server = await ws_create_server(lambda request: Echo(), host, port)
    ready(port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    if args.compress:
        unsupported("picows has no permessage-deflate")
    raise_fd_limit()
    asyncio.run(main(args.host, args.port))
