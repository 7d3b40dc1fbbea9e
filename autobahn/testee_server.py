"""Autobahn testee server: a trio-gws echo server for wstest's fuzzingclient.

Uses the public API only (import trio_gws as gws). Every message is echoed back
with its opcode; pings are answered by the default handler.

    python autobahn/testee_server.py --port 9001
    python autobahn/testee_server.py --port 9002 --compress --no-context-takeover
    python autobahn/testee_server.py --port 9003 --parallel   # gws's "async" agent

SIGTERM or SIGINT cancels gws.serve (its graceful shutdown) and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal

import trio

import trio_gws as gws

from _testee import (EchoHandler, add_compression_options, add_verbose_option, make_config,
                     setup_logging)

log = logging.getLogger("testee_server")


class AsyncEchoHandler(EchoHandler):
    """Echo with write_async: queued, ordered, no await (gws's parallel agent)."""

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        conn.write_async(message.opcode, message.data)


async def main(args: argparse.Namespace) -> None:
    handler = (AsyncEchoHandler if args.parallel else EchoHandler)(log, log_address=True)
    config = make_config(args)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(gws.serve, handler, args.port, host=args.host, config=config)
        )
        print(f"testee_server: listening on {args.host}:{args.port} "
              f"(compress={args.compress}, no_context_takeover={args.no_context_takeover}, "
              f"parallel={args.parallel})", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                print(f"testee_server: {signal.Signals(signum).name}, shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trio-gws echo server for Autobahn's fuzzingclient")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--host", default="127.0.0.1")
    add_compression_options(p, compress_help="compress_enabled=True")
    p.add_argument("--parallel", action="store_true",
                   help="parallel_enabled=True, echo via conn.write_async")
    add_verbose_option(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    setup_logging(arguments)
    trio.run(main, arguments)
