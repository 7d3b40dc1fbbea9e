"""Streamed large messages: memory and throughput, both sides in their own process.

    .venv/bin/python benchmarks/stream_memory.py            # compression off and on
    .venv/bin/python benchmarks/stream_memory.py --mib 64 --mib-compressed 16  # quicker
    .venv/bin/python benchmarks/stream_memory.py --write-results  # RESULTS-stream.md

For each compression setting it measures, with the server pinned to core 0 and the
client to core 1 (``taskset``; ``--no-pin`` to skip):

* **streamed**: one message of ``--mib`` MiB (1 GiB; ``--mib-compressed``, 128 MiB,
  with compression, which runs at a twentieth of the speed) sent with ``conn.write_file`` (256 KiB
  fragments from a generator) and received by an ``on_stream`` handler that hashes
  each piece; the server answers with the byte count and the hash;
* **whole**: the same bytes as 256 KiB messages sent with ``write_message`` and
  received by ``on_message`` (today's whole-message path), answered the same way.

* **whole at REV** (``--baseline REV``, optional): the whole-message path of another
  revision of trio_gws, imported by both processes (``git archive`` into the ignored
  ``.variants/``, given the compiled speedups, as ``run.py --variant``). Issue 14 asks
  for at least "today's whole-message path": ``--baseline 9cb895f`` is that path as
  it was the day the issue's work began (``7e09741^``).

Reported: MiB/s of each path (wall time from the first byte to the server's answer; the
ratio is the median of the same-round ratios over ``--rounds``, 7 by default; the two
paths take turns going first; beside it, a 95% interval for that median from the
order statistics, and whether it lies above 1.0, below it, or holds it: parity),
the server's CPU time for the transfer (from
/proc/PID/stat, per GiB; its same-round ratio is steadier than wall time here),
and the peak RSS growth of each process during the transfer (its ``VmHWM``, reset
just before the transfer, minus its RSS then). Targets (issue 14): the streamed path's peak growth under
8 MiB on each side, and its throughput at least the whole-message path's. The data
is a 1 MiB random block repeated: incompressible for deflate (whose window is at most
32 KiB), so compression does real work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

import trio_gws as gws
from harness import env_importing, snapshot_variant
from servers._common import proc_cpu_seconds

HERE = Path(__file__).resolve().parent
BLOCK = os.urandom(1 << 20)
WHOLE_SIZE = 256 * 1024
FRAGMENT = 256 * 1024  # the same size as the whole messages: like with like


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_kib() -> int:
    """RSS now, after resetting the peak (Linux: writing 5 to clear_refs resets
    VmHWM), so that ``peak_kib`` afterwards is the peak of what follows only."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status("VmRSS")


def peak_kib() -> int:
    return _status("VmHWM")


# -- the server process ----------------------------------------------------------------


