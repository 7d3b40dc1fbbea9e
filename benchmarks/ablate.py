"""Ablation of trio-gws's speed and memory tricks: does each one pay for itself?

    .venv/bin/python benchmarks/ablate.py run                 # build, measure, report
    .venv/bin/python benchmarks/ablate.py build               # only build the trees
    .venv/bin/python benchmarks/ablate.py report A.json ...   # re-render saved runs

For every trick, ``ablation/<name>.patch`` is the simplest code without it. ``build``
extracts ``trio_gws/`` of ``--base`` (default HEAD) into ``.variants/ablation/<name>/``
(an ignored folder) once per trick and applies its patch there; ``control`` gets no
patch: it measures how far trio-gws differs from an identical copy of itself (the
noise floor). ``run`` then runs ``run.py`` once per group of tricks, trio-gws and every
variant of the group (plus ``control``) in the same run, and prints the verdicts:

* group ``echo`` (scenarios a, b, c, e): the hot-path tricks;
* group ``large`` (scenario d): the large-frame tricks, and the transport ones;
* group ``memory`` (scenario e): the memory tricks.

A trick is kept when, in some scenario, every round's same-round ratio trio-gws ÷
variant is on the same side of 1 and the median is further from 1 than the control's
farthest round (for (e), KiB per idle connection, the trick must save memory).
The working tree's ``trio_gws/`` must be ``--base``'s (it is the reference).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run as bench
from harness import HERE, OURS, VARIANT_PREFIX

REPO = HERE.parent
PATCHES = HERE / "ablation"
TREES = HERE / ".variants" / "ablation"


@dataclass(frozen=True)
class Trick:
    name: str      # the variant, and ablation/<name>.patch
    group: str     # the run it is measured in (GROUPS)
    removed: str   # what the variant does instead
    patch: str | None = None  # ablation/<patch>.patch; default: the name; "" for none


TRICKS: list[Trick] = [
    Trick("control", "*", "nothing removed: an identical copy (the noise floor)", ""),
    Trick("nocork", "echo",
          "no corking, hence no hand-stepped handlers: every write sends at once; "
          "_callback is a plain await"),
    Trick("nostep_flushtask", "echo",
          "corking kept, handlers awaited plainly; the first frame corked in a read "
          "schedules a flush task (so a handler that blocks cannot hold corked frames)"),
    Trick("noosw", "echo", "flush_before_read is the normal flush (no os.write on the fd)"),
    Trick("norawrecv", "echo", "the reader receives with stream.receive_some, not sock.recv"),
    Trick("norawsend", "echo", "Transport.send_all is stream.send_all, not sock.send"),
    Trick("nolockfast", "echo", "_send_now takes the free lock with `async with`"),
    Trick("noshort", "echo", "no short path for whole unfragmented frames in the reader"),
    Trick("nosplit", "large", "a large frame is header + payload joined (one bytes)"),
    Trick("nolargeread", "large", "the rest of a large frame is read read_buffer_size at a time"),
    Trick("norawrecv-d", "large", "as norawrecv, measured on (d)", "norawrecv"),
    Trick("norawsend-d", "large", "as norawsend, measured on (d)", "norawsend"),
    Trick("m_lock", "memory", "trio.StrictFIFOLock (parking lot made up front), not WriteLock"),
    Trick("m_queue", "memory", "a deque per connection, not the shared empty one"),
    Trick("m_recvwrap", "memory",
          "the read loop receives through Transport.receive_some (one coroutine frame more "
          "while idle)"),
    Trick("m_slots", "memory",
          "no __slots__ on Conn, FrameWriter, FrameReader, Transport, Lifecycle, WriteLock"),
]
GROUPS = {"echo": "abce", "large": "d", "memory": "e"}


def patch_of(trick: Trick) -> Path | None:
    """The patch that removes a trick; None for the control."""
    name = trick.name if trick.patch is None else trick.patch
    return PATCHES / f"{name}.patch" if name else None


def git(*args: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=120,
                          **kw)


def build(base: str, tricks: list[Trick]) -> dict[str, Path]:
    """One tree per trick under TREES: trio_gws/ of ``base`` with the trick's patch."""
    archive = git("archive", "--format=tar", base, "trio_gws")
    if archive.returncode != 0:
        sys.exit(f"git archive {base}: {archive.stderr.decode()[-300:]}")
    trees: dict[str, Path] = {}
    for trick in tricks:
        tree = TREES / trick.name
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True,
                       timeout=60)
        patch = patch_of(trick)
        if patch is not None:
            done = git("apply", f"--directory={tree.relative_to(REPO)}", str(patch), text=True)
            if done.returncode != 0:
                sys.exit(f"{patch.name} does not apply to {base}'s trio_gws/ (the code "
                         f"moved on: rebase the patch):\n{done.stderr[-800:]}")
        trees[trick.name] = tree
    return trees


def check_reference(base: str) -> None:
    """trio-gws in run.py is the working tree: it must be the code the trees came from."""
    same = git("diff", "--quiet", base, "--", "trio_gws")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "trio_gws", text=True)
    if same.returncode != 0 or untracked.stdout.strip():
        sys.exit(f"the working tree's trio_gws/ is not {base}'s: commit or stash the "
                 "changes, or pass --base")


