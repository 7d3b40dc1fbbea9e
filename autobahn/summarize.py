"""Judge an Autobahn testsuite report (wstest's ``index.json``).

wstest always exits 0, even when the testee was down, so the report is the only
evidence. Each case in ``index.json`` carries two verdicts:

``behavior``       what the testee did with the frames: OK, NON-STRICT, FAILED,
                   INFORMATIONAL, UNIMPLEMENTED (and the legacy NO_CLOSE).
``behaviorClose``  how the connection ended: OK, INFORMATIONAL, WRONG CODE,
                   FAILED BY CLIENT, UNCLEAN, FAILED.

A case gets ONE effective verdict, the worse of the two after mapping the close
verdict onto the behaviour scale the way wstest's HTML report colours it:

    WRONG CODE        -> NON-STRICT   (a close code outside the allowed set)
    FAILED BY CLIENT  -> NON-STRICT   (server suite: the testee server did not drop
                                       TCP after the close handshake, wstest had to)
    UNCLEAN, FAILED   -> FAILED
    OK, INFORMATIONAL -> no effect

Severity order: OK < INFORMATIONAL < UNIMPLEMENTED < NON-STRICT < FAILED. Anything
unknown counts as FAILED. The per-agent counts are exclusive buckets that add up to
the number of cases.

A report fails when any case is FAILED or NON-STRICT (or UNIMPLEMENTED with
``fail_unimplemented``), when index.json is missing or empty, when an expected agent
is absent, or when an agent has zero cases (or fewer than ``expect_cases``).

Usage: python3 summarize.py REPORT_DIR --suite server [--expect-agent NAME]...
       [--expect-cases N] [--fail-unimplemented]
Exit status: 0 pass, 1 fail, 2 no usable report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

OK = "OK"
INFORMATIONAL = "INFORMATIONAL"
UNIMPLEMENTED = "UNIMPLEMENTED"
NON_STRICT = "NON-STRICT"
FAILED = "FAILED"

#: Buckets, least to most severe; also the column order of the summary line.
SEVERITY = (OK, INFORMATIONAL, UNIMPLEMENTED, NON_STRICT, FAILED)
COLUMNS = (OK, NON_STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED)

_BEHAVIOR = {
    "OK": OK,
    "INFORMATIONAL": INFORMATIONAL,
    "UNIMPLEMENTED": UNIMPLEMENTED,
    "NON-STRICT": NON_STRICT,
    "FAILED": FAILED,
    "NO_CLOSE": FAILED,
}
_BEHAVIOR_CLOSE = {
    "OK": OK,
    "INFORMATIONAL": OK,
    "WRONG CODE": NON_STRICT,
    "FAILED BY CLIENT": NON_STRICT,
    "UNCLEAN": FAILED,
    "FAILED": FAILED,
}


def _worse(a: str, b: str) -> str:
    return a if SEVERITY.index(a) >= SEVERITY.index(b) else b


def case_verdict(entry: Mapping[str, Any]) -> str:
    """Effective verdict of one ``index.json`` case entry."""
    behavior = _BEHAVIOR.get(str(entry.get("behavior")), FAILED)
    close = _BEHAVIOR_CLOSE.get(str(entry.get("behaviorClose")), FAILED)
    return _worse(behavior, close)


def case_sort_key(case_id: str) -> tuple[int, ...]:
    """'9.10.2' sorts after '9.2.1' (numeric, not lexical)."""
    try:
        return tuple(int(part) for part in case_id.split("."))
    except ValueError:
        return (1 << 30,)


@dataclass
class Problem:
    agent: str
    case_id: str
    verdict: str
    behavior: str
    behavior_close: str
    details: list[str] = field(default_factory=list)

    def format(self) -> str:
        head = (
            f"  {self.verdict:<10} {self.agent} case {self.case_id}"
            f"  (behavior={self.behavior}, behaviorClose={self.behavior_close})"
        )
        return "\n".join([head] + [f"      {d}" for d in self.details])


@dataclass
class AgentSummary:
    agent: str
    counts: dict[str, int]
    total: int

    def line(self, suite: str) -> str:
        cols = ", ".join(f"{self.counts[c]} {c}" for c in COLUMNS)
        return f"autobahn {suite:<7} {self.agent}: {self.total} cases, {cols}"


@dataclass
class Summary:
    suite: str
    agents: list[AgentSummary]
    problems: list[Problem]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.problems

    def lines(self) -> list[str]:
        out = [a.line(self.suite) for a in self.agents]
        if self.problems:
            out.append(f"autobahn {self.suite}: {len(self.problems)} case(s) not passing:")
            out.extend(p.format() for p in self.problems)
        out.extend(f"autobahn {self.suite}: ERROR: {e}" for e in self.errors)
        out.append(f"autobahn {self.suite}: {'PASS' if self.ok else 'FAIL'}")
        return out


def _short(value: Any, limit: int = 240) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _case_details(report_dir: str | None, entry: Mapping[str, Any]) -> list[str]:
    """Expectation vs result, from the per-case JSON file next to index.json."""
    details: list[str] = []
    case: Mapping[str, Any] = {}
    name = entry.get("reportfile")
    if report_dir and name:
        try:
            with open(os.path.join(report_dir, str(name)), encoding="utf-8") as f:
                case = json.load(f)
        except (OSError, ValueError):
            case = {}
    if case.get("description"):
        details.append("description: " + _short(case["description"]))
    if case.get("expectation"):
        details.append("expectation: " + _short(case["expectation"]))
    if case.get("result"):
        details.append("result:      " + _short(case["result"]))
    if case.get("resultClose"):
        details.append("close:       " + _short(case["resultClose"]))
    if case.get("expected"):
        details.append("expected:    " + _short(json.dumps(case["expected"]), 200))
    if "received" in case:
        details.append("received:    " + _short(json.dumps(case["received"]), 200))
    codes = []
    if "remoteCloseCode" in entry or "remoteCloseCode" in case:
        codes.append(f"testee sent close code {entry.get('remoteCloseCode', case.get('remoteCloseCode'))}")
    if case.get("wasNotCleanReason"):
        codes.append("not clean: " + _short(case["wasNotCleanReason"], 120))
    if codes:
        details.append("; ".join(codes))
    if name:
        details.append(f"report: {name.rsplit('.', 1)[0]}.html")
    return details


def summarize(
    index: Mapping[str, Mapping[str, Mapping[str, Any]]] | None,
    *,
    suite: str,
    report_dir: str | None = None,
    expect_agents: Iterable[str] = (),
    expect_cases: int | None = None,
    fail_unimplemented: bool = False,
) -> Summary:
    """Judge a parsed index.json: ``{agent: {case_id: {behavior, behaviorClose, ...}}}``."""
    errors: list[str] = []
    agents: list[AgentSummary] = []
    problems: list[Problem] = []
    failing = {FAILED, NON_STRICT} | ({UNIMPLEMENTED} if fail_unimplemented else set())

    if not index:
        errors.append(
            "empty report (no agent ran any case: was the testee down, or did it "
            "never call updateReports?)"
        )
        index = {}
    for name in expect_agents:
        if name not in index:
            errors.append(f"agent {name!r} missing from the report")

    for agent in sorted(index):
        cases = index[agent] or {}
        counts = dict.fromkeys(COLUMNS, 0)
        for case_id in sorted(cases, key=case_sort_key):
            entry = cases[case_id]
            verdict = case_verdict(entry)
            counts[verdict] += 1
            if verdict in failing:
                problems.append(
                    Problem(
                        agent=agent,
                        case_id=case_id,
                        verdict=verdict,
                        behavior=str(entry.get("behavior")),
                        behavior_close=str(entry.get("behaviorClose")),
                        details=_case_details(report_dir, entry),
                    )
                )
        agents.append(AgentSummary(agent=agent, counts=counts, total=len(cases)))
        if not cases:
            errors.append(f"agent {agent!r} has zero cases")
        elif expect_cases is not None and len(cases) < expect_cases:
            errors.append(
                f"agent {agent!r} ran {len(cases)} of {expect_cases} cases "
                "(the testee died or hung part way?)"
            )
    return Summary(suite, agents, problems, errors)


def load_index(report_dir: str) -> dict[str, Any] | None:
    """index.json of a report directory, or None when missing or unreadable."""
    try:
        with open(os.path.join(report_dir, "index.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report_dir", help="directory holding wstest's index.json")
    parser.add_argument("--suite", default="server", help="label: server or client")
    parser.add_argument("--expect-agent", action="append", default=[], metavar="NAME")
    parser.add_argument("--expect-cases", type=int, default=None, metavar="N")
    parser.add_argument("--fail-unimplemented", action="store_true")
    args = parser.parse_args(argv)

    index = load_index(args.report_dir)
    if index is None:
        print(
            f"autobahn {args.suite}: ERROR: no readable index.json in {args.report_dir}",
            flush=True,
        )
        print(f"autobahn {args.suite}: FAIL", flush=True)
        return 2
    summary = summarize(
        index,
        suite=args.suite,
        report_dir=args.report_dir,
        expect_agents=args.expect_agent,
        expect_cases=args.expect_cases,
        fail_unimplemented=args.fail_unimplemented,
    )
    print("\n".join(summary.lines()), flush=True)
    if not index:
        return 2
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
