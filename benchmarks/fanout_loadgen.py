"""Load generator of the fan-out benchmark: picows on uvloop, one process.

``fanout.py`` starts it pinned to its own core. It opens the receiving connections
(spread over the servers), each joining its topics, and one publishing connection
per server; then publishes at a fixed rate of deliveries (``--rate``) or as fast as
the servers deliver (``--rate 0``: at most ``--window`` deliveries outstanding). Every
message carries its publish id and the time it was sent, so each delivery gives one
publish-to-delivery latency (one clock: this process sends and receives). It prints
one JSON object: deliveries/s, latency p50/p99, CPU of the servers and of Redis over
the timed window (/proc), and deliveries that never came.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import struct
import time
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadgen import percentile, proc_cpu_seconds
from servers._common import raise_fd_limit

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the bench extra
    uvloop = None

HEADER = struct.Struct("!Id")  # publish id, perf_counter() when it was sent
CONNECT_CONCURRENCY = 64


class Run:
    def __init__(self, members: int) -> None:
        self.members = members
        self.measuring = False
        self.deliveries = 0
        self.latencies: list[float] = []
        self.outstanding = 0          # deliveries expected, not yet arrived
        self.pending: dict[int, int] = {}  # publish id -> deliveries still due
        self.errors: list[str] = []


class Receiver(WSListener):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.joined = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            if not self.joined.done():
                self.joined.set_result(None)
            return
        if kind is WSMsgType.CLOSE:
            transport.disconnect()
            return
        if kind is not WSMsgType.BINARY:
            return
        now = time.perf_counter()
        run = self.run
        publish, sent = HEADER.unpack_from(frame.get_payload_as_memoryview())
        left = run.pending.get(publish)
        if left is None:
            run.errors.append(f"delivery of unknown or complete publish {publish}")
            return
        if left == 1:
            del run.pending[publish]
        else:
            run.pending[publish] = left - 1
        run.outstanding -= 1
        if run.measuring:
            run.deliveries += 1
            run.latencies.append(now - sent)


class Publisher(WSListener):
    pass


def topics_of(connection: int, shape: str) -> list[int]:
    """``one``: everyone on topic 0. ``many``: 1,000 topics of 10 over 1,000
    connections; connection c is in the 10 topics t with t = c (mod 100)."""
    if shape == "one":
        return [0]
    return [connection % 100 + 100 * k for k in range(10)]


async def open_all(args: argparse.Namespace, run: Run) -> tuple[list[Any], list[WSTransport]]:
    urls = args.urls.split(",")
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    receivers: list[Any] = []

    async def one(index: int) -> None:
        topics = ",".join(map(str, topics_of(index, args.shape)))
        async with gate:
            transport, listener = await asyncio.wait_for(ws_connect(
                lambda: Receiver(run), f"{urls[index % len(urls)]}?t={topics}",
                websocket_handshake_timeout=20), 30)
            await asyncio.wait_for(listener.joined, 30)
        receivers.append((transport, listener))

    await asyncio.gather(*(one(i) for i in range(args.conns)))
    publishers = []
    for url in urls:
        transport, _ = await ws_connect(Publisher, url, websocket_handshake_timeout=20)
        publishers.append(transport)
    return receivers, publishers


async def publish_loop(args: argparse.Namespace, run: Run, publishers: list[WSTransport],
                       stop_at: float) -> None:
    """Fixed rate: publishes/s = rate / members, ticked every 2 ms. Rate 0: keep at
    most ``window`` deliveries outstanding."""
    topics = 1 if args.shape == "one" else 1000
    pad = b"\x00" * max(0, args.size - HEADER.size)
    publish_id = 0
    start = time.perf_counter()
    per_second = args.rate / run.members if args.rate else 0.0
    while time.perf_counter() < stop_at:
        if per_second:
            due = int((time.perf_counter() - start) * per_second) - publish_id
        else:
            due = max(0, (args.window - run.outstanding) // run.members)
        for _ in range(due):
            topic = publish_id % topics
            run.pending[publish_id] = run.members
            run.outstanding += run.members
            publishers[publish_id % len(publishers)].send(
                WSMsgType.BINARY,
                topic.to_bytes(4, "big") + HEADER.pack(publish_id, time.perf_counter()) + pad)
            publish_id += 1
        await asyncio.sleep(0.002)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    members = 1000 if args.shape == "one" else 10
    run = Run(members)
    receivers, publishers = await open_all(args, run)
    pids = [int(p) for p in args.server_pids.split(",")]
    gc.collect()
    gc.freeze()
    loop_end = time.perf_counter() + args.warmup + args.duration
    publishing = asyncio.ensure_future(publish_loop(args, run, publishers, loop_end))
    await asyncio.sleep(args.warmup)
    t0 = time.perf_counter()
    c0 = time.process_time()
    s0 = sum(proc_cpu_seconds(pid) for pid in pids)
    r0 = proc_cpu_seconds(args.redis_pid) if args.redis_pid else 0.0
    run.measuring = True
    await asyncio.sleep(args.duration)
    run.measuring = False
    t1 = time.perf_counter()
    c1 = time.process_time()
    s1 = sum(proc_cpu_seconds(pid) for pid in pids)
    r1 = proc_cpu_seconds(args.redis_pid) if args.redis_pid else 0.0
    await publishing
    # What was published must arrive (bounded wait): a missing delivery is an error.
    deadline = time.perf_counter() + 10
    while run.outstanding and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    if run.outstanding:
        run.errors.append(f"{run.outstanding} deliveries never arrived")
    wall = t1 - t0
    latencies = sorted(run.latencies)
    for transport in [t for t, _ in receivers] + publishers:
        transport.disconnect(graceful=False)
    return {
        "deliveries": run.deliveries,
        "deliveries_per_s": run.deliveries / wall,
        "p50_ms": (percentile(latencies, 0.5) or 0) * 1e3,
        "p99_ms": (percentile(latencies, 0.99) or 0) * 1e3,
        "server_cpu_s": s1 - s0,
        "redis_cpu_s": r1 - r0,
        "server_us_per_delivery": (s1 - s0) / max(1, run.deliveries) * 1e6,
        "redis_us_per_delivery": (r1 - r0) / max(1, run.deliveries) * 1e6,
        "client_cpu_frac": (c1 - c0) / wall,
        "server_cpu_frac": (s1 - s0) / wall,
        "redis_cpu_frac": (r1 - r0) / wall,
        "errors": len(run.errors),
        "error_samples": run.errors[:5],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", required=True, help="comma-separated ws:// URLs")
    parser.add_argument("--shape", choices=["one", "many"], required=True)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rate", type=float, default=10_000, help="deliveries/s; 0: max")
    parser.add_argument("--window", type=int, default=20_000,
                        help="deliveries outstanding at most when --rate 0")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--server-pids", required=True)
    parser.add_argument("--redis-pid", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.warmup + arguments.duration > 120:
        parser.error("warm-up + window are bounded to 120 s")
    raise_fd_limit()
    if uvloop is not None:
        uvloop.install()
    print(json.dumps(asyncio.run(main(arguments))), flush=True)
