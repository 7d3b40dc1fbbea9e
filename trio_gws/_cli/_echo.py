"""``python -m trio_gws echo``: an echo server for trying clients (and the CLI's own
``connect``). Every message comes back as it was sent, on any path; each connection,
message and close is printed. Ctrl-C or SIGTERM shuts down gracefully (1001).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import ssl
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import trio

from .._config import Config
from .._conn import Conn
from .._handler import EventHandler
from .._listeners import open_tcp_listeners
from .._server import Server, serve_listeners
from .._types import Message
from ._common import EXIT_FAILED, EXIT_OK, Command, Output, UsageError
from ._show import describe_close, describe_message

DEFAULT_PORT = 3000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 or :: for "
                        "every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--compress", action="store_true",
                        help="accept permessage-deflate when a client offers it")
    parser.add_argument("--tls", action="store_true",
                        help="serve wss://, with a throwaway certificate made by trustme "
                        "unless --certfile is given")
    parser.add_argument("--certfile", metavar="FILE",
                        help="certificate chain (PEM) for wss:// (implies --tls)")
    parser.add_argument("--keyfile", metavar="FILE",
                        help="its private key (PEM), when not in --certfile")


class Echo(EventHandler):
    """Sends every message back; says what happens."""

    def __init__(self, output: Output) -> None:
        self.out = output

    async def on_open(self, conn: Conn) -> None:
        details = [f"path {conn.request.target}"]
        if conn.subprotocol:
            details.append(f"subprotocol {conn.subprotocol}")
        if conn.compressed:
            details.append("permessage-deflate")
        self.out.line(f"* {peer(conn)} connected ({', '.join(details)})")

    async def on_message(self, conn: Conn, message: Message) -> None:
        self.out.line(f"{peer(conn)} {describe_message(message.opcode, message.data)}")
        await conn.write_message(message.opcode, message.data)

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self.out.line(f"* {peer(conn)} closed: {describe_close(code, reason)}")

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self.out.line(f"* {peer(conn)} failed ({type(error).__name__}): {error}")


def peer(conn: Conn) -> str:
    remote = conn.remote_address
    if not isinstance(remote, tuple):
        return "?"
    host, port = remote[0], remote[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def server_tls(args: argparse.Namespace, output: Output) -> Iterator[ssl.SSLContext | None]:
    """The TLS context to serve with (None: plain ws://). A throwaway certificate's
    authority is written to a temporary file, removed on exit, that clients trust."""
    if args.keyfile and not args.certfile:
        raise UsageError("--keyfile needs --certfile")
    if not (args.tls or args.certfile):
        yield None
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if args.certfile:
        try:
            context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load --certfile/--keyfile: {exc}") from None
        yield context
        return
    try:
        import trustme
    except ImportError:
        raise UsageError("--tls without --certfile makes a throwaway certificate with "
                         "trustme, which is not installed: pip install trustme (or "
                         "'trio-gws[cli]'), or pass --certfile/--keyfile") from None
    authority = trustme.CA()
    names = sorted({args.host, "127.0.0.1", "::1", "localhost"} - {"0.0.0.0", "::", ""})
    authority.issue_cert(*names).configure_cert(context)
    with tempfile.TemporaryDirectory(prefix="trio-gws-echo-") as folder:
        ca_file = Path(folder) / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_file))
        output.line(f"* throwaway certificate for {', '.join(names)}; clients trust it "
                    f"with --cafile {ca_file}")
        yield context


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    output = Output()
    with server_tls(args, output) as context:
        return trio.run(serve_until_stopped, args, context, output)


async def serve_until_stopped(args: argparse.Namespace, context: ssl.SSLContext | None,
                              output: Output) -> int:
    """Serve until Ctrl-C or SIGTERM, then shut down gracefully (close 1001)."""
    config = Config(compress_enabled=args.compress)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            listeners = await open_tcp_listeners(args.port, host=args.host)
        except OSError as exc:
            output.error(f"cannot listen on {args.host} port {args.port}: {exc}")
            return EXIT_FAILED
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(partial(
                serve_listeners, Echo(output), listeners, config=config, ssl_context=context))
            scheme = "wss" if context is not None else "ws"
            host = f"[{args.host}]" if ":" in args.host else args.host
            output.line(f"* echo server on {scheme}://{host}:{server.port}/ (any path); "
                        "Ctrl-C stops it")
            async for signum in signals:
                count = len(server.connections)
                output.line(f"* {signal.Signals(signum).name}: shutting down, close 1001 to "
                            f"{count} connection{'' if count == 1 else 's'}")
                nursery.cancel_scope.cancel()
                break
    output.line("* stopped")
    return EXIT_OK


COMMAND = Command(
    name="echo",
    help="an echo server for trying things",
    description=("Serve WebSocket on HOST:PORT and send every message back as it came "
                 "(any path, text or binary). Connections, messages and closes are "
                 "printed. Ctrl-C or SIGTERM shuts down gracefully: every client gets "
                 "close 1001."),
    add_arguments=add_arguments,
    run=run,
)
