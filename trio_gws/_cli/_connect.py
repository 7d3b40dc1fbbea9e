"""``python -m trio_gws connect URL``: an interactive client for trying a server.

Each line typed (or piped in) is sent as a text message; what arrives is printed one
line per event. End of input (Ctrl-D) or Ctrl-C closes with 1000 and waits for the
server's answer; the exit status says how the connection ended (see ``_common``).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from typing import Any

import trio

from .._client import connect, parse_url
from .._config import Config
from .._conn import Conn
from .._errors import ConnectionClosed, HandshakeError, WebSocketError, WebSocketTimeoutError
from .._handler import EventHandler
from .._http import header_items
from .._types import Message
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Command,
    Output,
    UsageError,
)
from ._input import LineReader
from ._show import (
    clean_close,
    describe_close,
    describe_connected,
    describe_message,
    describe_refusal,
    printable,
    redact,
)

#: Headers the client writes itself; each has its own option or none at all.
_OWN_HEADERS = {
    "host": "it comes from the URL",
    "upgrade": "the handshake sets it",
    "connection": "the handshake sets it",
    "sec-websocket-key": "the handshake sets it",
    "sec-websocket-version": "the handshake sets it",
    "sec-websocket-protocol": "use --subprotocol",
    "sec-websocket-extensions": "use --compress for permessage-deflate",
}

INSECURE_WARNING = (
    "--insecure: the server's certificate is NOT checked. Anyone between you and {host} "
    "can read and change everything sent on this connection. Use it only to try a "
    "server with a throwaway certificate; --cafile FILE trusts one without turning "
    "the checks off.")


def header_argument(value: str) -> tuple[str, str]:
    """``NAME:VALUE`` (spaces around the value are dropped) for ``--header``."""
    name, colon, header_value = value.partition(":")
    name, header_value = name.strip(), header_value.strip()
    if not colon or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {value!r}")
    if name.lower() in _OWN_HEADERS:
        raise argparse.ArgumentTypeError(
            f"{name} cannot be set with --header: {_OWN_HEADERS[name.lower()]}")
    try:
        header_items([(name, header_value)])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, header_value


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds < 86400 or seconds != seconds:
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than a day: {value}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="ws:// or wss:// URL of the server")
    parser.add_argument("-H", "--header", action="append", default=[], type=header_argument,
                        metavar="NAME:VALUE", help="an extra request header (repeatable), "
                        "e.g. 'Authorization: Bearer x' or 'Origin: https://example.com'")
    parser.add_argument("-p", "--subprotocol", action="append", default=[],
                        metavar="NAME", help="offer this subprotocol (repeatable, in order "
                        "of preference)")
    parser.add_argument("--compress", action="store_true",
                        help="offer permessage-deflate")
    parser.add_argument("--ping", type=positive_seconds, metavar="SECONDS",
                        help="send a ping every SECONDS and show each round trip")
    parser.add_argument("--proxy", metavar="URL",
                        help="connect through this proxy (http://, https://, socks5://...)")
    parser.add_argument("--cafile", metavar="FILE",
                        help="trust the certificate authorities in FILE (PEM) for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="wss:// without checking the server's certificate (dangerous: "
                        "says so loudly)")


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then run the session; its exit status."""
    try:
        where = parse_url(args.url)
    except ValueError as exc:
        raise UsageError(f"invalid URL {redact(args.url)!r}: {exc}") from None
    if (args.insecure or args.cafile) and not where.secure:
        raise UsageError("--insecure and --cafile apply to wss:// URLs only")
    output = Output()
    context = None
    if where.secure:
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot use --cafile {args.cafile!r}: {exc}") from None
        if args.insecure:
            output.warning(INSECURE_WARNING.format(host=where.host))
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    options: dict[str, Any] = {}
    if args.proxy is not None:
        options["proxy"] = args.proxy  # else the environment's, as curl does
    session = Session(args, output, context, options)
    try:
        return trio.run(session.run)
    except KeyboardInterrupt:  # Ctrl-C before the connection was open
        output.error("interrupted")
        return EXIT_INTERRUPTED