class Receiver(gws.EventHandler):
    """Hashes what arrives; a text message 'done' asks for the answer."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.before = 0

    def _start(self) -> None:
        if not self.size:
            self.before = rss_kib()

    def _answer(self) -> str:
        answer = json.dumps({"bytes": self.size, "sha256": self.digest.hexdigest(),
                             "growth_kib": peak_kib() - self.before})
        self.digest, self.size = hashlib.sha256(), 0
        return answer


class StreamReceiver(Receiver):
    async def on_stream(self, conn: gws.Conn, stream: gws.MessageStream) -> None:
        if stream.opcode is gws.Opcode.TEXT:
            await stream.read_all()
            await conn.write_message(gws.Opcode.TEXT, self._answer())
            return
        self._start()
        async for piece in stream:
            self.digest.update(piece)
            self.size += len(piece)


class WholeReceiver(Receiver):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        if message.opcode is gws.Opcode.TEXT:
            await conn.write_message(gws.Opcode.TEXT, self._answer())
            return
        self._start()
        self.digest.update(message.data)
        self.size += len(message.data)


async def serve(port: int, mode: str, compress: bool, limit: int) -> None:
    handler = StreamReceiver() if mode == "streamed" else WholeReceiver()
    config = gws.Config(compress_enabled=compress, max_content_length=limit)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: gws.serve(
            handler, port, host="127.0.0.1", config=config, task_status=task_status))
        print("READY", flush=True)


# -- the client ------------------------------------------------------------------------


async def send(port: int, mode: str, compress: bool, mib: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(BLOCK)
    config = gws.Config(compress_enabled=compress)
    async with gws.open_conn(f"ws://127.0.0.1:{port}/", config=config) as conn:
        await conn.write_message(gws.Opcode.TEXT, "done")  # warm up, reset the counters
        await conn.receive()
        before = rss_kib()
        start = time.perf_counter()
        if mode == "streamed":
            def fragments() -> Any:
                view = memoryview(BLOCK)
                for _ in range(mib):
                    for i in range(0, len(BLOCK), FRAGMENT):
                        yield view[i:i + FRAGMENT]
            await conn.write_file(gws.Opcode.BINARY, fragments())
        else:
            view = memoryview(BLOCK)
            for _ in range(mib):
                for i in range(0, len(BLOCK), WHOLE_SIZE):
                    await conn.write_message(gws.Opcode.BINARY, view[i:i + WHOLE_SIZE])
        await conn.write_message(gws.Opcode.TEXT, "done")
        answer = json.loads((await conn.receive()).text)
        seconds = time.perf_counter() - start
    if answer["bytes"] != mib << 20 or answer["sha256"] != digest.hexdigest():
        raise RuntimeError(f"the server received something else: {answer}")
    return {"mib_per_s": mib / seconds, "server_growth_kib": answer["growth_kib"],
            "client_growth_kib": peak_kib() - before, "seconds": seconds}


def measure(mode: str, compress: bool, mib: int, pin: bool,
            code: Path | None = None) -> dict[str, Any]:
    """One transfer: a fresh server process (core 0) and a fresh client (core 1), both
    importing trio_gws from ``code`` when given (a folder holding ``trio_gws/``)."""
    env = env_importing(code) if code is not None else None
    port = free_port()
    limit = (mib << 20) + (1 << 20)
    prefix = ["taskset", "-c", "0"] if pin else []
    server = subprocess.Popen([*prefix, sys.executable, __file__, "--serve", str(port),
                               "--mode", mode, "--limit", str(limit),
                               *(["--compress"] if compress else [])],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError("the server did not start")
        client = [*(["taskset", "-c", "1"] if pin else []), sys.executable, __file__,
                  "--send", str(port), "--mode", mode, "--mib", str(mib),
                  *(["--compress"] if compress else [])]
        cpu = proc_cpu_seconds(server.pid)
        result = subprocess.run(client, capture_output=True, text=True, timeout=900,
                                env=env)
        if result.returncode:
            raise RuntimeError(result.stderr)
        record = dict(json.loads(result.stdout.strip().splitlines()[-1]))
        record["server_cpu_s"] = proc_cpu_seconds(server.pid) - cpu
        return record
    finally:
        server.terminate()
        server.wait(10)


def median_interval(sorted_values: list[float], confidence: float = 0.95
                    ) -> tuple[float, float]:
    """A distribution-free interval for the median (order statistics, binomial
    tails): with a handful of rounds on a noisy machine, whether two paths differ at
    all is the question, and a median alone cannot answer it. The interval covers at
    least ``confidence`` from 6 values on; with 6 to 8 it is their whole range, and
    with fewer the whole range covers less."""
    n = len(sorted_values)
    tail = (1 - confidence) / 2
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) <= k - 1)
    while k < n // 2:
        next_below = below + math.comb(n, k) / 2 ** n
        if next_below > tail:
            break
        k, below = k + 1, next_below
    # k values lie below the interval and k above it; at least one value each side
    k = max(k, 1)
    return sorted_values[k - 1], sorted_values[n - k]


def throughput_verdict(ratios: list[float]) -> str:
    """The median of the same-round ratios, the rounds, the interval, and what the
    interval says: above, parity (it holds 1.0) or below."""
    ratio = ratios[len(ratios) // 2]
    low, high = median_interval(ratios)
    reading = "above" if low > 1.0 else "below" if high < 1.0 else "parity"
    return (f"throughput {ratio:.3f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"95% interval of the median {low:.2f}x-{high:.2f}x: {reading}; "
            f"{'PASS' if ratio >= 1.0 else 'MISS'})")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A transfer of about a second: at 256 MiB (0.3 s) the same code's rounds spread
    # from 0.88x to 1.27x.
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--mib-compressed", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--write-results", action="store_true",
                        help="also write benchmarks/RESULTS-stream.md")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the whole-message path of this git revision "
                             "(or folder holding trio_gws/), e.g. 9cb895f")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="streamed", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--compress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve, args.mode, args.compress, args.limit)
        return 0
    if args.send:
        print(json.dumps(trio.run(send, args.send, args.mode, args.compress, args.mib)))
        return 0
    pin = not args.no_pin and shutil.which("taskset") is not None
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    paths = ["whole", "streamed"]
    baseline: Path | None = None
    if args.baseline:
        baseline = HERE / ".variants" / "stream-baseline" / args.baseline.replace("/", "_")
        shutil.rmtree(baseline, ignore_errors=True)
        snapshot_variant(args.baseline, baseline)
        paths.append(f"whole at {args.baseline}")
    rows = []
    for compress in (False, True):
        runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
        mib = args.mib_compressed if compress else args.mib
        for round_ in range(args.rounds):
            # Each path goes first in turn.
            for path in paths[round_ % len(paths):] + paths[:round_ % len(paths)]:
                code = baseline if path.startswith("whole at") else None
                runs[path].append(measure(path.split()[0], compress, mib, pin, code))
        rows.append((compress, runs))
    out: list[str] = []
    out.append(f"{args.mib} MiB per transfer ({args.mib_compressed} MiB compressed), "
               f"{args.rounds} rounds (medians), {'pinned' if pin else 'not pinned'}\n")
    out.append("| compression | path | MiB/s | server CPU per GiB | server peak growth "
               "| client peak growth |")
    out.append("|---|---|---:|---:|---:|---:|")
    verdicts = []
    for compress, runs in rows:
        med = {mode: {key: sorted(r[key] for r in runs[mode])[len(runs[mode]) // 2]
                      for key in runs[mode][0]} for mode in runs}
        mib = args.mib_compressed if compress else args.mib
        for mode in ("streamed", *paths[:1], *paths[2:]):
            m = med[mode]
            out.append(f"| {'on' if compress else 'off'} | {mode} | {m['mib_per_s']:.1f} | "
                       f"{m['server_cpu_s'] * 1024 / mib:.2f} s | "
                       f"{m['server_growth_kib'] / 1024:.1f} MiB | "
                       f"{m['client_growth_kib'] / 1024:.1f} MiB |")
        s = med["streamed"]
        # The median of the same-round ratios: each round's pair ran back to back, so a
        # neighbour's burst on this shared machine hits both sides of one ratio.
        ratios = sorted(a["mib_per_s"] / b["mib_per_s"]
                        for a, b in zip(runs["streamed"], runs["whole"]))
        # Server CPU for the same bytes: steadier here than wall time (issue 14 asks
        # for throughput; this says how much of a gap is the server's own work).
        cpu_ratios = sorted(a["server_cpu_s"] / b["server_cpu_s"]
                            for a, b in zip(runs["streamed"], runs["whole"]))
        memory_ok = max(s["server_growth_kib"], s["client_growth_kib"]) < 8 * 1024
        verdicts.append(f"compression {'on' if compress else 'off'}: streamed/whole "
                        f"{throughput_verdict(ratios)}, server CPU "
                        f"streamed/whole {cpu_ratios[len(cpu_ratios) // 2]:.2f}x (rounds "
                        f"{', '.join(f'{r:.2f}' for r in cpu_ratios)}), "
                        f"peak growth under 8 MiB on both sides: "
                        f"{'PASS' if memory_ok else 'MISS'}")
        for path in paths[2:]:
            old_ratios = sorted(a["mib_per_s"] / b["mib_per_s"]
                                for a, b in zip(runs["streamed"], runs[path]))
            verdicts.append(f"compression {'on' if compress else 'off'}: streamed/{path} "
                            f"{throughput_verdict(old_ratios)}")
    out.append("")
    out.extend(verdicts)
    print("\n".join(out))
    if args.write_results:
        write_results(out, verdicts, started)
    return 0


def write_results(table: list[str], verdicts: list[str], started: str) -> None:
    """RESULTS-stream.md: the table, the verdicts (first, in bold), and the machine."""
    import platform

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip() or "?"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = "\n".join([
        "# Streamed large messages: memory and throughput", "",
        f"Written by `benchmarks/stream_memory.py --write-results` on {started} UTC, "
        f"commit `{head}`, Python {platform.python_version()}, trio {trio.__version__}, "
        f"{os.cpu_count()} cores (shared with other work; load average at the end {load}). "
        "What it runs and how it measures: the docstring of `benchmarks/stream_memory.py`.",
        "", "**" + "; ".join(verdicts) + ".**", "", *table, ""])
    (HERE / "RESULTS-stream.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS-stream.md'}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
