"""Command-line programs driven as a person would: in a pseudo-terminal.

``in_terminal(argv)`` runs a program with a new pseudo-terminal as its controlling
terminal (stdin, stdout and stderr), in its own session, so what the test types goes
through the terminal's line discipline exactly as keystrokes do: Enter ends a line,
Ctrl-D on an empty line is end of input, Ctrl-C is SIGINT to the program. The test
reads what the program printed (``expect``) and waits for its exit status. The
program is stopped by its PID (its process group) when the block ends, whatever
happened.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

import realproc

CTRL_C = "\x03"
CTRL_D = "\x04"
ENTER = "\r"  # what the Enter key sends; the terminal turns it into "\n"


def _take_terminal() -> None:
    """In the child, after setsid(): make stdin (the pty) the controlling terminal.

    Runs between fork and exec: only an already-imported C function is called."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The test's side of the pseudo-terminal: the keyboard and the screen."""

    def __init__(self, process: subprocess.Popen[bytes], screen: trio.lowlevel.FdStream,
                 argv: Sequence[str]) -> None:
        self.process = process
        self._screen = screen
        self._argv = argv
        self.output = ""  # everything shown so far, "\r\n" as "\n"
        self._seen = 0    # where the next expect() starts looking
        self._raw = b""
        self._closed = False

    async def type(self, keys: str) -> None:
        """Press these keys (``ENTER``, ``CTRL_C``, ``CTRL_D`` included)."""
        await self._screen.send_all(keys.encode())

    async def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait until the output after the previous match matches ``pattern`` (a
        regular expression); fail with the whole screen when it does not."""
        regex = re.compile(pattern)
        with trio.move_on_after(timeout):
            while True:
                found = regex.search(self.output, self._seen)
                if found is not None:
                    self._seen = found.end()
                    return found
                if not await self._read():
                    break
        pytest.fail(f"{pattern!r} not shown by {' '.join(self._argv[-3:])} "
                    f"(exit status {self.process.poll()}); the screen:\n{self.output}",
                    pytrace=False)

    async def wait(self, timeout: float = 30) -> int:
        """The program's exit status, once it exits (the rest of its output read)."""
        with trio.move_on_after(timeout):
            while self.process.poll() is None:
                await trio.sleep(0.02)
            while await self._read():
                pass
            return int(self.process.returncode)
        pytest.fail(f"{' '.join(self._argv)} still runs after {timeout}s; the screen:\n"
                    f"{self.output}", pytrace=False)

    async def _read(self) -> bool:
        """Read what the program printed; False once nothing more can come."""
        if self._closed:
            return False
        try:
            data = await self._screen.receive_some(65536)
        except trio.BrokenResourceError:  # EIO: every program on the terminal exited
            data = b""
        if not data:
            self._closed = True
            return False
        self._raw += data
        self.output = self._raw.decode("utf-8", "replace").replace("\r\n", "\n")
        return True


@asynccontextmanager
async def in_terminal(args: Sequence[str], *, env: dict[str, str] | None = None
                      ) -> AsyncIterator[Terminal]:
    """``python -m trio_gws *args`` (the tests' interpreter) in a new terminal."""
    argv = [sys.executable, "-m", "trio_gws", *args]
    keyboard, program_side = pty.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=program_side, stdout=program_side, stderr=program_side,
            start_new_session=True, preexec_fn=_take_terminal, cwd=realproc.REPO,
            env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})})
    except BaseException:
        os.close(keyboard)
        raise
    finally:
        os.close(program_side)
    screen = trio.lowlevel.FdStream(keyboard)
    try:
        yield Terminal(process, screen, argv)
    finally:
        realproc.stop(process)
        await screen.aclose()