class Session(EventHandler):
    """One connection: the handler that prints what arrives, and the tasks that send
    the lines, the pings and the close."""

    def __init__(self, args: argparse.Namespace, output: Output,
                 ssl_context: ssl.SSLContext | None, options: dict[str, Any]) -> None:
        self.args = args
        self.url = redact(args.url)  # as shown: no password on the screen
        self.out = output
        self.ssl_context = ssl_context
        self.options = options
        self.pings: dict[bytes, float] = {}  # payload -> when it was sent
        self.closed: tuple[int, bytes] | None = None  # the server's close frame
        self.failure: Exception | None = None
        self.closing_reason: str | None = None  # why we started closing, if we did
        self.interrupted = False

    # -- events ----------------------------------------------------------------------

    async def on_message(self, conn: Conn, message: Message) -> None:
        self.out.line(describe_message(message.opcode, message.data))

    async def on_ping(self, conn: Conn, payload: bytes) -> None:
        self.out.line(f"< ping ({len(payload)} B), answered with a pong")
        await super().on_ping(conn, payload)

    async def on_pong(self, conn: Conn, payload: bytes) -> None:
        sent = self.pings.pop(payload, None)
        if sent is None:
            self.out.line(f"< pong ({len(payload)} B), not an answer to our pings")
            return
        milliseconds = (trio.current_time() - sent) * 1000
        self.out.line(f"< pong {payload.decode('ascii', 'replace')}: "
                      f"round trip {milliseconds:.1f} ms")

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self.closed = (code, reason)

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self.failure = error

    # -- the session -----------------------------------------------------------------

    async def run(self) -> int:
        conn = await self._connect()
        if conn is None:
            return EXIT_FAILED
        self.out.line(describe_connected(self.url, conn.subprotocol, conn.compressed))
        if sys.stdin.isatty():
            self.out.line("* type a line and press Enter to send it; Ctrl-D or Ctrl-C closes")
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, conn, nursery.cancel_scope)
                nursery.start_soon(self._send_lines, conn, nursery)
                nursery.start_soon(self._on_interrupt, conn, interrupts, nursery)
                if self.args.ping:
                    nursery.start_soon(self._ping, conn, self.args.ping)
        return self._report()

    async def _connect(self) -> Conn | None:
        """The open connection, or None after saying why there is none."""
        config = Config(compress_enabled=self.args.compress)
        try:
            return await connect(self.args.url, self, config=config,
                                 ssl_context=self.ssl_context, headers=self.args.header,
                                 subprotocols=self.args.subprotocol, **self.options)
        except HandshakeError as exc:
            lines = describe_refusal(exc)
            self.out.error(lines[0])
            for line in lines[1:]:
                self.out.note(line)
        except WebSocketTimeoutError as exc:
            self.out.error(str(exc))
        except trio.BrokenResourceError as exc:  # TLS failed; the cause says why
            cause = exc.__cause__ or exc
            self.out.error(f"TLS handshake with {self.url} failed: {cause}")
        except OSError as exc:
            self.out.error(f"cannot connect to {self.url}: {exc}")
            for reason in connect_failures(exc):
                self.out.note(f"  {reason}")
        return None

    async def _listen(self, conn: Conn, everything: trio.CancelScope) -> None:
        await conn.listen()
        everything.cancel()  # the connection is over: stop reading input and pinging

    async def _send_lines(self, conn: Conn, nursery: trio.Nursery) -> None:
        reader = LineReader(sys.stdin.fileno())
        while True:
            try:
                line = await reader.next_line()
            except OSError as exc:
                self.out.error(f"cannot read standard input: {exc}")
                break
            if line is None:
                break
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.out.error(f"not sent: that line is not valid UTF-8 ({exc.reason} at "
                               f"byte {exc.start})")
                continue
            try:
                await conn.write_string(text)
            except ConnectionClosed:
                self.out.error(f"not sent, the connection is closing: "
                               f"{printable_short(text)}")
                return
        nursery.start_soon(self._close, conn, "end of input")

    async def _on_interrupt(self, conn: Conn, interrupts: AsyncIterator[int],
                            nursery: trio.Nursery) -> None:
        async for _ in interrupts:
            if self.closing_reason is None:
                nursery.start_soon(self._close, conn, "interrupted")
                continue
            self.out.error("interrupted again: quitting without waiting for the server")
            self.interrupted = True
            nursery.cancel_scope.cancel()
            return

    async def _close(self, conn: Conn, why: str) -> None:
        if self.closing_reason is not None or conn.closing:
            return
        self.closing_reason = why
        self.out.line(f"* {why}: closing with 1000 (normal)")
        try:
            await conn.write_close(1000)
        except ConnectionClosed:
            pass  # the server closed first; listen() reports how

    async def _ping(self, conn: Conn, interval: float) -> None:
        count = 0
        while True:
            await trio.sleep(interval)
            for payload, sent in list(self.pings.items()):
                if trio.current_time() - sent >= interval:
                    self.out.error(f"no pong for ping {payload.decode()} after {interval:g} s")
                    del self.pings[payload]
            count += 1
            payload = str(count).encode()
            self.pings[payload] = trio.current_time()
            try:
                await conn.write_ping(payload)
            except ConnectionClosed:
                return

    def _report(self) -> int:
        """Say how the connection ended; the exit status."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.closed is not None:
            code, reason = self.closed
            who = "closed" if self.closing_reason else "the server closed the connection"
            self.out.line(f"* {who}: {describe_close(code, reason)}")
            return EXIT_OK if clean_close(code) else EXIT_FAILED
        error = self.failure
        kind = type(error).__name__ if error is not None else "unknown"
        self.out.error(f"the connection failed ({kind}): {error}")
        sent = error.close_code if isinstance(error, WebSocketError) else None
        if sent is not None and not isinstance(error, ConnectionClosed):
            self.out.note(f"we closed it with {describe_close(sent, b'')}")
        return EXIT_FAILED


def connect_failures(error: OSError) -> list[str]:
    """Why each address failed, when Trio tried several (its OSError only says
    that all attempts failed; the reasons are in its cause)."""
    cause = error.__cause__
    attempts = getattr(cause, "exceptions", ())
    return [str(attempt) for attempt in attempts]


def printable_short(text: str, limit: int = 60) -> str:
    shown = printable(text)
    return shown if len(shown) <= limit else shown[:limit] + " …"


COMMAND = Command(
    name="connect",
    help="an interactive client: lines in, messages out",
    description=("Connect to a WebSocket server. Each line you type (or pipe in) is sent "
                 "as a text message; every message, ping and pong that arrives is printed "
                 "with its type and size. End of input (Ctrl-D) or Ctrl-C closes with 1000; "
                 "the close code and reason are shown. Exit status: 0 after a clean close "
                 "(1000, 1001), 1 when the connection failed, was refused or closed with "
                 "another code, 2 for bad arguments, 130 when interrupted twice."),
    add_arguments=add_arguments,
    run=run,
)
