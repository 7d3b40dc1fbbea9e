"""The fan-out benchmark's server: trio-gws with a hub (in-process, or Redis).

``python servers/fanout_server.py --port P [--redis URL --mode pubsub|streams]``

A connection joins the topics listed in its query (``/?t=3,17,42``); a binary
message from a client is a publish: 4 bytes of topic number (big-endian), then the
payload, published as a binary message to that topic. Prints ``READY <port> <pid>``
once it accepts; runs until signalled. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from urllib.parse import parse_qs

import trio

import trio_gws as gws

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import raise_fd_limit  # noqa: E402


class Fanout(gws.EventHandler):
    def __init__(self, hub: gws.Hub) -> None:
        self.hub = hub

    async def on_open(self, conn: gws.Conn) -> None:
        topics = parse_qs(conn.request.query).get("t", [""])[0]
        for topic in filter(None, topics.split(",")):
            await self.hub.join(topic, conn)
        await conn.write_message(gws.Opcode.TEXT, b"joined")

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        data = message.data
        topic = str(int.from_bytes(data[:4], "big"))
        await self.hub.publish(topic, gws.Opcode.BINARY, data[4:])


async def main(args: argparse.Namespace) -> None:
    config = gws.Config(write_queue_size=100_000, write_buffer_limit=256 * 1024 * 1024)
    hub_cm = (gws.open_hub(args.redis, mode=args.mode, max_lag=None) if args.redis
              else gws.open_hub())
    async with hub_cm as hub, trio.open_nursery() as nursery:
        await nursery.start(partial(gws.serve, Fanout(hub), args.port, host="127.0.0.1",
                                    config=config))
        print(f"READY {args.port} {os.getpid()}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="a Redis URL (default: the in-process hub)")
    parser.add_argument("--mode", default="pubsub", choices=["pubsub", "streams"])
    raise_fd_limit()
    trio.run(main, parser.parse_args())
