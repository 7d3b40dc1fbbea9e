"""What the hostile tests share: the server process, its /stats, its /proc figures.

The server (``server.py``) is a separate process, started and stopped by PID through
``realproc``; its descriptors and memory are read from /proc/PID, its task and event
counts from its own ``GET /stats`` (answered by ``Config.http_handler``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

import realproc
import trio_gws as gws

SERVER = Path(__file__).resolve().parent / "server.py"
MiB = 1024 * 1024


class ServerProcess:
    """A running ``server.py``: its port, process and log."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path,
                 tls_port: int = 0) -> None:
        self.process = process
        self.pid = process.pid
        self.port = port
        self.tls_port = tls_port
        self.log = log

    def alive(self) -> bool:
        return self.process.poll() is None

    def fds(self) -> int:
        """Open descriptors of the server process (/proc/PID/fd)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        """Resident memory of the server process, bytes (/proc/PID/status VmRSS)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """The server's own ``GET /stats`` (tasks, events, logs)."""
        return get_stats(self.port, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def http_get(port: int, target: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """A plain HTTP GET to 127.0.0.1:port: (status, body). Blocking (runs in a thread
    from async tests)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def get_stats(port: int, timeout: float = 10.0) -> dict[str, Any]:
    status, body = http_get(port, "/stats", timeout)
    assert status == 200, (status, body)
    result: dict[str, Any] = json.loads(body)
    return result


@contextmanager
def server_process(tmp: Path, *args: str | int | float, tls: tuple[Path, Path] | None = None,
                   name: str = "server") -> Iterator[ServerProcess]:
    """Run ``server.py`` with ``args`` on a free port (and a TLS port with ``tls``:
    the certificate and key files) until the block ends; stopped by its PID."""
    port = realproc.free_port()
    argv: list[str | Path] = [sys.executable, "-u", SERVER, "--port", str(port)]
    tls_port = 0
    if tls is not None:
        tls_port = realproc.free_port()
        argv += ["--tls-port", str(tls_port), "--cert", tls[0], "--key", tls[1]]
    argv += [str(arg) for arg in args]
    log = tmp / f"{name}.log"
    env = dict(os.environ, PYTHONPATH=str(realproc.REPO))
    with realproc.running(argv, log=log, port=port, env=env) as process:
        server = ServerProcess(process, port, log, tls_port)
        if tls_port:
            realproc.wait_for_port(tls_port, process=process)
        yield server
        assert server.alive(), f"the server died:\n{server.log_text()[-4000:]}"


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1
               ) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(interval)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def settled(server: ServerProcess, baseline: dict[str, Any], *, timeout: float
            ) -> dict[str, Any]:
    """Wait until the server is back at ``baseline`` (fds, tasks, no live
    connection); returns the last stats with the fds, whether it settled or not."""
    last: dict[str, Any] = {}

    def back() -> bool:
        nonlocal last
        fds = server.fds()  # first: the stats request's own socket is not open yet
        last = server.stats()
        last["fds"] = fds
        return bool(last["live"] == 0 and last["tasks"] == baseline["tasks"]
                    and last["fds"] == baseline["fds"])

    wait_until(back, timeout=timeout, interval=0.25)
    return last


def steady(server: ServerProcess, *, timeout: float = 30.0, hold: float = 1.0
           ) -> dict[str, Any]:
    """Wait until no connection is open and the fds and tasks have not moved for
    ``hold`` seconds: the baseline (stats, with ``fds``)."""
    deadline = time.monotonic() + timeout
    previous: tuple[int, int, int] | None = None
    since = time.monotonic()
    while True:
        fds = server.fds()
        stats = server.stats()
        stats["fds"] = fds
        key = (stats["live"], stats["tasks"], fds)
        now = time.monotonic()
        if key != previous:
            previous, since = key, now
        elif stats["live"] == 0 and now - since >= hold:
            return stats
        if now > deadline:
            raise AssertionError(f"the server did not settle: {stats}")
        time.sleep(0.2)


def held_rss(server: ServerProcess) -> tuple[int, int]:
    """(raw RSS, RSS after a full garbage collection and ``malloc_trim``): the second
    is memory the server holds, without garbage waiting for a collection or free
    pages kept by the C allocator, which is what a leak would grow."""
    raw = server.rss()
    status, _ = http_get(server.port, "/gc")
    assert status == 200
    return raw, server.rss()


class Echoed(gws.EventHandler):
    """A live client's handler: the echoes it gets, in a channel."""

    def __init__(self) -> None:
        self.got: trio.MemorySendChannel[bytes]
        self.got, self.received = trio.open_memory_channel[bytes](1)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await self.got.send(message.data)
