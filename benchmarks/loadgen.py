"""Load generator for the echo benchmark: picows (Cython) on uvloop, one process.

``run.py`` starts it pinned to its own core, one process per measurement; it prints
one JSON object on stdout. Modes:

* ``echo``: N connections, K messages in flight on each (a new one is sent as soon as
  an echo arrives), a warm-up, then a timed window in which echoes are counted and
  their round-trip times recorded. Each echo's size is checked.
* ``idle``: open a few warm-up connections, read the server's RSS, open N more idle
  connections, wait for the server to settle, read its RSS again.
* ``handshake``: D concurrent dialers each loop connect -> opening handshake ->
  close handshake -> TCP closed, during a warm-up and then a timed window.

In every mode the window's CPU time of this process and of the server (``--server-pid``,
read from /proc/PID/stat) is recorded, so the caller can tell who was the bottleneck.
Everything it dials is on the loopback interface; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import time
import zlib
from collections import deque
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

# benchmarks/ is sys.path[0] (harness.py runs this file as a script)
from servers._common import proc_cpu_seconds, raise_fd_limit

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the bench extra
    uvloop = None

PAGE = os.sysconf("SC_PAGE_SIZE")
DEFLATE_TAIL = b"\x00\x00\xff\xff"
CONNECT_CONCURRENCY = 64


# --------------------------------------------------------------------------- helpers

def proc_runqueue_wait_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def json_payload(size: int) -> bytes:
    """A deterministic JSON document of exactly ``size`` bytes (realistic, compressible)."""
    rng = random.Random(6455)
    words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
             "mike november oscar papa quebec romeo sierra tango uniform victor").split()
    items: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"type": "update", "seq": 1, "items": items, "pad": ""}
    while True:
        items.append({
            "id": rng.randrange(10**9),
            "name": " ".join(rng.choice(words) for _ in range(3)),
            "price": round(rng.uniform(0, 1000), 2),
            "qty": rng.randrange(1000),
            "tags": rng.sample(words, 2),
            "active": rng.random() < 0.5,
            "ts": "2024-05-%02dT%02d:%02d:%02dZ" % (rng.randrange(1, 29), rng.randrange(24),
                                                    rng.randrange(60), rng.randrange(60)),
        })
        encoded = json.dumps(doc, separators=(",", ":")).encode()
        if len(encoded) > size:
            items.pop()
            break
    encoded = json.dumps(doc, separators=(",", ":")).encode()
    doc["pad"] = "x" * (size - len(encoded))
    encoded = json.dumps(doc, separators=(",", ":")).encode()
    assert len(encoded) == size, (len(encoded), size)
    return encoded


def make_payload(kind: str, size: int) -> tuple[WSMsgType, bytes]:
    if kind == "json":
        return WSMsgType.TEXT, json_payload(size)
    if kind == "text":
        return WSMsgType.TEXT, (b"0123456789abcdef" * (size // 16 + 1))[:size]
    return WSMsgType.BINARY, random.Random(7692).randbytes(size)


def deflate_offer_params(header: str | None) -> dict[str, str] | None:
    """Parameters of the permessage-deflate the server accepted, or None."""
    if not header:
        return None
    for offer in header.split(","):
        parts = [p.strip() for p in offer.split(";")]
        if parts[0].lower() == "permessage-deflate":
            params = {}
            for p in parts[1:]:
                key, _, value = p.partition("=")
                params[key.strip().lower()] = value.strip().strip('"')
            return params
    return None


def precompress(payload: bytes, params: dict[str, str]) -> bytes:
    """The payload compressed with no context: identical bytes for every message."""
    wbits = int(params.get("client_max_window_bits") or 15)
    wbits = max(wbits, 9)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(DEFLATE_TAIL)
    return data[:-4]


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Stats:
    def __init__(self) -> None:
        self.running = True       # keep refilling the pipeline
        self.measuring = False    # count what arrives
        self.count = 0
        self.bytes = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.outstanding = 0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


def latency_and_errors(latencies: list[float], stats: Stats) -> dict[str, Any]:
    """p50/p99 of ``latencies`` in ms (None without samples), then the errors seen."""
    lat = sorted(latencies)
    return {
        "p50_ms": None if not lat else percentile(lat, 0.50) * 1e3,
        "p99_ms": None if not lat else percentile(lat, 0.99) * 1e3,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
    }


# --------------------------------------------------------------------------- echo

class EchoClient(WSListener):
    """Keeps ``inflight`` messages outstanding and times each echo."""

    def __init__(self, stats: Stats, msg_type: WSMsgType, wire: bytes, size: int,
                 compressed: bool) -> None:
        self.stats = stats
        self.msg_type = msg_type
        self.wire = wire
        self.size = size
        self.compressed = compressed
        self.sent: deque[float] = deque()
        self.transport: WSTransport | None = None
        self.received = 0
        self.parts: list[bytes] = []
        self.rsv1 = False
        self.inflater = zlib.decompressobj(-15) if compressed else None
        self.closed = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send_one(self) -> None:
        self.sent.append(time.perf_counter())
        self.stats.outstanding += 1
        self.transport.send(self.msg_type, self.wire, True, self.compressed)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if msg_type is WSMsgType.PING:
            return  # picows answers pings itself
        if msg_type is WSMsgType.PONG:
            return
        stats = self.stats
        if self.inflater is None:
            self.received += frame.payload_size
            if not frame.fin:
                return
            size = self.received
            self.received = 0
        else:
            if msg_type is not WSMsgType.CONTINUATION:
                self.rsv1 = frame.rsv1
            self.parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            data = b"".join(self.parts)
            self.parts.clear()
            if self.rsv1:
                data = self.inflater.decompress(data + DEFLATE_TAIL)
            size = len(data)
        now = time.perf_counter()
        started = self.sent.popleft()
        stats.outstanding -= 1
        if size != self.size:
            stats.error(f"echo of {size} bytes, sent {self.size}")
        if stats.measuring:
            stats.count += 1
            stats.bytes += size
            stats.latencies.append(now - started)
        if stats.running:
            self.send_one()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.sent and self.stats.running:
            self.stats.error("server closed the connection with messages in flight")
        if not self.closed.done():
            self.closed.set_result(None)


async def open_connections(count: int, factory: Any, url: str, extra_headers: Any,
                           stats: Stats) -> list[tuple[WSTransport, Any]]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[tuple[WSTransport, Any]] = []

    async def one() -> None:
        async with gate:
            try:
                transport, listener = await asyncio.wait_for(
                    ws_connect(factory, url, extra_headers=extra_headers,
                               websocket_handshake_timeout=10), 20)
            except Exception as exc:  # noqa: BLE001 - report, keep going
                stats.error(f"connect: {exc!r}")
                return
            opened.append((transport, listener))

    await asyncio.gather(*(one() for _ in range(count)))
    return opened


async def close_all(opened: list[tuple[WSTransport, Any]], timeout: float = 3.0) -> None:
    for transport, _ in opened:
        if not transport.is_disconnected and not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)  # picows's default code is 0: invalid
    waits = [asyncio.ensure_future(t.wait_disconnected()) for t, _ in opened]
    if waits:
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for t, _ in opened:
            t.disconnect(graceful=False)
        for w in pending:
            w.cancel()
        for w in done:
            w.exception()  # consume


class Window:
    """Wall and CPU clocks of this process and the server across the timed window."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def start(self) -> None:
        pid = self.server_pid
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.cw0 = proc_runqueue_wait_seconds(os.getpid())
        self.s0 = proc_cpu_seconds(pid) if pid else None
        self.sw0 = proc_runqueue_wait_seconds(pid) if pid else None

    def stop(self) -> dict[str, Any]:
        pid = self.server_pid
        t1 = time.perf_counter()
        c1 = time.process_time()
        cw1 = proc_runqueue_wait_seconds(os.getpid())
        s1 = proc_cpu_seconds(pid) if pid else None
        sw1 = proc_runqueue_wait_seconds(pid) if pid else None
        wall = t1 - self.t0
        out: dict[str, Any] = {"seconds": wall, "client_cpu_s": c1 - self.c0,
                               "client_cpu_frac": (c1 - self.c0) / wall,
                               "client_runqueue_wait_frac": (cw1 - self.cw0) / wall}
        if s1 is not None:
            out["server_cpu_s"] = s1 - self.s0
            out["server_cpu_frac"] = (s1 - self.s0) / wall
            out["server_runqueue_wait_frac"] = (sw1 - self.sw0) / wall
        return out


