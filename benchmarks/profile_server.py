"""Profile the trio-gws echo server under one benchmark scenario; print the top functions.

    .venv/bin/python benchmarks/profile_server.py --scenario a            # py-spy
    .venv/bin/python benchmarks/profile_server.py --scenario c --tool cprofile

The server (benchmarks/servers/trio_gws_server.py, default Config) runs pinned to core
0 and the usual load generator pinned to core 1 drives it for ``--warmup`` +
``--duration`` seconds; then the server is stopped and its profile is summarised:

* ``py-spy`` (default when installed): a sampling profiler in its own process, so the
  server runs at full speed. Self % = share of samples with the function on top of the
  stack (time spent in a C call such as ``socket.send`` counts for the Python function
  that made it); inclusive % = share of samples with the function anywhere on the
  stack. Only samples where the server was on a CPU count (py-spy drops idle ones).
* ``cprofile``: deterministic, in-process. The time trio spends blocked in epoll is
  taken out of the total and out of its callers' cumulative time, so tottime % and
  cumtime % are shares of busy time. It slows the server down several times and
  inflates small functions; use it for call counts.

Add ``--save FILE`` to keep the raw profile (py-spy raw stacks, or a pstats file), and
``--code SPEC`` to profile another trio_gws/ than the installed one: a folder holding
it or a git revision (as ``run.py --variant``).
"""

from __future__ import annotations

import argparse
import dataclasses
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from harness import (OURS, SCENARIOS, SERVERS, Pinning, Timing, run_loadgen,
                     run_tcpkali_scenario,
                     snapshot_variant, start_server)


def py_spy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


IMPORT_FRAMES = ("_find_and_load (", "_handle_fromlist (")


