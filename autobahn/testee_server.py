"""Autobahn testee server: a trio-gws echo server for wstest's fuzzingclient.

Uses the public API only (import trio_gws as gws). Every message is echoed back
with its opcode; pings are answered by the default handler.

    python autobahn/testee_server.py --port 9001
    python autobahn/testee_server.py --port 9002 --compress --no-context-takeover
    python autobahn/testee_server.py --port 9003 --parallel   # gws's "async" agent
    python autobahn/testee_server.py --port 9005 --stream     # on_stream + message_writer
    python autobahn/testee_server.py --port 9006 --tls-cert C --tls-key K   # wss://

SIGTERM or SIGINT cancels gws.serve (its graceful shutdown) and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import ssl

import trio

import trio_gws as gws

from _testee import (EchoHandler, add_compression_options, add_verbose_option, make_config,
                     setup_logging)

log = logging.getLogger("testee_server")


class AsyncEchoHandler(EchoHandler):
    """Echo with write_async: queued, ordered, no await (gws's parallel agent)."""

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        conn.write_async(message.opcode, message.data)


class StreamEchoHandler(EchoHandler):
    """Echo each message as it arrives: on_stream reads it piece by piece and
    message_writer sends every piece on as a fragment (the streaming agent)."""

    async def on_stream(self, conn: gws.Conn, stream: gws.MessageStream) -> None:
        async with conn.message_writer(stream.opcode) as writer:
            async for piece in stream:
                await writer.write(piece)


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


async def main(args: argparse.Namespace) -> None:
    kind = StreamEchoHandler if args.stream else AsyncEchoHandler if args.parallel \
        else EchoHandler
    handler = kind(log, log_address=True)
    config = make_config(args)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(gws.serve, handler, args.port, host=args.host,
                                              config=config, ssl_context=tls_context(args)))
        print(f"testee_server: listening on {args.host}:{args.port} "
              f"(compress={args.compress}, no_context_takeover={args.no_context_takeover}, "
              f"parallel={args.parallel}, stream={args.stream}, "
              f"tls={bool(args.tls_cert)})", flush=True)
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
    p.add_argument("--stream", action="store_true",
                   help="echo through on_stream and message_writer, piece by piece")
    p.add_argument("--tls-cert", help="serve wss:// with this PEM certificate chain")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    add_verbose_option(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    setup_logging(arguments)
    trio.run(main, arguments)
