"""The fan-out benchmark: a hub delivering to many connections, in one process or
through Redis.

    .venv/bin/python benchmarks/fanout.py [--quick] [--write-results]

For each setup (in-process hub; one server process through Redis; two server
processes through Redis), each shape (1,000 connections on one topic; 1,000 topics
of 10 over 1,000 connections) and each payload size (128 B, 4 KiB), it measures:

* at 10,000 deliveries/s: publish-to-delivery p50/p99 and the servers' CPU per
  delivery (Redis's CPU is shown apart);
* at the most the setup delivers (at most 20,000 deliveries outstanding):
  deliveries/s.

Fresh servers per measurement, pinned with redis-server to core 0; the load
generator (picows on uvloop, ``fanout_loadgen.py``) on core 1. (``--redis-core
client`` puts Redis on core 1: measured, the servers then spend more per delivery,
since waking Redis across cores costs more, and Redis competes with the load.) Everything binds and
dials 127.0.0.1; redis-server runs with persistence off in a temporary folder and is
stopped by its PID. Targets: Redis adds under 1 ms to p50 at 10,000 deliveries/s;
CPU per delivery through Redis within 1.3x of in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import Pinning, ServerProcess, free_port, tail  # noqa: E402

SERVER = HERE / "servers" / "fanout_server.py"
LOADGEN = HERE / "fanout_loadgen.py"
SETUPS = {
    "in-process": {"servers": 1, "redis": False},
    "redis, 1 process": {"servers": 1, "redis": True},
    "redis, 2 processes": {"servers": 2, "redis": True},
}
SHAPES = {"one": "1,000 conns on 1 topic", "many": "1,000 topics of 10"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def start_redis(folder: Path, pinning: Pinning, core: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: run `make components`")
    port = free_port()
    cmd = pinning.wrap([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                        str(folder), "--save", "", "--appendonly", "no",
                        "--loglevel", "warning"], core)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    import socket
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
    return process, port


def redis_pid(process: subprocess.Popen[bytes]) -> int:
    """The redis-server's own PID (taskset execs it, so it is the same)."""
    return process.pid


def start_server(redis_url: str | None, pinning: Pinning, logdir: Path) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, str(SERVER), "--port", str(port)]
    if redis_url:
        cmd += ["--redis", redis_url]
    log_path = logdir / f"fanout-{port}.log"
    with open(log_path, "w") as err:
        proc = subprocess.Popen(pinning.wrap(cmd, pinning.server_core),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"fan-out server did not start: {tail(log_path)}")
    server = ServerProcess(proc, port, log_path)  # type: ignore[arg-type]
    server.pid = int(line.split()[2])
    return server


def measure(setup: str, shape: str, size: int, rate: float, args: argparse.Namespace,
            pinning: Pinning, redis: tuple[subprocess.Popen[bytes], int] | None,
            logdir: Path) -> dict[str, Any]:
    spec = SETUPS[setup]
    url = f"redis://127.0.0.1:{redis[1]}/0" if spec["redis"] and redis else None
    servers = [start_server(url, pinning, logdir) for _ in range(int(spec["servers"]))]
    record: dict[str, Any] = {"setup": setup, "shape": shape, "size": size, "rate": rate}
    try:
        cmd = [sys.executable, str(LOADGEN),
               "--urls", ",".join(f"ws://127.0.0.1:{s.port}/" for s in servers),
               "--shape", shape, "--size", str(size), "--rate", str(rate),
               "--warmup", str(args.warmup), "--duration", str(args.duration),
               "--server-pids", ",".join(str(s.pid) for s in servers)]
        if url and redis:
            cmd += ["--redis-pid", str(redis_pid(redis[0]))]
        done = subprocess.run(pinning.wrap(cmd, pinning.client_core), capture_output=True,
                              text=True, timeout=args.warmup + args.duration + 180,
                              cwd=HERE)
        if done.returncode != 0:
            record["error"] = "\n".join(done.stderr.splitlines()[-6:])
        else:
            record.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        record["error"] = "load generator timed out"
    finally:
        for server in servers:
            server.stop(signal.SIGTERM)
    return record


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


