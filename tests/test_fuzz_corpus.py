"""Replay every committed fuzz input through its target's checks (no atheris needed).

The seeds in fuzz/corpus/<target>/ and the regressions in fuzz/regressions/<target>/
are real traffic and the inputs that once broke an invariant; each target's
``check`` asserts the invariants described in fuzz/README.md. Replaying them here
makes a regression fail the ordinary test run, deterministically and in a second,
not only when a fuzzer happens to come back to it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
sys.path.insert(0, FUZZ)

import _harness  # noqa: E402


def _inputs(target: str) -> list[str]:
    paths = []
    for kind in ("corpus", "regressions"):
        folder = os.path.join(FUZZ, kind, target)
        if os.path.isdir(folder):
            paths += [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    return paths


def _check(target: str) -> Callable[[bytes], None]:
    return importlib.import_module(f"fuzz_{target}").check  # type: ignore[no-any-return]


@pytest.mark.parametrize("target", _harness.TARGETS)
def test_corpus_replays_clean(target: str) -> None:
    paths = _inputs(target)
    assert len(paths) >= 5, f"the {target} corpus is missing"
    check = _check(target)
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            check(data)
        except BaseException as exc:
            raise AssertionError(f"{target}: {os.path.relpath(path, FUZZ)} fails: {exc!r}") \
                from exc


def test_every_target_is_replayed() -> None:
    """A target without seeds would silently replay nothing."""
    on_disk = {name[len("fuzz_"):-len(".py")] for name in os.listdir(FUZZ)
               if name.startswith("fuzz_") and name.endswith(".py")}
    assert on_disk == set(_harness.TARGETS)
    for target in _harness.TARGETS:
        assert os.listdir(os.path.join(FUZZ, "corpus", target))
