"""``python -m trio_gws``: WebSockets from the command line.

Each subcommand is a ``Command`` in its own module (``connect``, ``echo``,
``serve``); adding one is writing its module and listing it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ._common import EXIT_USAGE, Command, UsageError
from ._connect import COMMAND as CONNECT
from ._echo import COMMAND as ECHO
from ._serve import COMMAND as SERVE

COMMANDS: tuple[Command, ...] = (CONNECT, ECHO, SERVE)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's own (for its error messages)."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_gws",
        description="trio-gws from the command line: try a WebSocket server or client.")
    parser.add_argument("--version", action="version", version=f"trio-gws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {}
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help,
                                  description=command.description)
        command.add_arguments(sub)
        parsers[command.name] = sub
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status."""
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = next(command for command in COMMANDS if command.name == args.command)
    try:
        return command.run(args)
    except UsageError as exc:
        parsers[command.name].error(str(exc))  # prints the usage, exits with 2
        raise  # not reached
