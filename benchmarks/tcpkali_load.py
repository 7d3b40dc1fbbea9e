"""The second, independent load generator: tcpkali (C, libev), when a binary is found.

tcpkali is the seed's own load generator. It is not packaged for Debian and not part of
this repository: build it yourself (README.md, "tcpkali") and put it on PATH or name it
with ``TCPKALI=/path/to/tcpkali``. Without it the tcpkali scenarios are reported as
unavailable and everything else runs as usual.

One measurement: the server (fresh, pinned to its core) is first waited on until it is
idle, then ``tcpkali --ws -c C -r R -f BODY -T D`` runs pinned to the other core with
one worker thread. tcpkali sends each message as one masked text frame (mask key 0) at
R messages per second per connection and counts every byte it receives. Only the
downstream figure ("Total data received") is read: the upstream one counts what
tcpkali handed to its kernel, which a slow server never echoes. Echoed messages =
received bytes / (payload + the server's frame header); the server's CPU (utime +
stime, /proc) and run-queue wait are read when tcpkali starts and when it exits.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import (json_payload, proc_cpu_seconds, proc_runqueue_wait_seconds)

#: The payloads: the 4.1 KiB JSON document of loadgen.py, and 32 bytes of text.
BODIES = {"json": lambda: json_payload(4198),
          "text": lambda: (b"0123456789abcdef" * 2)[:32]}

_RECEIVED = re.compile(r"Total data received:.*\((\d+) bytes\)")
_SENT = re.compile(r"Total data sent:.*\((\d+) bytes\)")


def find_tcpkali() -> str | None:
    """``$TCPKALI``, else ``tcpkali`` on PATH, else benchmarks/.tcpkali/bin/tcpkali."""
    named = os.environ.get("TCPKALI")
    if named:
        return named if os.access(named, os.X_OK) else None
    found = shutil.which("tcpkali")
    if found:
        return found
    local = Path(__file__).resolve().parent / ".tcpkali" / "bin" / "tcpkali"
    return str(local) if os.access(local, os.X_OK) else None


def server_frame_header(size: int) -> int:
    """Bytes of an unmasked server frame header for a ``size``-byte payload."""
    return 2 if size < 126 else 4 if size < 65536 else 10


def wait_idle(pid: int, limit: float = 20.0, quiet: float = 0.02,
              interval: float = 0.25) -> float:
    """Wait until the server uses < ``quiet`` of a core over ``interval``; seconds waited.

    websockets, for one, keeps echoing data queued by an earlier load for seconds.
    """
    started = time.monotonic()
    last = proc_cpu_seconds(pid)
    while time.monotonic() - started < limit:
        time.sleep(interval)
        now = proc_cpu_seconds(pid)
        if now - last < quiet * interval:
            break
        last = now
    return time.monotonic() - started


def run_tcpkali(binary: str, port: int, server_pid: int, conns: int, rate: int,
                payload: str, duration: float, pinning: Any) -> dict[str, Any]:
    """One tcpkali window against the server on ``port``; the result dict.

    ``pinning`` (harness.Pinning) pins and nices tcpkali like the load generator.
    """
    body = BODIES[payload]()
    size = len(body)
    waited = wait_idle(server_pid)
    with tempfile.TemporaryDirectory(prefix="tcpkali-") as tmp:
        path = Path(tmp) / "body"
        path.write_bytes(body)
        cmd = pinning.wrap([binary, "--ws", "-c", str(conns), "-r", str(rate), "-f", str(path),
                    "-T", f"{duration:g}s", "-w", "1", "--connect-rate", "10000",
                    "--connect-timeout", "5s", f"127.0.0.1:{port}"], pinning.client_core)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0, sw0, t0 = proc_cpu_seconds(server_pid), proc_runqueue_wait_seconds(server_pid), \
            time.perf_counter()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=pinning.own_autogroup) as proc:
            pinning.started(proc)
            try:
                out, _ = proc.communicate(timeout=duration + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        wall = time.perf_counter() - t0
        s1, sw1 = proc_cpu_seconds(server_pid), proc_runqueue_wait_seconds(server_pid)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    received = _RECEIVED.search(out)
    if proc.returncode != 0 or received is None:
        raise RuntimeError(f"tcpkali failed ({proc.returncode}): {out[-600:]}")
    got = int(received.group(1))
    sent = _SENT.search(out)
    frame = size + server_frame_header(size)
    messages = got / frame
    server_cpu = s1 - s0
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result: dict[str, Any] = {
        "mode": "tcpkali", "connections": conns, "rate_per_conn": rate, "size": size,
        "payload": payload, "seconds": wall, "idle_wait_s": waited,
        "bytes_received": got, "bytes_sent": int(sent.group(1)) if sent else None,
        "messages": messages, "msgs_per_s": messages / wall,
        "mib_per_s": messages * size / wall / 2**20,
        "server_cpu_s": server_cpu, "server_cpu_frac": server_cpu / wall,
        "server_runqueue_wait_frac": (sw1 - sw0) / wall,
        "client_cpu_s": client_cpu, "client_cpu_frac": client_cpu / wall,
        "client_runqueue_wait_frac": 0.0,
        "errors": 0, "error_samples": [],
    }
    if messages and server_cpu > 0:
        result["server_cpu_us_per_msg"] = server_cpu / messages * 1e6
        result["msgs_per_cpu_s"] = messages / server_cpu
        result["echo_mib_per_cpu_s"] = messages * size / server_cpu / 2**20
    return result
