"""The hostile tests: real server processes under misbehaving crowds.

Run them alone with ``pytest -m hostile`` (or ``pytest tests/hostile``). What each
test measured is printed at the end of the run, in a section of pytest's own
summary ("hostile: what was measured"), with or without ``-s``, so CI's log shows it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# tests/ holds the shared helpers (realproc, helpers); pytest puts only this folder
# on sys.path when the hostile tests run alone.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``figures("p99 ...")`` records a line for the summary section."""
    name = request.node.name

    def record(line: str) -> None:
        FIGURES.append((name, line))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("hostile: what was measured")
    for name, line in FIGURES:
        terminalreporter.write_line(f"{name}: {line}")
