"""What testee_server.py and testee_client.py share: the echo handler, the Config,
the command-line options for compression and logging, and the logging setup.

Both scripts are run as ``python autobahn/testee_*.py``, so this folder is
``sys.path[0]`` and they import this module as ``_testee``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio_gws as gws

MiB = 1024 * 1024


class EchoHandler(gws.EventHandler):
    """Echo every message with its opcode, with write_message: the reader waits for
    each echo (wire order). Every on_error is logged at INFO (expected for the many
    cases that send protocol violations), with the peer's address if ``log_address``."""

    def __init__(self, log: logging.Logger, *, log_address: bool = False) -> None:
        self.log = log
        self.log_address = log_address

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        if self.log_address:
            self.log.info("%s: on_error %s: %s", conn.remote_address, type(error).__name__,
                          error)
        else:
            self.log.info("on_error %s: %s", type(error).__name__, error)


def make_config(args: argparse.Namespace) -> gws.Config:
    """The Config the flags ask for (``--parallel`` only exists for the server)."""
    options: dict[str, object] = {
        # case 9.1.6 sends exactly 16 MiB, the default limit: keep a margin
        "max_content_length": 32 * MiB,
    }
    if args.compress:
        options["compress_enabled"] = True
    if args.no_context_takeover:
        options["server_context_takeover"] = False
        options["client_context_takeover"] = False
    if getattr(args, "parallel", False):
        options["parallel_enabled"] = True
    return gws.Config(**options)  # type: ignore[arg-type]


def add_compression_options(parser: argparse.ArgumentParser, compress_help: str) -> None:
    """--compress and --no-context-takeover."""
    parser.add_argument("--compress", action="store_true", help=compress_help)
    parser.add_argument("--no-context-takeover", action="store_true",
                        help="server_context_takeover=False, client_context_takeover=False")


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log every on_error")


def setup_logging(args: argparse.Namespace) -> None:
    """INFO with --verbose (every on_error), else WARNING; to stderr."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
