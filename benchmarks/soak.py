"""The soak: ten minutes of mixed traffic against one trio-gws server process.

Does the server's memory stay flat under hours-like use? One server process
(``servers/soak_server.py``) gets, for ``--minutes`` (default 10):

* echo: 40 clients, half with permessage-deflate, one message of 16 B to 16 KiB
  every 50 ms each, every echo checked;
* broadcast: 60 listeners reading a 4 KiB broadcast every 100 ms (and a
  personalised one every second), every sequence number checked;
* churn: 4 loops of short connections: a handshake, a few echoes, then a clean
  close, or death by RST mid-frame, or a half-sent request;
* slow readers: one every 3 s that never reads (a small receive buffer), held 30 s;
  the server drops it with 1008 when its queue passes ``write_buffer_limit``.

Every second the server's RSS (/proc/PID/status) and open descriptors
(/proc/PID/fd) are sampled; every 10 s its own /stats (tasks, live connections,
events). The result: the slope of RSS over the last 8 minutes (least squares) and
the growth it means over those 8 minutes, the most descriptors, the traffic
counts. Target: a flat line, under 1 MiB of growth over those 8 minutes.

    .venv/bin/python benchmarks/soak.py                  # 10 minutes -> RESULTS-soak.md
    .venv/bin/python benchmarks/soak.py --minutes 1 --results /tmp/soak.md   # a smoke run
    .venv/bin/python benchmarks/soak.py --tracemalloc    # + the allocation sites that grew

Not part of CI (it takes ten minutes); everything binds and dials 127.0.0.1 only,
and the server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import trio_gws as gws  # noqa: E402
from servers._common import proc_cpu_seconds  # noqa: E402

SERVER = HERE / "servers" / "soak_server.py"
MiB = 1024 * 1024
HEAD = struct.Struct("!QQ")
ECHO_CLIENTS = 40
LISTENERS = 60
CHURN_LOOPS = 4
SLOW_EVERY = 3.0
SLOW_HOLD = 30.0
TARGET = 1.0  # MiB of growth over the last 8 minutes


@dataclass
class Traffic:
    echoes: int = 0
    echo_bytes: int = 0
    broadcast_messages: int = 0
    churn: dict[str, int] = field(default_factory=dict)
    slow_readers: int = 0
    reconnects: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, what: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def http_get(port: int, target: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


# -------------------------------------------------------------------- the traffic

def text_payload(rng: random.Random, size: int) -> bytes:
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" %d " % rng.randrange(1000)
    return bytes(out[:size])


async def echo_client(port: int, i: int, traffic: Traffic, stop: trio.Event) -> None:
    rng = random.Random(i)
    config = gws.Config(compress_enabled=i % 2 == 0)
    while not stop.is_set():
        try:
            async with gws.open_conn(f"ws://127.0.0.1:{port}/echo", config=config,
                                     proxy=None) as conn:
                while not stop.is_set():
                    payload = text_payload(rng, rng.randrange(16, 16384))
                    await conn.write_message(gws.Opcode.TEXT, payload)
                    with trio.fail_after(30):
                        message = await conn.receive()
                    if message.data != payload:
                        traffic.problem(f"echo {i}: wrong echo")
                    traffic.echoes += 1
                    traffic.echo_bytes += len(payload)
                    await trio.sleep(0.05)
        except (gws.WebSocketError, OSError, trio.TooSlowError) as exc:
            traffic.problem(f"echo {i}: {exc!r}")
            traffic.reconnects += 1
            await trio.sleep(1)


async def listener(port: int, i: int, traffic: Traffic, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            async with gws.open_conn(f"ws://127.0.0.1:{port}/listen", proxy=None) as conn:
                last = -1
                while not stop.is_set():
                    with trio.fail_after(30):
                        message = await conn.receive()
                    seq, recipient = HEAD.unpack_from(message.data)
                    if recipient == 0:  # the shared broadcast: in order, none lost
                        if last >= 0 and seq != last + 1:
                            traffic.problem(f"listener {i}: {seq} after {last}")
                        last = seq
                    traffic.broadcast_messages += 1
        except (gws.WebSocketError, OSError, trio.TooSlowError) as exc:
            if not stop.is_set():
                traffic.problem(f"listener {i}: {exc!r}")
                traffic.reconnects += 1
                await trio.sleep(1)


def request_bytes() -> bytes:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    return (f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


def masked_frame(payload: bytes) -> bytes:
    """A masked text frame (a zero mask: the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


async def rst_close(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def churn_loop(port: int, i: int, traffic: Traffic, stop: trio.Event) -> None:
    rng = random.Random(1000 + i)
    while not stop.is_set():
        kind = rng.choice(["clean", "clean", "clean", "rst-mid-frame", "half-request"])
        traffic.churn[kind] = traffic.churn.get(kind, 0) + 1
        try:
            with trio.fail_after(30):
                if kind == "clean":
                    config = gws.Config(compress_enabled=rng.random() < 0.5)
                    async with gws.open_conn(f"ws://127.0.0.1:{port}/echo", config=config,
                                             proxy=None) as conn:
                        for _ in range(rng.randrange(1, 4)):
                            payload = text_payload(rng, rng.randrange(10, 2000))
                            await conn.write_message(gws.Opcode.TEXT, payload)
                            if (await conn.receive()).data != payload:
                                traffic.problem("churn: wrong echo")
                else:
                    sock = trio.socket.socket()
                    await sock.connect(("127.0.0.1", port))
                    request = request_bytes()
                    if kind == "half-request":
                        await sock.send(request[:rng.randrange(1, len(request))])
                        await trio.sleep(rng.random() * 0.05)
                        sock.close()
                    else:
                        await sock.send(request)
                        data = b""
                        while b"\r\n\r\n" not in data:
                            chunk = await sock.recv(4096)
                            if not chunk:
                                raise OSError("closed before the 101")
                            data += chunk
                        frame = masked_frame(text_payload(rng, rng.randrange(10, 5000)))
                        await sock.send(frame[:rng.randrange(1, len(frame))])
                        await rst_close(sock)
        except (gws.WebSocketError, OSError, trio.TooSlowError) as exc:
            traffic.problem(f"churn {kind}: {exc!r}")
        await trio.sleep(0.02)


async def slow_readers(port: int, traffic: Traffic, stop: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        while not stop.is_set():
            nursery.start_soon(one_slow_reader, port, traffic)
            await trio.sleep(SLOW_EVERY)
        nursery.cancel_scope.cancel()


async def one_slow_reader(port: int, traffic: Traffic) -> None:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        await sock.connect(("127.0.0.1", port))
        await sock.send(request_bytes().replace(b"/echo", b"/listen"))
        traffic.slow_readers += 1
        await trio.sleep(SLOW_HOLD)  # never reads: the server drops it (1008)
    except OSError as exc:
        traffic.problem(f"slow reader: {exc!r}")
    finally:
        await rst_close(sock)


# -------------------------------------------------------------------- the run

@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    cpu: float
    live: int | None = None
    tasks: int | None = None


async def run(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    traffic = Traffic()
    stop = trio.Event()
    samples: list[Sample] = []
    stats_log: list[dict[str, Any]] = []
    duration = args.minutes * 60
    diff = ""
    async with trio.open_nursery() as load:
        for i in range(ECHO_CLIENTS):
            load.start_soon(echo_client, port, i, traffic, stop)
        for i in range(LISTENERS):
            load.start_soon(listener, port, i, traffic, stop)
        for i in range(CHURN_LOOPS):
            load.start_soon(churn_loop, port, i, traffic, stop)
        load.start_soon(slow_readers, port, traffic, stop)
        began = trio.current_time()
        next_stats = 0.0
        snapshot_taken = False
        while (elapsed := trio.current_time() - began) < duration:
            sample = Sample(elapsed, rss(pid), fds(pid), proc_cpu_seconds(pid))
            if elapsed >= next_stats:
                stats = json.loads(await http_get(port, "/stats"))
                stats["t"] = elapsed
                stats_log.append(stats)
                sample.live, sample.tasks = stats["live"], stats["tasks"]
                next_stats += 10
                print(f"soak: {elapsed / 60:4.1f} min  RSS {sample.rss / MiB:6.1f} MiB  "
                      f"fds {sample.fds:4d}  live {stats['live']:4d}  tasks "
                      f"{stats['tasks']:5d}  echoes {traffic.echoes}", file=sys.stderr)
            if args.tracemalloc and not snapshot_taken and elapsed >= duration - 8 * 60:
                await http_get(port, "/snapshot")
                snapshot_taken = True
            samples.append(sample)
            await trio.sleep(1 - (trio.current_time() - began) % 1)
        if args.tracemalloc:
            diff = (await http_get(port, "/tracemalloc-diff")).decode()
        stop.set()
        load.cancel_scope.cancel()
    final = json.loads(await http_get(port, "/stats"))
    return {"traffic": traffic, "samples": samples, "stats": stats_log, "final": final,
            "tracemalloc": diff}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx if sxx else 0.0


def report(result: dict[str, Any], command: str) -> str:
    # Long: the report's lines in the order they are read, one table row each.
    samples: list[Sample] = result["samples"]
    traffic: Traffic = result["traffic"]
    final = result["final"]
    duration = samples[-1].t
    window = min(8 * 60, duration)
    tail = [s for s in samples if s.t >= duration - window]
    per_minute = slope([(s.t / 60, s.rss / MiB) for s in tail])
    growth = per_minute * window / 60
    cpu = samples[-1].cpu - samples[0].cpu
    verdict = "PASS" if growth < TARGET else "MISS"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    lines = [
        "# Soak: ten minutes of mixed traffic against one server",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit "
        f"`{commit}`, Python {platform.python_version()}, trio {trio.__version__}, "
        f"{os.cpu_count()} cores (shared with other work). What it runs and how it "
        "measures: the docstring of `benchmarks/soak.py`.",
        "",
        f"**RSS slope over the last {window / 60:.3g} minutes: {per_minute * 1024:+.1f} "
        f"KiB/min, i.e. {growth:+.2f} MiB over those {window / 60:.3g} minutes "
        f"(target: under {TARGET:.0f} MiB): {verdict}.** Most open descriptors: "
        f"{max(s.fds for s in samples)}.",
        "",
        "| | |",
        "|---|---|",
        f"| duration | {duration / 60:.1f} min, {len(samples)} samples (1 per second) |",
        f"| RSS | {samples[0].rss / MiB:.1f} MiB at the start, "
        f"{tail[0].rss / MiB:.1f} MiB at the start of the window, "
        f"{samples[-1].rss / MiB:.1f} MiB at the end; min {min(s.rss for s in tail) / MiB:.1f}"
        f", max {max(s.rss for s in tail) / MiB:.1f} MiB in the window |",
        f"| open descriptors | {samples[0].fds} at the start, max {max(s.fds for s in samples)}"
        f", {samples[-1].fds} at the end |",
        f"| server CPU | {cpu:.0f} s in {duration:.0f} s ({100 * cpu / duration:.0f}% of a core)"
        " |",
        f"| echo | {traffic.echoes} echoes checked, {traffic.echo_bytes / MiB:.0f} MiB "
        f"(half of the {ECHO_CLIENTS} clients compressed) |",
        f"| broadcast | {final['broadcasts']} ticks, {traffic.broadcast_messages} messages "
        f"received by {LISTENERS} listeners, sequence checked |",
        f"| churn | {sum(traffic.churn.values())} short connections: "
        + ", ".join(f"{k} {v}" for k, v in sorted(traffic.churn.items())) + " |",
        f"| slow readers | {traffic.slow_readers} (one every {SLOW_EVERY:.0f} s, held "
        f"{SLOW_HOLD:.0f} s); queue overflows (1008): {final['refused']} |",
        f"| server events | {final['opens']} connections opened; endings: "
        + ", ".join(f"{k} {v}" for k, v in sorted(final["endings"].items())) + " |",
        f"| server log | {final['log'] or 'nothing at WARNING or above'} |",
        f"| client-side problems | {len(traffic.problems)}"
        + (f": {'; '.join(traffic.problems[:5])}" if traffic.problems else "") + " |",
        "",
        "RSS and descriptors, minute by minute (max of the minute's samples; live "
        "connections and Trio tasks from the server's /stats at the minute's start):",
        "",
        "| minute | RSS (MiB) | fds | live | tasks | heap in use / free, mmapped (MiB) "
        "| Python blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    stats_by_minute = {int(s["t"] // 60): s for s in reversed(result["stats"])}
    for minute in range(int(duration // 60) + 1):
        chunk = [s for s in samples if int(s.t // 60) == minute]
        if not chunk:
            continue
        st = stats_by_minute.get(minute, {})
        heap = st.get("allocator") or {}
        where = (f"{heap['heap_used'] / MiB:.2f} / {heap['heap_free'] / MiB:.2f}, "
                 f"{heap['mmapped'] / MiB:.2f} | {heap['blocks']}") if heap else " |"
        lines.append(f"| {minute} | {max(s.rss for s in chunk) / MiB:.1f} | "
                     f"{max(s.fds for s in chunk)} | {st.get('live', '')} | "
                     f"{st.get('tasks', '')} | {where} |")
    if result["tracemalloc"]:
        lines += ["", f"tracemalloc, the allocation sites that grew most over the last "
                  f"{window / 60:.0f} minutes:", "", "```", result["tracemalloc"].rstrip(),
                  "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS-soak.md")
    parser.add_argument("--csv", type=Path, default=None,
                        help="every sample (default: benchmarks/results/soak-TIME.csv, "
                        "beside the server's log)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace the server's allocations (slower) and report growth")
    args = parser.parse_args()
    port = free_port()
    argv = [sys.executable, "-u", str(SERVER), "--port", str(port)]
    if args.tracemalloc:
        argv.append("--tracemalloc")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (HERE / "results").mkdir(exist_ok=True)
    log_path = HERE / "results" / f"soak-{stamp}.server.log"
    log = open(log_path, "wb")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env,
                              start_new_session=True)
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        if not ready.startswith(b"READY"):
            raise SystemExit(f"the soak server did not start: {ready!r}")
        result = trio.run(run, args, port, server.pid)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
    command = "benchmarks/soak.py " + " ".join(sys.argv[1:])
    text = report(result, command.strip())
    args.results.write_text(text)
    csv_path = args.csv or HERE / "results" / f"soak-{stamp}.csv"
    with open(csv_path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t", "rss", "fds", "cpu", "live", "tasks"])
        for s in result["samples"]:
            writer.writerow([f"{s.t:.2f}", s.rss, s.fds, f"{s.cpu:.2f}", s.live, s.tasks])
    print(text)
    print(f"samples: {csv_path}; server log: {log_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
