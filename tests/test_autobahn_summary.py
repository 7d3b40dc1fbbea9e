"""The Autobahn report judge: wstest always exits 0, so this is what fails CI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parent.parent / "autobahn" / "summarize.py"
_spec = importlib.util.spec_from_file_location("autobahn_summarize", _PATH)
assert _spec is not None and _spec.loader is not None
summarize_module = importlib.util.module_from_spec(_spec)
sys.modules["autobahn_summarize"] = summarize_module
_spec.loader.exec_module(summarize_module)


def case(behavior: str = "OK", close: str = "OK") -> dict[str, str]:
    return {"behavior": behavior, "behaviorClose": close}


@pytest.mark.parametrize(
    ("behavior", "close", "verdict"),
    [
        ("OK", "OK", "OK"),
        ("INFORMATIONAL", "INFORMATIONAL", "INFORMATIONAL"),
        ("OK", "WRONG CODE", "NON-STRICT"),
        ("OK", "FAILED BY CLIENT", "NON-STRICT"),
        ("OK", "UNCLEAN", "FAILED"),
        ("NON-STRICT", "OK", "NON-STRICT"),
        ("NON-STRICT", "FAILED", "FAILED"),
        ("UNIMPLEMENTED", "OK", "UNIMPLEMENTED"),
        ("NO_CLOSE", "OK", "FAILED"),
        ("SOMETHING NEW", "OK", "FAILED"),
    ],
)
def test_case_verdict_is_the_worse_of_both(behavior: str, close: str, verdict: str) -> None:
    assert summarize_module.case_verdict(case(behavior, close)) == verdict


def test_passing_report_counts_each_case_once() -> None:
    index = {"agent": {"1.1.1": case(), "7.1.6": case("INFORMATIONAL", "INFORMATIONAL"),
                       "12.1.1": case("UNIMPLEMENTED")}}
    summary = summarize_module.summarize(index, suite="server")
    assert summary.ok
    assert summary.lines()[0] == (
        "autobahn server  agent: 3 cases, 1 OK, 0 NON-STRICT, 1 INFORMATIONAL, "
        "1 UNIMPLEMENTED, 0 FAILED"
    )
    assert not summarize_module.summarize(index, suite="server", fail_unimplemented=True).ok


@pytest.mark.parametrize(
    ("index", "kwargs"),
    [
        ({}, {}),
        ({"agent": {}}, {}),
        ({"agent": {"1.1.1": case()}}, {"expect_agents": ["other"]}),
        ({"agent": {"1.1.1": case()}}, {"expect_cases": 2}),
        ({"agent": {"1.1.1": case(), "9.3.1": case("FAILED", "FAILED")}}, {}),
        ({"agent": {"6.4.1": case("NON-STRICT")}}, {}),
    ],
    ids=["empty", "agent-without-cases", "missing-agent", "too-few-cases", "failed",
         "non-strict"],
)
def test_failing_reports(index: dict[str, Any], kwargs: dict[str, Any]) -> None:
    summary = summarize_module.summarize(index, suite="client", **kwargs)
    assert not summary.ok
    assert summary.lines()[-1] == "autobahn client: FAIL"


def test_command_line_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_module.main([str(tmp_path)]) == 2  # no index.json at all
    (tmp_path / "index.json").write_text(json.dumps({"a": {"1.1.1": case()}}))
    assert summarize_module.main([str(tmp_path), "--expect-agent", "a"]) == 0
    (tmp_path / "index.json").write_text(json.dumps({"a": {"2.1": case("FAILED")}}))
    assert summarize_module.main([str(tmp_path)]) == 1
    assert "FAILED     a case 2.1" in capsys.readouterr().out
