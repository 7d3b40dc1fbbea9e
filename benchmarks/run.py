"""Echo benchmark of trio-gws against other Python WebSocket servers: one command.

    .venv/bin/python benchmarks/run.py            # 3 rounds, every server and scenario
    .venv/bin/python benchmarks/run.py --quick    # 1 short round (smoke test)
    .venv/bin/python benchmarks/run.py --servers trio-gws --variant before=HEAD~1

Each measurement starts a fresh server (benchmarks/servers/NAME.py) pinned to core 0 and
a fresh load generator (benchmarks/loadgen.py: picows on uvloop) pinned to core 1, all
on 127.0.0.1. Rounds are interleaved: round -> scenario -> every server (the server
order rotates each round). The report gives medians over rounds and, for every peer,
the median over rounds of the same-round ratio trio-gws / peer. ``--variant NAME=SPEC``
adds the server "trio-gws@NAME" running another trio_gws/ (a folder or a git revision),
compared the same way. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
from harness import (OURS, SCENARIOS, SERVERS, HERE, VARIANT_PREFIX, Pinning, Timing,
                     measure)

# The load generator was the bottleneck when it used (or waited for) >= 90% of its core
# (CPU time + run-queue wait, from /proc) while the server used < 80% of its own core.
CLIENT_BOUND_CLIENT_CPU = 0.90
CLIENT_BOUND_SERVER_CPU = 0.80
# Another process took the server's core from it for >= 10% of the window.
CONTENDED_SERVER_WAIT = 0.10

PACKAGES = ("trio-gws", "trio", "websockets", "trio-websocket", "wsproto", "aiohttp",
            "picows", "uvloop", "py-spy")

# (scenario, peer, minimum trio-gws/peer ratio[, which ratio]); "memory" is an absolute
# KiB bound. The ratio is of the scenario's metric unless "cpu" (server CPU per message,
# X ÷ trio-gws) is named.
TARGETS: list[tuple[str, str, float] | tuple[str, str, float, str]] = [
    *[(s, "trio-websocket", 3.0) for s in "abcd"],
    *[(s, "websockets-trio", 2.0) for s in "abcdg"],
    ("a", "websockets-asyncio", 0.9),
    ("b", "websockets-asyncio", 1.5),
    ("c", "websockets-asyncio", 1.5),
    ("d", "websockets-asyncio", 1.0),
    ("f", "websockets-asyncio", 1.2),
    ("g", "websockets-asyncio", 1.0),
    # issue 17: tcpkali's moderate loads (CPU <= 0.8x websockets-asyncio's; <= aiohttp's)
    *[(s, p, m) for s in "jk" for p, m in (("websockets-asyncio", 1.25), ("aiohttp", 1.0))],
    # tcpkali saturating: bytes echoed per server-CPU second
    *[(s, p, m) for s in "hi" for p, m in (("websockets-asyncio", 2.0), ("aiohttp", 1.3),
                                           ("picows", 0.9))],
    # every echo scenario of loadgen.py, per server-CPU second
    *[(s, "aiohttp", 1.0, "cpu") for s in "abcd"],
    *[(s, "raw-trio", 0.85, "cpu") for s in "abcdhijk"],
    ("d", "picows", 0.8, "cpu"),
    ("g", "websockets-trio", 2.0, "cpu"),
    ("g", "websockets-asyncio", 1.3, "cpu"),
]
MEMORY_TARGET_KIB = 9.0


# --------------------------------------------------------------------------- facts

def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    binary = harness.tcpkali_load.find_tcpkali()
    out["tcpkali"] = "not found"
    if binary:
        try:
            done = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                  timeout=10)
            out["tcpkali"] = (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out["tcpkali"] = f"{binary} (version unknown)"
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"kernel": platform.release(), "arch": platform.machine()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core",
                               "Core(s) per socket", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# --------------------------------------------------------------------------- stats

def ok_result(record: dict[str, Any]) -> dict[str, Any] | None:
    """The load generator's result if the measurement is valid."""
    if "error" in record or "result" not in record:
        return None
    result = record["result"]
    scenario = SCENARIOS[record["scenario"]]
    if scenario.compress and not result.get("compression_negotiated"):
        return None
    if result.get(scenario.metric) in (None, 0):
        return None
    return result