async def run_echo(args: argparse.Namespace) -> dict[str, Any]:
    msg_type, payload = make_payload(args.payload, args.size)
    stats = Stats()
    extra = None
    if args.compress:
        extra = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}

    wire_holder: dict[str, Any] = {}

    def factory(request: Any, response: Any) -> EchoClient:
        params = deflate_offer_params(response.headers.get("Sec-WebSocket-Extensions"))
        compressed = params is not None
        if compressed:
            key = tuple(sorted(params.items()))
            if key not in wire_holder:
                wire_holder[key] = precompress(payload, params)
            wire = wire_holder[key]
        else:
            wire = payload
        return EchoClient(stats, msg_type, wire, len(payload), compressed)

    opened = await open_connections(args.conns, factory, args.url, extra, stats)
    result: dict[str, Any] = {"mode": "echo", "connections": len(opened),
                              "inflight": args.inflight, "size": len(payload),
                              "payload": args.payload}
    if not opened:
        result.update(errors=stats.errors, error_samples=stats.error_samples)
        return result
    compressed = [lst.compressed for _, lst in opened]
    result["compression_negotiated"] = all(compressed)
    if args.compress and not all(compressed):
        result["note"] = "server did not accept permessage-deflate"
    if wire_holder:
        result["compressed_size"] = len(next(iter(wire_holder.values())))

    for _, listener in opened:
        for _ in range(args.inflight):
            listener.send_one()
    await asyncio.sleep(args.warmup)
    gc.collect()
    gc.disable()  # no collector pauses inside the window
    window = Window(args.server_pid)
    stats.count = stats.bytes = 0
    stats.latencies = []
    stats.measuring = True
    window.start()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    clocks = window.stop()
    gc.enable()
    stats.running = False
    deadline = time.perf_counter() + 5
    while stats.outstanding and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await close_all(opened)

    wall = clocks["seconds"]
    result.update(clocks)
    result.update(
        messages=stats.count,
        msgs_per_s=stats.count / wall,
        mib_per_s=stats.bytes / wall / 2**20,
    )
    result.update(latency_and_errors(stats.latencies, stats))
    if stats.count and "server_cpu_s" in clocks:
        result["server_cpu_us_per_msg"] = clocks["server_cpu_s"] / stats.count * 1e6
    return result