NUMBERS = ("deliveries_per_s", "p50_ms", "p99_ms", "server_us_per_delivery",
           "redis_us_per_delivery", "server_cpu_frac", "client_cpu_frac")


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def medians(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measurement: the median of each number over the rounds."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        key = (r["setup"], r["shape"], r["size"], r["rate"])
        row = rows.setdefault(key, {"setup": r["setup"], "shape": r["shape"],
                                    "size": r["size"], "rate": r["rate"], "notes": [],
                                    "samples": {name: [] for name in NUMBERS}})
        if "error" in r or r.get("errors"):
            row["notes"].append(r.get("error") or f"{r['errors']} errors: "
                                f"{r['error_samples'][:1]}")
        if "error" not in r:
            for name in NUMBERS:
                row["samples"][name].append(r[name])
    for row in rows.values():
        for name in NUMBERS:
            row[name] = _median(row["samples"][name])
    return list(rows.values())


def ratio_medians(records: list[dict[str, Any]], shape: str, size: int
                  ) -> tuple[float | None, float | None]:
    """Medians over rounds of (Redis p50 - in-process p50, Redis CPU / in-process CPU)
    at 10,000 deliveries/s, each from the same round."""
    added, ratio = [], []
    for round_ in sorted({r.get("round", 0) for r in records}):
        def find(setup: str) -> dict[str, Any] | None:
            for r in records:
                if ((r["setup"], r["shape"], r["size"], r["rate"], r.get("round", 0))
                        == (setup, shape, size, 10_000, round_) and "error" not in r):
                    return r
            return None
        base, through = find("in-process"), find("redis, 1 process")
        if base and through:
            added.append(through["p50_ms"] - base["p50_ms"])
            ratio.append(through["server_us_per_delivery"] / base["server_us_per_delivery"])
    return _median(added), _median(ratio)


def report(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Fan-out benchmark (hub: in-process and through Redis)", "",
             f"Written by `benchmarks/fanout.py` from one run; raw numbers in "
             f"[RESULTS-fanout.json](RESULTS-fanout.json).", "",
             f"- Command: `{meta['command']}`",
             f"- Date (UTC): {meta['date']}; wall time {meta['wall_min']:.1f} min",
             f"- Machine: {meta['machine']}",
             f"- Load average at start {meta['load_start']}, at end {meta['load_end']} "
             "(other processes share this machine)",
             f"- Pinning: {meta['pinning']}",
             f"- Versions: {meta['versions']}",
             f"- Rounds: {meta['rounds']}; per measurement: {meta['warmup']} s warm-up, "
             f"{meta['duration']} s window; fresh server processes each time; medians "
             "over rounds", "",
             "Latency is publish-to-delivery (the load generator publishes through a "
             "server and times each delivery on its own clock). Server CPU is the trio-gws "
             "processes' user+system time over the window per delivery; Redis's is shown "
             "apart. A publish goes client -> server -> hub (-> Redis -> every server's "
             "subscription) -> each member's queue. With 1,000 members on one topic, each "
             "publish is a burst of 1,000 sends from one process, so its latencies spread "
             "over the time the burst takes (tens of ms); Redis's own share shows in the "
             "topics of 10. At the most each setup delivers, at most 20,000 deliveries "
             "are outstanding: latency there is queueing.", ""]
    rows = medians(records)
    for rate_kind, title in (("fixed", "At 10,000 deliveries/s"), ("max", "At the most each "
                                                                   "setup delivers")):
        lines += [f"### {title}", "",
                  "| setup | shape | payload | deliveries/s | p50 ms | p99 ms | server CPU "
                  "µs/delivery | Redis CPU µs/delivery | server CPU | client CPU | notes |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            if (r["rate"] == 0) != (rate_kind == "max"):
                continue
            note = "; ".join(r["notes"][:2])
            lines.append(
                f"| {r['setup']} | {SHAPES[r['shape']]} | {r['size']} B | "
                f"{fmt(r.get('deliveries_per_s'), 0)} | {fmt(r.get('p50_ms'), 2)} | "
                f"{fmt(r.get('p99_ms'), 2)} | {fmt(r.get('server_us_per_delivery'))} | "
                f"{fmt(r.get('redis_us_per_delivery')) if 'redis' in r['setup'] else '-'} | "
                f"{fmt((r.get('server_cpu_frac') or 0) * 100, 0)}% | "
                f"{fmt((r.get('client_cpu_frac') or 0) * 100, 0)}% | {note} |")
        lines.append("")
    lines += ["### Targets (medians of same-round differences and ratios)", ""]
    for shape in SHAPES:
        for size in sorted({r["size"] for r in records}):
            added, ratio = ratio_medians(records, shape, size)
            if added is None or ratio is None:
                continue
            lines.append(f"- {SHAPES[shape]}, {size} B: Redis adds {added:.2f} ms to p50 "
                         f"({'PASS' if added < 1 else 'MISS'}: < 1 ms); server CPU per "
                         f"delivery through Redis {ratio:.2f}x in-process "
                         f"({'PASS' if ratio <= 1.3 else 'MISS'}: <= 1.3x)")
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def versions() -> str:
    import trio

    import trio_gws
    out = [f"python {platform.python_version()}", f"trio-gws {trio_gws.__version__}",
           f"trio {trio.__version__}"]
    try:
        import hiredis
        out.append(f"hiredis {hiredis.__version__}")
    except ImportError:
        pass
    redis = shutil.which("redis-server")
    if redis:
        out.append(subprocess.run([redis, "--version"], capture_output=True, text=True
                                  ).stdout.split()[2])
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 B only, 2 s windows, 1 round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds (default 3); each round measures everything once, and "
                        "the report shows medians over rounds")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--redis-core", choices=["client", "server"], default="server",
                        help="the core redis-server is pinned to (default: the servers'; "
                        "on the load generator's core it competes with the load, and "
                        "waking it across cores costs the servers more)")
    parser.add_argument("--only", metavar="SETUP/SHAPE/SIZE/RATE", default="",
                        help="only measurements whose 'setup/shape/size/rate' contains this "
                        "(e.g. 'many/128/10000'); for quick comparisons")
    parser.add_argument("--write-results", action="store_true",
                        help="write benchmarks/RESULTS-fanout.md and .json")
    args = parser.parse_args()
    sizes = [128] if args.quick else [128, 4096]
    if args.quick:
        args.duration = 2.0
        args.rounds = 1
    pinning = Pinning(enabled=not args.no_pin, nice=args.nice)
    redis_core = pinning.server_core if args.redis_core == "server" else pinning.client_core
    started = time.time()
    load_start = "/".join(f"{x:.2f}" for x in os.getloadavg())
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gws-fanout-") as tmp:
        folder = Path(tmp)
        redis = start_redis(folder, pinning, redis_core)
        try:
            for round_ in range(args.rounds):
                for setup in SETUPS:
                    for shape in SHAPES:
                        for size in sizes:
                            for rate in (10_000.0, 0.0):
                                if args.only not in f"{setup}/{shape}/{size}/{int(rate)}":
                                    continue
                                log(f"round {round_ + 1}: {setup} / {SHAPES[shape]} / "
                                    f"{size} B / {'10k/s' if rate else 'max'} ...")
                                record = measure(setup, shape, size, rate, args, pinning,
                                                 redis, folder)
                                record["round"] = round_
                                log("  " + json.dumps({k: record.get(k) for k in (
                                    "deliveries_per_s", "p50_ms", "p99_ms",
                                    "server_us_per_delivery", "error")}))
                                records.append(record)
        finally:
            redis[0].terminate()
            redis[0].wait(10)
    meta = {
        "command": " ".join([".venv/bin/python", "benchmarks/fanout.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "wall_min": (time.time() - started) / 60, "machine": machine(),
        "load_start": load_start,
        "load_end": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "pinning": (f"servers on core {pinning.server_core}, load generator on core "
                    f"{pinning.client_core}, redis-server on core {redis_core}"
                    if pinning.active else "none") + (f", nice {args.nice}" if args.nice else ""),
        "versions": versions(), "warmup": args.warmup, "duration": args.duration,
        "rounds": args.rounds,
    }
    text = report(records, meta)
    print(text)
    if args.write_results:
        (HERE / "RESULTS-fanout.md").write_text(text)
        (HERE / "RESULTS-fanout.json").write_text(json.dumps(
            {"meta": meta, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