def client_limited(res: dict[str, Any]) -> str | None:
    """'bound': the load generator's own work was the limit; 'starved': it was kept off
    its core by other processes; None: the server was the limit."""
    if res.get("server_cpu_frac", 1) >= CLIENT_BOUND_SERVER_CPU:
        return None
    cpu = res.get("client_cpu_frac", 0)
    if cpu >= CLIENT_BOUND_CLIENT_CPU:
        return "bound"
    if cpu + res.get("client_runqueue_wait_frac", 0) >= CLIENT_BOUND_CLIENT_CPU:
        return "starved"
    return None


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def same_round_pairs(good: list[tuple[int, dict[str, Any] | None]],
                     ours: dict[int, dict[str, Any] | None],
                     key: str) -> list[tuple[float, float]]:
    """(trio-gws, peer) values of ``key`` in every round where both have a valid one."""
    return [(mine[key], res[key]) for rnd, res in good
            if res is not None and (mine := ours.get(rnd)) is not None
            and res.get(key) and mine.get(key)]


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """summary[scenario][server] = medians, ratio vs trio-gws, flags."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        by.setdefault((rec["scenario"], rec["server"]), []).append(rec)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for skey, scenario in SCENARIOS.items():
        rows: dict[str, dict[str, Any]] = {}
        ours = {r["round"]: ok_result(r) for r in by.get((skey, OURS), [])}
        # The peers in their usual order, then the variants in the order they were run.
        names = [*SERVERS, *dict.fromkeys(r["server"] for r in records
                                          if r["server"] not in SERVERS)]
        for name in names:
            recs = by.get((skey, name), [])
            if not recs:
                continue
            good = [(r["round"], ok_result(r)) for r in recs]
            results = [res for _, res in good if res is not None]
            row: dict[str, Any] = {"rounds": len(recs), "valid_rounds": len(results)}
            if not results:
                reasons = sorted({r.get("error") or r.get("result", {}).get("note")
                                  or "no valid result" for r in recs})
                row["unavailable"] = "; ".join(str(x) for x in reasons)[:300]
                rows[name] = row
                continue
            keys = set().union(*(res.keys() for res in results))
            for k in keys:
                vals = [res.get(k) for res in results]
                if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in vals if v is not None):
                    row[k] = median([v for v in vals if v is not None])
            # ok_result() keeps only results whose metric is there and not 0
            ratios = [m / p for m, p in same_round_pairs(good, ours, scenario.metric)]
            row["ratio"] = median(ratios)
            row["ratios"] = ratios
            if scenario.cpu_metric:
                cpu_ratios = [p / m for m, p in same_round_pairs(good, ours, scenario.cpu_metric)]
                row["cpu_ratio"] = median(cpu_ratios)
                row["cpu_ratios"] = cpu_ratios
            row["errors"] = sum(res.get("errors", 0) for res in results)
            row["error_samples"] = sorted({e for res in results
                                           for e in res.get("error_samples", [])})[:3]
            row["client_bound_rounds"] = sum(1 for res in results
                                             if client_limited(res) == "bound")
            row["client_starved_rounds"] = sum(1 for res in results
                                               if client_limited(res) == "starved")
            row["contended_rounds"] = sum(
                1 for res in results
                if res.get("server_runqueue_wait_frac", 0) >= CONTENDED_SERVER_WAIT)
            row["retried"] = sum(len(r.get("discarded", ())) for r in recs)
            rows[name] = row
        summary[skey] = rows
    return summary


def evaluate_targets(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for target in TARGETS:
        skey, peer, minimum = target[:3]
        key = "cpu_ratio" if target[3:] == ("cpu",) else "ratio"
        row = summary.get(skey, {}).get(peer)
        ours = summary.get(skey, {}).get(OURS)
        what = " (CPU per message)" if key == "cpu_ratio" else ""
        label = f"({skey}) {SCENARIOS[skey].title}: trio-gws/{peer}{what} >= {minimum:g}x"
        if row is None or ours is None:
            out.append({"target": label, "status": "NOT RUN"})
        elif "unavailable" in ours or "unavailable" in row or row.get(key) is None:
            why = ours.get("unavailable") or row.get("unavailable") or "no paired rounds"
            out.append({"target": label, "status": "N/A", "why": why})
        else:
            ratio = row[key]
            out.append({"target": label, "status": "PASS" if ratio >= minimum else "MISS",
                        "value": ratio, "ratios": row[key + "s"],
                        "cpu_ratio": row.get("cpu_ratio") if key == "ratio" else None})
    ours = summary.get("e", {}).get(OURS)
    label = f"(e) server memory per idle connection <= {MEMORY_TARGET_KIB:g} KiB"
    if ours is None:
        out.append({"target": label, "status": "NOT RUN"})
    elif "unavailable" in ours:
        out.append({"target": label, "status": "N/A", "why": ours["unavailable"]})
    else:
        kib = ours["kib_per_conn"]
        out.append({"target": label, "status": "PASS" if kib <= MEMORY_TARGET_KIB else "MISS",
                    "value": kib})
    return out


# --------------------------------------------------------------------------- report

def fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if digits == 0 and abs(value) >= 100:
            return f"{value:,.0f}{suffix}"
        return f"{value:,.{max(digits, 1) if abs(value) < 100 else digits}f}{suffix}"
    return f"{value}{suffix}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def ratio_cell(name: str, row: dict[str, Any], key: str = "ratio") -> str:
    """``row[key]`` (a ratio vs trio-gws) for a table cell."""
    if name == OURS:
        return "1.00 (ref)"
    r = row.get(key)
    return "–" if r is None else f"{r:.2f}"


def notes(row: dict[str, Any]) -> str:
    parts = []
    if row.get("client_bound_rounds"):
        parts.append(f"CLIENT-BOUND in {row['client_bound_rounds']}/{row['valid_rounds']} "
                     "rounds")
    if row.get("client_starved_rounds"):
        parts.append(f"client starved in {row['client_starved_rounds']}/{row['valid_rounds']} "
                     "rounds")
    if row.get("contended_rounds"):
        parts.append(f"server core contended in {row['contended_rounds']}/"
                     f"{row['valid_rounds']} rounds")
    if row.get("retried"):
        parts.append(f"{row['retried']} disturbed tries measured again")
    if row.get("errors"):
        parts.append(f"{int(row['errors'])} errors ({'; '.join(row['error_samples'])})")
    if row.get("valid_rounds", 0) < row.get("rounds", 0):
        parts.append(f"only {row['valid_rounds']}/{row['rounds']} rounds valid")
    return "; ".join(parts)


def render(summary: dict[str, dict[str, dict[str, Any]]], targets: list[dict[str, Any]],
           meta: dict[str, Any]) -> str:
    lines: list[str] = []
    w = lines.append
    w(f"Rounds: {meta['rounds']}; per measurement: {meta['timing']['warmup']} s warm-up, "
      f"{meta['timing']['duration']} s timed window. Medians over rounds; "
      "\"trio-gws ÷ X\" is the median over rounds of the same-round ratio "
      "(> 1: trio-gws is faster; for memory, < 1: trio-gws uses less); "
      "\"CPU X ÷ trio-gws\" is the same for server CPU time per message (> 1: trio-gws "
      "needs less CPU per message; it is much less affected than msgs/s by other load on "
      "the machine). server/client CPU: share of one core used in the timed window. "
      "MiB/s counts echoed payload, one direction. Latency is send-to-echo time per "
      "message (queueing included when 16 are in flight).")
    w("")
    w("### Echo throughput and latency (scenarios a, b, c, d, g)")
    w("")
    w("| scenario | server | msgs/s | trio-gws ÷ X | MiB/s | p50 ms | p99 ms | "
      "server CPU µs/msg | CPU X ÷ trio-gws | server CPU | client CPU | notes |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for skey in "abcdg":
        if skey not in summary:
            continue
        for name, row in summary[skey].items():
            title = f"({skey}) {SCENARIOS[skey].title}"
            if "unavailable" in row:
                w(f"| {title} | {name} | n/a | – | – | – | – | – | – | – | – | "
                  f"{row['unavailable']} |")
                continue
            w(f"| {title} | {name} | {fmt(row.get('msgs_per_s'))} | {ratio_cell(name, row)} | "
              f"{fmt(row.get('mib_per_s'), 1)} | {fmt(row.get('p50_ms'), 2)} | "
              f"{fmt(row.get('p99_ms'), 2)} | {fmt(row.get('server_cpu_us_per_msg'), 1)} | "
              f"{ratio_cell(name, row, 'cpu_ratio')} | {pct(row.get('server_cpu_frac'))} | {pct(row.get('client_cpu_frac'))} | "
              f"{notes(row)} |")
    if summary.get("e"):
        w("")
        w(f"### ({'e'}) {SCENARIOS['e'].title}")
        w("")
        w("| server | KiB per idle conn | trio-gws ÷ X | server RSS before (MiB) | "
          "server CPU ms/handshake | notes |")
        w("|---|---:|---:|---:|---:|---|")
        for name, row in summary["e"].items():
            if "unavailable" in row:
                w(f"| {name} | n/a | – | – | – | {row['unavailable']} |")
                continue
            w(f"| {name} | {fmt(row.get('kib_per_conn'), 1)} | {ratio_cell(name, row)} | "
              f"{fmt(row.get('rss_before_kib', 0) / 1024, 1)} | "
              f"{fmt(row.get('server_cpu_ms_per_handshake'), 2)} | {notes(row)} |")
    if summary.get("f"):
        w("")
        w(f"### (f) {SCENARIOS['f'].title}")
        w("")
        w("| server | handshakes/s | trio-gws ÷ X | p50 ms (connect+handshake) | p99 ms | "
          "server CPU µs/handshake | CPU X ÷ trio-gws | server CPU | client CPU | notes |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for name, row in summary["f"].items():
            if "unavailable" in row:
                w(f"| {name} | n/a | – | – | – | – | – | – | – | {row['unavailable']} |")
                continue
            w(f"| {name} | {fmt(row.get('handshakes_per_s'))} | {ratio_cell(name, row)} | "
              f"{fmt(row.get('p50_ms'), 2)} | {fmt(row.get('p99_ms'), 2)} | "
              f"{fmt(row.get('server_cpu_us_per_handshake'), 1)} | {ratio_cell(name, row, 'cpu_ratio')} | "
              f"{pct(row.get('server_cpu_frac'))} | {pct(row.get('client_cpu_frac'))} | "
              f"{notes(row)} |")
    tk = [k for k in "hijk" if summary.get(k)]
    if tk:
        w("")
        w("### The second load generator: tcpkali (scenarios h, i, j, k)")
        w("")
        w("tcpkali (C) drives each server for one window; the server is idle when it "
          "starts. Echoes = bytes tcpkali received ÷ the echoed frame's size; "
          "\"per CPU-s\": per second of server CPU (the efficiency the ratios compare: "
          "\"trio-gws ÷ X\" > 1: trio-gws needs less CPU per echo). At the moderate "
          "loads (j, k) every server keeps up, so the CPU columns are the result.")
        w("")
        w("| scenario | server | echoes/s | echoes per CPU-s | trio-gws ÷ X | "
          "MiB echoed per CPU-s | server CPU µs/msg | server CPU (cores) | "
          "tcpkali CPU | notes |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for skey in tk:
            for name, row in summary[skey].items():
                title = f"({skey}) {SCENARIOS[skey].title}"
                if "unavailable" in row:
                    w(f"| {title} | {name} | n/a | – | – | – | – | – | – | "
                      f"{row['unavailable']} |")
                    continue
                cores = row.get("server_cpu_frac")
                w(f"| {title} | {name} | {fmt(row.get('msgs_per_s'))} | "
                  f"{fmt(row.get('msgs_per_cpu_s'))} | {ratio_cell(name, row)} | "
                  f"{fmt(row.get('echo_mib_per_cpu_s'), 1)} | "
                  f"{fmt(row.get('server_cpu_us_per_msg'), 1)} | "
                  f"{'–' if cores is None else f'{cores:.2f}'} | "
                  f"{pct(row.get('client_cpu_frac'))} | {notes(row)} |")
    lines.extend(render_variants(summary))
    w("")
    w("### Targets (trio-gws vs peer, same run)")
    w("")
    for t in targets:
        value = t.get("value")
        if value is None:
            extra = f" ({t['why']})" if "why" in t else ""
            w(f"- {t['status']}: {t['target']}{extra}")
        elif "memory" in t["target"]:
            w(f"- {t['status']}: {t['target']}: {value:.2f} KiB")
        else:
            per_round = ", ".join(f"{r:.2f}" for r in t["ratios"])
            cpu = (f"; CPU per message {t['cpu_ratio']:.2f}x" if t.get("cpu_ratio")
                   else "")
            w(f"- {t['status']}: {t['target']}: {value:.2f}x (rounds: {per_round}{cpu})")
    w("")
    bound = [(s, n, row["client_bound_rounds"]) for s, rows in summary.items()
             for n, row in rows.items() if row.get("client_bound_rounds")]
    starved = [(s, n, row["client_starved_rounds"]) for s, rows in summary.items()
               for n, row in rows.items() if row.get("client_starved_rounds")]
    if bound:
        w("Client bottleneck: the load generator was CLIENT-BOUND (its CPU >= "
          f"{CLIENT_BOUND_CLIENT_CPU:.0%} of its core while the server used < "
          f"{CLIENT_BOUND_SERVER_CPU:.0%} of its own) for: "
          + ", ".join(f"({s}) {n} in {k} round(s)" for s, n, k in bound)
          + ". Those numbers are lower bounds for the server.")
    else:
        w(f"Client bottleneck: never CLIENT-BOUND (in no measurement did the load generator "
          f"use >= {CLIENT_BOUND_CLIENT_CPU:.0%} of its core while the server used < "
          f"{CLIENT_BOUND_SERVER_CPU:.0%} of its own).")
    if starved:
        w("")
        w("Client starved (its CPU + run-queue wait >= "
          f"{CLIENT_BOUND_CLIENT_CPU:.0%}, server < {CLIENT_BOUND_SERVER_CPU:.0%}: other "
          "processes kept the load generator off its core, so it could not drive the server "
          "harder): " + ", ".join(f"({s}) {n} in {k} round(s)" for s, n, k in starved)
          + ". Those throughputs are lower bounds too.")
    contended = [(s, n, row["contended_rounds"]) for s, rows in summary.items()
                 for n, row in rows.items() if row.get("contended_rounds")]
    if contended:
        w("")
        w(f"Other load on the server's core (run-queue wait >= {CONTENDED_SERVER_WAIT:.0%} of "
          "the window): " + ", ".join(f"({s}) {n} {k}x" for s, n, k in contended)
          + ". Throughput there is understated; CPU per message is not.")
    return "\n".join(lines)


#: The other benchmarks' reports, each written by its own script: (file, what it holds,
#: whether its first bold line is a verdict worth repeating here).
OTHER_RESULTS = [
    ("RESULTS-soak.md", "the soak: ten minutes of mixed traffic, RSS and fds (soak.py)", True),
    ("RESULTS-stream.md", "a 256 MiB message streamed both ways: memory and speed "
                          "(stream_memory.py)", True),
    ("RESULTS-fanout.md", "hubs in one process and through Redis (fanout.py)", False),
    ("ABLATION.md", "each speed and memory trick measured on and off (ablate.py)", False),
]


def other_results() -> str:
    """Links to the other reports, with the soak's verdict line when there is one."""
    lines = ["### Other benchmarks", ""]
    for name, what, has_verdict in OTHER_RESULTS:
        path = HERE / name
        if not path.exists():
            continue
        verdict = next((line.replace("**", "").strip() for line in path.read_text().splitlines()
                        if line.startswith("**")), "") if has_verdict else ""
        lines.append(f"- [{name}]({name}): {what}" + (f". {verdict}" if verdict else ""))
    return "\n".join(lines)


