"""trio-gws echo server: every message goes back with its opcode (default Config)."""

from __future__ import annotations

import cProfile
import signal
from functools import partial

import trio

import trio_gws as gws
from _common import parse_args, raise_fd_limit, ready


class Echo(gws.EventHandler):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)


async def main(host: str, port: int, compress: bool) -> None:
    config = gws.Config(compress_enabled=compress)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(gws.serve, Echo(), port, host=host, config=config))
        ready(port)


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_fd_limit()
    if args.profile:
        # SIGINT stops the server (re-enabled explicitly: a shell may start us with it
        # ignored). profile_server.py takes the time spent idle in epoll out.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            trio.run(main, args.host, args.port, args.compress)
        except KeyboardInterrupt:
            pass
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        trio.run(main, args.host, args.port, args.compress)
