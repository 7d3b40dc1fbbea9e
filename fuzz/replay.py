"""Replay inputs through a target's check without atheris: ``replay.py TARGET PATH...``.

PATHs are files or folders. Prints each failing input with its error and exits 1 if
any failed. Handy to reproduce a crash under a debugger, or to measure line coverage:
``coverage run --include='trio_gws/*' fuzz/replay.py reader fuzz/corpus/reader``.
"""

from __future__ import annotations

import os
import sys
import traceback

from _harness import load


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        raise SystemExit(f"usage: {argv[0]} TARGET PATH...")
    check = load(argv[1]).check
    paths: list[str] = []
    for path in argv[2:]:
        if os.path.isdir(path):
            paths += sorted(os.path.join(path, name) for name in os.listdir(path))
        else:
            paths.append(path)
    failed = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            check(data)
        except Exception:
            failed += 1
            print(f"FAILED {path}", file=sys.stderr)
            traceback.print_exc()
    print(f"{argv[1]}: {len(paths)} inputs, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