def summarise_raw_stacks(path: Path, top: int) -> str:
    """py-spy raw output: 'frame;frame;...;leaf count' per line, root first."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if not frames or any(f.startswith(IMPORT_FRAMES) for f in frames):
            continue  # start-up: importing modules is not serving
        self_counts[frames[-1]] += n
        for frame in set(frames):
            incl_counts[frame] += n
    if not total:
        return "no samples (did the server get any load?)"
    out = [f"{total} samples on CPU (start-up imports left out)", "", f"Top {top} by self time (where the CPU was):", "",
           "| self % | inclusive % | function (file:line) |", "|---:|---:|---|"]
    for frame, n in self_counts.most_common(top):
        out.append(f"| {n / total:6.1%} | {incl_counts[frame] / total:6.1%} | `{frame}` |")
    out += ["", f"Top {top} by inclusive (cumulative) time:", "",
            "| inclusive % | self % | function (file:line) |", "|---:|---:|---|"]
    for frame, n in incl_counts.most_common(top):
        out.append(f"| {n / total:6.1%} | {self_counts[frame] / total:6.1%} | `{frame}` |")
    return "\n".join(out)


def summarise_pstats(path: Path, top: int) -> str:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    # Wall-clock timer: the time trio sleeps in epoll is idle, not work. Take it out of
    # the total and out of the cumulative time of every caller above it.
    idle_keys = [k for k in raw if k[0] == "~" and "poll' of 'select.epoll" in k[2]]
    idle = sum(raw[k][2] for k in idle_keys)
    ancestors: set[Any] = set()
    todo = list(idle_keys)
    while todo:
        for caller in raw.get(todo.pop(), (0, 0, 0, 0, {}))[4]:
            if caller not in ancestors:
                ancestors.add(caller)
                todo.append(caller)
    total = (sum(v[2] for v in raw.values()) - idle) or 1e-9
    raw = {k: (v[0], v[1], v[2], v[3] - idle if k in ancestors else v[3], v[4])
           for k, v in raw.items() if k not in idle_keys}

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        if file == "~":
            return func
        short = "/".join(Path(file).parts[-2:])
        return f"{func} ({short}:{line})"

    rows = [(key, v[1], v[2], v[3]) for key, v in raw.items()]  # ncalls, tottime, cumtime
    out = [f"busy time in profile: {total:.2f} s (plus {idle:.2f} s idle in epoll, "
           "left out)", "",
           f"Top {top} by own time (tottime):", "",
           "| tottime % | cumtime % | calls | function |", "|---:|---:|---:|---|"]
    for key, calls, tt, ct in sorted(rows, key=lambda r: -r[2])[:top]:
        out.append(f"| {tt / total:6.1%} | {ct / total:6.1%} | {calls} | `{name(key)}` |")
    out += ["", f"Top {top} by cumulative time (cumtime):", "",
            "| cumtime % | tottime % | calls | function |", "|---:|---:|---:|---|"]
    for key, calls, tt, ct in sorted(rows, key=lambda r: -r[3])[:top]:
        out.append(f"| {ct / total:6.1%} | {tt / total:6.1%} | {calls} | `{name(key)}` |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="a", choices=[k for k, s in SCENARIOS.items()
                                                            if s.mode != "idle"])
    parser.add_argument("--tool", choices=("py-spy", "cprofile"),
                        default="py-spy" if py_spy_path() else "cprofile")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", type=Path, help="keep the raw profile here")
    parser.add_argument("--server", default=OURS, choices=sorted(SERVERS),
                        help="profile another server of the benchmark (default trio-gws)")
    parser.add_argument("--code", metavar="SPEC",
                        help="profile this trio_gws/ (a folder holding it, or a git "
                             "revision) instead of the installed package")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    if not 0 < args.duration <= 60:
        parser.error("0 < duration <= 60")

    scenario = SCENARIOS[args.scenario]
    server = SERVERS[args.server]
    pinning = Pinning(enabled=not args.no_pin)
    timing = Timing(warmup=args.warmup, duration=args.duration, tcpkali=args.duration)
    with tempfile.TemporaryDirectory(prefix="trio-gws-profile-") as tmp:
        tmpdir = Path(tmp)
        code = "the installed trio_gws"
        if args.code:
            try:
                info = snapshot_variant(args.code, tmpdir / "code")
            except (ValueError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                sys.exit(f"--code {args.code}: {exc}")
            server = dataclasses.replace(server, code=tmpdir / "code")
            code = f"--code {args.code} (sha256 {info['sha256']})"
        raw = args.save or tmpdir / ("profile.txt" if args.tool == "py-spy" else "profile.prof")
        if args.tool == "py-spy":
            spy = py_spy_path()
            if spy is None:
                sys.exit("py-spy is not installed: pip install -e '.[bench]' or --tool cprofile")
            # py-spy samples from core 1 (with the load generator); the server it launches
            # inherits that affinity and is moved to core 0 once it is ready.
            prefix = pinning.wrap([spy, "record", "--rate", str(args.rate), "--format", "raw",
                                   "--function", "--nonblocking", "--output", str(raw), "--"],
                                  pinning.client_core)
            sp = start_server(server, scenario.compress, pinning, tmpdir, prefix=prefix)
            if pinning.active:
                subprocess.run(["taskset", "-pc", pinning.server_core, str(sp.pid)],
                               check=True, capture_output=True)
            stop_signal = signal.SIGTERM
        else:
            sp = start_server(server, scenario.compress, pinning, tmpdir,
                              extra_args=("--profile", str(raw)))
            stop_signal = signal.SIGINT
        try:
            if scenario.mode == "tcpkali":
                result = run_tcpkali_scenario(scenario, sp, timing, pinning)
            else:
                result = run_loadgen(scenario, sp, timing, pinning)
        finally:
            sp.stop(stop_signal, timeout=30)
        print(f"## trio-gws server profile: ({scenario.key}) {scenario.title}, "
              f"tool {args.tool}, {code}\n")
        if result.get("mode") == "handshake":
            print(f"load: {result['handshakes_per_s']:,.0f} handshakes/s", end="")
        else:
            print(f"load: {result.get('msgs_per_s', 0):,.0f} msgs/s", end="")
        print(f", server CPU {result.get('server_cpu_frac', 0):.0%}, client CPU "
              f"{result.get('client_cpu_frac', 0):.0%} (under the profiler)\n")
        if not raw.exists():
            sys.exit(f"no profile written; server log:\n{sp.log.read_text()[-2000:]}")
        if args.tool == "py-spy":
            print(summarise_raw_stacks(raw, args.top))
        else:
            print(summarise_pstats(raw, args.top))
        if args.save:
            print(f"\nraw profile kept in {args.save}", file=sys.stderr)


if __name__ == "__main__":
    main()
