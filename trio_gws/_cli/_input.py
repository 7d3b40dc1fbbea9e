"""Lines from standard input, without blocking Trio.

A worker thread does the blocking ``os.read``: making a terminal's file descriptor
non-blocking (as ``trio.lowlevel.FdStream`` does) would also make the shared stdout
non-blocking, and then printing a burst of messages could fail with EAGAIN. The
thread reads the raw descriptor, not ``sys.stdin``: a thread abandoned in a read
(Ctrl-C, or the server hung up) holds no Python-level lock that interpreter shutdown
would wait for.
"""

from __future__ import annotations

import os

import trio

CHUNK = 65536


class LineReader:
    """``await next_line()`` returns each line (without its line ending), the last
    unterminated piece at end of input, then None."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._pending = b""
        self._eof = False

    async def next_line(self) -> bytes | None:
        while not self._lines:
            if self._eof:
                return None
            chunk = await trio.to_thread.run_sync(os.read, self._fd, CHUNK,
                                                  abandon_on_cancel=True)
            self._take(chunk)
        return self._lines.pop(0)

    def _take(self, chunk: bytes) -> None:
        if not chunk:  # end of input: Ctrl-D on an empty line, or the pipe closed
            self._eof = True
            if self._pending:
                self._lines.append(self._pending)
                self._pending = b""
            return
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        self._lines.extend(line[:-1] if line.endswith(b"\r") else line
                           for line in complete)
