"""A real redis-server for the hub tests: on 127.0.0.1 (a free port) in a temporary
folder, persistence off unless a test asks for it, stopped by PID.

``RedisServer`` can be killed and started again on the same port (the outage tests),
optionally with an append-only file so that a stream survives the kill.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from realproc import free_port, require, stop, wait_for_port


class RedisServer:
    """One redis-server process (restartable) bound to 127.0.0.1:``port``."""

    def __init__(self, folder: Path, *, persist: bool = False,
                 extra: Sequence[str] = ()) -> None:
        self.binary = require("redis-server")
        self.folder = folder
        self.port = free_port()
        self.persist = persist
        self.extra = list(extra)  # more config, as redis-server's --name value arguments
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--save", "", "--protected-mode", "yes",
                "--daemonize", "no", "--loglevel", "warning"]
        if self.persist:
            # Only for the test that needs a stream to survive a kill -9.
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv + self.extra

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        log = open(self.folder / f"redis-{self.starts}.log", "wb")
        with log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, process=self.process, timeout=15)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save, every client connection reset."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@contextmanager
def redis_server(folder: Path, *, persist: bool = False,
                 extra: Sequence[str] = ()) -> Iterator[RedisServer]:
    server = RedisServer(folder, persist=persist, extra=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()