def code_line(code: dict[str, Any] | None) -> str:
    if not code or "sha256" not in code:
        return "- trio-gws code: the installed package"
    state = (" + uncommitted changes in trio_gws/" if code.get("uncommitted_changes")
             else "")
    return (f"- trio-gws code: git {code.get('git_head', '?')}{state} (trio_gws/*.py sha256 "
            f"{code['sha256']}), copied at the start so edits during the run don't leak in")


def describe_code(info: dict[str, Any]) -> str:
    """One line on a variant's code (see harness.snapshot_variant)."""
    where = (f"git {info['git_commit']}" if "git_commit" in info
             else f"folder {info.get('source', info.get('spec', '?'))}")
    return (f"{where} (trio_gws/*.py sha256 {info.get('sha256', '?')}; compiled speedups: "
            f"{info.get('speedups', '?')})")


def render_variants(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The variants' same-round ratios with every round's value (their spread)."""
    names = sorted({n for rows in summary.values() for n in rows
                    if n.startswith(VARIANT_PREFIX)})
    if not names:
        return []
    lines = ["", "### Variants of trio-gws (same run)", "",
             "trio-gws ÷ variant: median of the same-round ratios of the scenario's metric "
             "(msgs/s, KiB per idle connection for (e), handshakes/s for (f)); > 1: "
             "trio-gws (the working tree) is faster than the variant, or for (e) uses "
             "more memory. CPU variant ÷ trio-gws: the same for server CPU per message "
             "(> 1: the variant needs more CPU).", "",
             "| variant | scenario | trio-gws ÷ variant | rounds | CPU variant ÷ trio-gws | "
             "rounds | notes |", "|---|---|---:|---|---:|---|---|"]
    for name in names:
        for skey, rows in summary.items():
            row = rows.get(name)
            if row is None:
                continue
            if "unavailable" in row:
                lines.append(f"| {name} | ({skey}) | n/a | | | | {row['unavailable']} |")
                continue
            ours = rows.get(OURS, {})
            both = "; ".join(f"{who}: {text}" for who, text in
                             ((OURS, notes(ours)), ("variant", notes(row))) if text)
            lines.append(
                f"| {name} | ({skey}) | {ratio_cell(name, row)} | "
                + ", ".join(f"{r:.3f}" for r in row.get("ratios", []))
                + f" | {ratio_cell(name, row, 'cpu_ratio')} | "
                + ", ".join(f"{r:.3f}" for r in row.get("cpu_ratios", []))
                + f" | {both} |")
    return lines


def fmt_load(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def render_meta(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    v = meta["versions"]
    lines = [
        f"- Command: `{meta['command']}`",
        f"- Date (UTC): {meta['started']}; wall time {meta['wall_s'] / 60:.1f} min",
        f"- Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs "
        f"({m.get('Core(s) per socket', '?')} cores/socket, "
        f"{m.get('Thread(s) per core', '?')} thread/core"
        + (f", {m['Hypervisor vendor']} VM" if m.get("Hypervisor vendor") else "")
        + f"), Linux {m['kernel']} {m['arch']}",
        f"- Load average (1/5/15 min) at start {fmt_load(meta['loadavg_start'])}, at end "
        f"{fmt_load(meta['loadavg_end'])} (other processes share this machine)",
        (f"- Pinning: servers on core {meta['pinning']['server_core']}, load generator on "
         f"core {meta['pinning']['client_core']}" if meta["pinning"]["enabled"] else
         "- Pinning: off")
        + (f"; both under nice {meta['pinning']['nice']}"
           + (" (and so are their autogroups)" if meta.get("autogroup") else "")
           if meta["pinning"].get("nice") else ""),
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        code_line(meta.get("trio_gws_code")),
        *(f"- {VARIANT_PREFIX}{name} code: {describe_code(info)}"
          for name, info in meta.get("variants", {}).items()),
        ("- Load generator: rawgen.py (hand-written frames, no WebSocket library) for "
         "a-d and f, loadgen.py for e and g" if meta.get("generator") == "rawgen" else
         "- Load generator: picows client on "
         + ("uvloop" if v.get("uvloop", "not installed") != "not installed" else "asyncio"))
        + " (tcpkali for h-k); servers on their library's stock event loop (asyncio or Trio)",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def parse_variants(parser: argparse.ArgumentParser, specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=SPEC`` arguments as (name, spec), names checked and unique."""
    out: list[tuple[str, str]] = []
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not spec or not VARIANT_NAME.fullmatch(name):
            parser.error(f"--variant {item!r}: expected NAME=SPEC, NAME of letters, digits, "
                         "'_', '.', '+', '-'")
        if name in (n for n, _ in out):
            parser.error(f"--variant {name} given twice")
        out.append((name, spec))
    return out


def disturbed(rec: dict[str, Any]) -> str | None:
    """Why other processes made this measurement unfair, or None."""
    res = rec.get("result") or {}
    if res.get("server_runqueue_wait_frac", 0) >= CONTENDED_SERVER_WAIT:
        return f"server core contended ({res['server_runqueue_wait_frac']:.0%} run-queue wait)"
    if client_limited(res) == "starved":
        return "client starved"
    return None


def measure_retrying(server: harness.Server, scenario: harness.Scenario, timing: Timing,
                     pinning: Pinning, logdir: Path, retries: int) -> dict[str, Any]:
    """``measure``, again (up to ``retries`` times, after a pause) while other processes
    disturbed it; the last try counts, the earlier ones are kept under "discarded"."""
    discarded: list[dict[str, Any]] = []
    while True:
        rec = measure(server, scenario, timing, pinning, logdir)
        why = disturbed(rec)
        if why is None or len(discarded) >= retries:
            break
        print(f"    ({scenario.key}) {server.name}: {why}; measuring again",
              file=sys.stderr, flush=True)
        discarded.append({"why": why, "result": rec.get("result")})
        time.sleep(5)
    if discarded:
        rec["discarded"] = discarded
    return rec


def check_deps() -> None:
    missing = []
    for mod in ("picows", "websockets", "trio_websocket", "aiohttp", "trio_gws"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if "picows" in missing or "trio_gws" in missing:
        sys.exit("missing packages: " + ", ".join(missing)
                 + "\ninstall them with:  pip install -e '.[bench]'   (from the repo root)")
    if missing:
        print("note: not installed, those servers will be reported n/a: "
              + ", ".join(missing), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 0.5 s warm-up, 1.5 s windows")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (default 1)")
    parser.add_argument("--duration", type=float, help="seconds of timed window (default 3)")
    parser.add_argument("--generator", choices=("loadgen", "rawgen"), default="loadgen",
                        help="the load generator of scenarios a-d and f: loadgen.py "
                             "(picows, default) or rawgen.py (no library: a cross-check)")
    parser.add_argument("--tcpkali-duration", type=float,
                        help="seconds of each tcpkali window (default 10, --quick 3)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset (default: all)")
    parser.add_argument("--scenarios", default="".join(SCENARIOS),
                        help="letters of the scenarios to run (default: all, abcdefghijk)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SPEC",
                        help="also run trio-gws@NAME: the same echo server importing the "
                             "trio_gws/ of SPEC, a folder (holding trio_gws/) or a git "
                             "revision; repeatable")
    parser.add_argument("--retry-contended", type=int, default=0, metavar="N",
                        help="measure again, up to N times, when other processes took the "
                             "server's core (or starved the load generator) during the "
                             "window; the discarded tries stay in the JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--nice", type=int, default=0,
                        help="run servers and load generator under `nice -n N`, each in "
                             "a session whose autogroup gets nice N too (N < 0 needs "
                             "root and takes CPU from everything else on the machine)")
    parser.add_argument("--from-json", type=Path,
                        help="do not measure: re-render the report of a saved run")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw results file (default benchmarks/results/<time>.json)")
    parser.add_argument("--write-results", action="store_true",
                        help="also write benchmarks/RESULTS.md (and RESULTS.json)")
    args = parser.parse_args()

    timing = Timing()
    rounds = args.rounds
    if args.quick:
        timing = Timing(warmup=0.5, duration=1.5, settle=0.5)
        rounds = 1
    if args.warmup is not None:
        timing.warmup = args.warmup
    if args.duration is not None:
        timing.duration = args.duration
    if args.quick:
        timing.tcpkali = 3.0
    if args.tcpkali_duration is not None:
        timing.tcpkali = args.tcpkali_duration
    if not 1 <= rounds <= 20 or not 0 < timing.duration <= 60 or not 0 < timing.tcpkali <= 60:
        parser.error("bounded runs only: 1-20 rounds, 0 < duration <= 60 s")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    if OURS not in servers:
        servers.insert(0, OURS)
    scenarios = [c for c in args.scenarios if c in SCENARIOS]
    variants = parse_variants(parser, args.variant)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        report(saved["meta"], saved["records"], args, write_json=False)
        return
    check_deps()
    harness.GENERATOR = args.generator
    pinning = Pinning(enabled=not args.no_pin, nice=args.nice)

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    exe = os.path.relpath(sys.executable)
    script = os.path.relpath(Path(__file__).resolve())
    command = " ".join(shlex.quote(a) for a in [
        exe if not exe.startswith("..") else sys.executable, script, *sys.argv[1:]])
    meta: dict[str, Any] = {
        "command": command, "python_executable": sys.executable,
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "rounds": rounds, "timing": vars(timing), "pinning": vars(pinning),
        "servers": servers, "scenarios": scenarios,
        "machine": machine(), "versions": versions(), "loadavg_start": os.getloadavg(),
        "autogroup": pinning.own_autogroup, "generator": args.generator,
    }
    records: list[dict[str, Any]] = []
    done = 0
    with tempfile.TemporaryDirectory(prefix="trio-gws-bench-") as tmp:
        logdir = Path(tmp)
        (logdir / "code").mkdir()
        meta["trio_gws_code"] = harness.snapshot_trio_gws(logdir / "code")
        meta["variants"] = {}
        for name, spec in variants:
            try:
                meta["variants"][name] = harness.snapshot_variant(
                    spec, logdir / "variants" / name)
            except (ValueError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                sys.exit(f"--variant {name}={spec}: {exc}")
            servers.append(harness.add_variant(name, logdir / "variants" / name).name)
            print(f"variant {VARIANT_PREFIX}{name}: {describe_code(meta['variants'][name])}",
                  file=sys.stderr)
        meta["servers"] = servers
        total = rounds * len(scenarios) * len(servers)
        for rnd in range(rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for skey in scenarios:
                for name in order:
                    done += 1
                    rec = measure_retrying(SERVERS[name], SCENARIOS[skey], timing, pinning,
                                           logdir, args.retry_contended)
                    rec["round"] = rnd
                    records.append(rec)
                    res = rec.get("result", {})
                    metric = SCENARIOS[skey].metric
                    shown = (f"{res[metric]:,.1f} {metric}" if res.get(metric) is not None
                             else rec.get("error", "no result")[:120])
                    cpu = (f" server {res['server_cpu_frac']:.0%} client "
                           f"{res['client_cpu_frac']:.0%}" if "server_cpu_frac" in res
                           and "client_cpu_frac" in res else "")
                    print(f"[{done}/{total}] round {rnd + 1} ({skey}) {name:<19} {shown}{cpu}",
                          file=sys.stderr, flush=True)
    meta["wall_s"] = time.monotonic() - t0
    meta["loadavg_end"] = os.getloadavg()
    report(meta, records, args, write_json=True)


def report(meta: dict[str, Any], records: list[dict[str, Any]], args: argparse.Namespace,
           write_json: bool) -> None:
    summary = summarise(records)
    targets = evaluate_targets(summary)
    report = render(summary, targets, meta)
    print("## trio-gws echo benchmark\n")
    print(render_meta(meta))
    print()
    print(report)

    payload = {"meta": meta, "records": records, "summary": summary, "targets": targets}
    if write_json:
        stamp = meta["started"].replace("-", "").replace(" ", "-").replace(":", "")
        out = args.json or HERE / "results" / f"{stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1, default=str))
        print(f"\nraw results: {out}", file=sys.stderr)
    if args.write_results:
        (HERE / "RESULTS.json").write_text(json.dumps(payload, indent=1, default=str))
        (HERE / "RESULTS.md").write_text(
            "# Benchmark results\n\n"
            "Written by `benchmarks/run.py --write-results` from one run; raw numbers in "
            "[RESULTS.json](RESULTS.json). How to read it: [README.md](README.md).\n\n"
            + render_meta(meta) + "\n\n" + report + "\n\n" + other_results() + "\n")
        print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