# --------------------------------------------------------------------------- idle

class IdleClient(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()


async def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    if not args.server_pid:
        raise SystemExit("idle mode needs --server-pid")
    stats = Stats()
    warm = await open_connections(args.warm_conns, IdleClient, args.url, None, stats)
    await asyncio.sleep(args.settle)
    rss0 = proc_rss_bytes(args.server_pid)
    t0 = time.perf_counter()
    cpu0 = proc_cpu_seconds(args.server_pid)
    idle = await open_connections(args.conns, IdleClient, args.url, None, stats)
    opened_in = time.perf_counter() - t0
    cpu1 = proc_cpu_seconds(args.server_pid)
    await asyncio.sleep(args.settle)
    rss1 = proc_rss_bytes(args.server_pid)
    await asyncio.sleep(args.settle / 2)
    rss2 = proc_rss_bytes(args.server_pid)
    alive = sum(1 for t, _ in idle if not t.is_disconnected)
    rss_end = max(rss1, rss2)
    for t, _ in warm + idle:
        t.disconnect(graceful=False)
    return {
        "mode": "idle",
        "warm_connections": len(warm),
        "connections": len(idle),
        "alive_at_end": alive,
        "rss_before_kib": rss0 / 1024,
        "rss_after_kib": rss_end / 1024,
        "kib_per_conn": (rss_end - rss0) / 1024 / max(1, alive),
        "open_seconds": opened_in,
        "server_cpu_ms_per_handshake": (cpu1 - cpu0) / max(1, len(idle)) * 1e3,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
    }


# --------------------------------------------------------------------------- handshake

class DialClient(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()


async def run_handshake(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    latencies: list[float] = []

    async def dialer() -> None:
        while stats.running:
            started = time.perf_counter()
            try:
                transport, _ = await asyncio.wait_for(
                    ws_connect(DialClient, args.url, websocket_handshake_timeout=10), 10)
                opened = time.perf_counter()
                # A clean close (1000): picows's default sends code 0, which RFC 6455
                # forbids, so every server failed the connection with 1002 instead.
                transport.send_close(WSCloseCode.OK)
                await asyncio.wait_for(transport.wait_disconnected(), 10)
            except Exception as exc:  # noqa: BLE001 - report, keep going
                stats.error(f"dial: {exc!r}")
                await asyncio.sleep(0.01)
                continue
            if stats.measuring:
                stats.count += 1
                latencies.append(opened - started)

    tasks = [asyncio.ensure_future(dialer()) for _ in range(args.dialers)]
    await asyncio.sleep(args.warmup)
    window = Window(args.server_pid)
    stats.measuring = True
    window.start()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    clocks = window.stop()
    stats.running = False
    done, pending = await asyncio.wait(tasks, timeout=15)
    for task in pending:
        task.cancel()
    result: dict[str, Any] = {"mode": "handshake", "dialers": args.dialers}
    result.update(clocks)
    result.update(
        handshakes=stats.count,
        handshakes_per_s=stats.count / clocks["seconds"],
    )
    result.update(latency_and_errors(latencies, stats))
    if stats.count and "server_cpu_s" in clocks:
        result["server_cpu_us_per_handshake"] = clocks["server_cpu_s"] / stats.count * 1e6
    return result


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("echo", "idle", "handshake"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--warm-conns", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--size", type=int, default=4198)
    parser.add_argument("--payload", choices=("json", "text", "binary"), default="json")
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--dialers", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args()
    host = args.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        parser.error("the load generator only dials the loopback interface")
    if not 0 < args.duration <= 60 or not 0 <= args.warmup <= 60:
        parser.error("durations are bounded: 0 < duration <= 60, 0 <= warmup <= 60")
    raise_fd_limit()
    runner = {"echo": run_echo, "idle": run_idle, "handshake": run_handshake}[args.mode]
    if uvloop is not None:
        result = uvloop.run(runner(args))
        loop_name = "uvloop"
    else:
        result = asyncio.run(runner(args))
        loop_name = "asyncio"
    result["client_loop"] = loop_name
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
