"""What every subcommand shares: how it is declared, its exit statuses, its output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

#: Exit statuses of every subcommand.
EXIT_OK = 0            # done, and the connection (if any) closed cleanly
EXIT_FAILED = 1        # could not connect, refused, or ended with an error
EXIT_USAGE = 2         # bad arguments (argparse's own status)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C before it could finish cleanly (128 + SIGINT)


@dataclass(frozen=True)
class Command:
    """A subcommand of ``python -m trio_gws``: adding one is adding one of these to
    ``trio_gws._cli.COMMANDS``."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # returns the exit status


class UsageError(Exception):
    """Arguments that parse but make no sense together (shown as argparse shows
    its own errors, exit status 2)."""


class Output:
    """Where a command speaks: the session on ``out``, problems on ``err``; every
    line is flushed at once (the user, or a program, is waiting for it)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        for stream in (self.out, self.err):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:  # never fail on a character the terminal lacks
                reconfigure(errors="backslashreplace")

    def line(self, text: str) -> None:
        """A line of the session (messages, pongs, connection status)."""
        self._write(self.out, text)

    def error(self, text: str) -> None:
        """Something went wrong."""
        self._write(self.err, f"error: {text}")

    def warning(self, text: str) -> None:
        self._write(self.err, f"WARNING: {text}")

    def note(self, text: str) -> None:
        """Detail under an error or warning."""
        self._write(self.err, text)

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text + "\n")
            stream.flush()
        except BrokenPipeError:
            pass  # the reader went away (``| head``): nobody is left to tell
