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
import sys

import trio

import trio_gws as gws

MiB = 1024 * 1024

log = logging.getLogger("testee_server")


class EchoHandler(gws.EventHandler):
    """Echo with write_message: the reader waits for each echo (wire order)."""

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        # Expected for the many cases that send protocol violations.
        log.info("%s: on_error %s: %s", conn.remote_address, type(error).__name__, error)


class AsyncEchoHandler(EchoHandler):
    """Echo with write_async: queued, ordered, no await (gws's parallel agent)."""

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        conn.write_async(message.opcode, message.data)


def make_config(args: argparse.Namespace) -> gws.Config:
    options: dict[str, object] = {
        # case 9.1.6 sends exactly 16 MiB, the default limit: keep a margin
        "max_content_length": 32 * MiB,
    }
    if args.compress:
        options["compress_enabled"] = True
    if args.no_context_takeover:
        options["server_context_takeover"] = False
        options["client_context_takeover"] = False
    if args.parallel:
        options["parallel_enabled"] = True
    return gws.Config(**options)  # type: ignore[arg-type]


async def main(args: argparse.Namespace) -> None:
    handler = AsyncEchoHandler() if args.parallel else EchoHandler()
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
    p.add_argument("--compress", action="store_true", help="compress_enabled=True")
    p.add_argument("--no-context-takeover", action="store_true",
                   help="server_context_takeover=False, client_context_takeover=False")
    p.add_argument("--parallel", action="store_true",
                   help="parallel_enabled=True, echo via conn.write_async")
    p.add_argument("-v", "--verbose", action="store_true", help="log every on_error")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    trio.run(main, arguments)