# --------------------------------------------------------------------------- verdicts

def classify(ratios: list[float], noise: float, memory: bool) -> str:
    """'gain' (the trick pays), 'cost' (it hurts) or 'noise' for one scenario."""
    if not ratios:
        return "n/a"
    mid = bench.median(ratios)
    assert mid is not None
    if memory:  # KiB trio-gws / KiB variant < 1: the trick saves memory
        ratios, mid = [1 / r for r in ratios], 1 / mid
    if min(ratios) > 1 and mid - 1 > noise:
        return "gain"
    if max(ratios) < 1 and 1 - mid > noise:
        return "cost"
    return "noise"


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}–{max(values):.3f}" if values else "–"


def verdicts(paths: list[Path]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Markdown table rows and {trick: {scenario: class}} for saved runs."""
    rows: list[str] = []
    found: dict[str, dict[str, str]] = {}
    for path in paths:
        saved = json.loads(path.read_text())
        summary = bench.summarise(saved["records"])
        for skey, servers in summary.items():
            control = servers.get(VARIANT_PREFIX + "control", {})
            noise = max((abs(r - 1) for r in control.get("ratios", [])), default=0.0)
            for server, row in servers.items():
                if not server.startswith(VARIANT_PREFIX):
                    continue
                name = server[len(VARIANT_PREFIX):]
                ratios = row.get("ratios", [])
                verdict = ("(noise floor)" if name == "control"
                           else classify(ratios, noise, memory=skey == "e"))
                found.setdefault(name, {})[skey] = verdict
                ours = servers.get(OURS, {})
                flags = "; ".join(f"{who}: {text}" for who, text in
                                  ((OURS, bench.notes(ours)), ("variant", bench.notes(row)))
                                  if text)
                rows.append(
                    f"| {name} | ({skey}) | {bench.ratio_cell(server, row)} | "
                    f"{', '.join(f'{r:.3f}' for r in ratios)} | "
                    f"{bench.ratio_cell(server, row, 'cpu_ratio')} | "
                    f"{', '.join(f'{r:.3f}' for r in row.get('cpu_ratios', []))} | "
                    f"±{noise:.3f} | {verdict} | {flags} |")
    return rows, found


def report(paths: list[Path]) -> str:
    rows, found = verdicts(paths)
    out = [
        "| trick removed (variant) | scenario | trio-gws ÷ variant | rounds | "
        "CPU variant ÷ trio-gws | rounds | control's farthest round | verdict | notes |",
        "|---|---|---:|---|---:|---|---:|---|---|", *rows, "",
        "| variant | what it does instead | scenarios | verdict |", "|---|---|---|---|"]
    for trick in TRICKS:
        if trick.name not in found or trick.name == "control":
            continue
        classes = found[trick.name]
        verdict = ("keep" if "gain" in classes.values()
                   else "remove (costs)" if "cost" in classes.values() else "remove")
        scen = ", ".join(f"({k}) {v}" for k, v in sorted(classes.items()))
        out.append(f"| {trick.name} | {trick.removed} | {scen} | {verdict} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--base", default="HEAD", help="the revision the trees are built "
                         "from (default HEAD; the working tree's trio_gws/ must match it)")
        cmd.add_argument("--tricks", help="comma-separated subset (control always included)")
        cmd.add_argument("--groups", default=",".join(GROUPS),
                         help=f"comma-separated subset of {', '.join(GROUPS)}")
    runner = sub.choices["run"]
    runner.add_argument("--rounds", type=int, default=3)
    runner.add_argument("--retry-contended", type=int, default=2,
                        help="as run.py's (default 2)")
    runner.add_argument("--nice", type=int, default=0, help="as run.py's")
    runner.add_argument("--out", type=Path, default=HERE / ".variants" / "runs",
                        help="folder for each group's JSON and report")
    rep = sub.add_parser("report")
    rep.add_argument("json", type=Path, nargs="+", help="run.py JSON files of ablation runs")
    args = parser.parse_args()

    if args.command == "report":
        print(report(args.json))
        return
    groups = [g for g in args.groups.split(",") if g]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}")
    wanted = set(args.tricks.split(",")) if args.tricks else None
    tricks = [t for t in TRICKS if t.name == "control" or (
        (wanted is None or t.name in wanted) and t.group in groups)]
    check_reference(args.base)
    trees = build(args.base, tricks)
    print(f"built {len(trees)} trees under {TREES.relative_to(REPO)}", file=sys.stderr)
    if args.command == "build":
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for group in groups:
        members = [t for t in tricks if t.group in (group, "*")]
        if len(members) < 2:
            continue
        out = args.out / f"ablation-{group}.json"
        cmd = [sys.executable, str(HERE / "run.py"), "--servers", OURS,
               "--scenarios", GROUPS[group], "--rounds", str(args.rounds),
               "--retry-contended", str(args.retry_contended), "--json", str(out),
               "--nice", str(args.nice),
               *(f"--variant={t.name}={trees[t.name]}" for t in members)]
        print(f"group {group}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        with open(args.out / f"ablation-{group}.md", "w") as md:
            subprocess.run(cmd, check=True, stdout=md)
        results.append(out)
    print(report(results))


if __name__ == "__main__":
    main()
