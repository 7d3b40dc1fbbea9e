"""Write a wstest spec for one run, starting from a checked-in template.

The templates (fuzzingclient.json for the server suite, fuzzingserver.json for the
client suite) hold the defaults; ``run`` overrides ports, agents, cases and the
report directory per mode:

    python3 make_spec.py fuzzingclient.json OUT.json --outdir reports/server \
        --server trio-gws=ws://127.0.0.1:9001 --cases '1.*,2.*'
    python3 make_spec.py fuzzingserver.json OUT.json --outdir reports/client \
        --url ws://127.0.0.1:9004 --exclude ''

Lists are comma separated; an empty string means an empty list.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def make_spec(
    template: dict[str, Any],
    *,
    outdir: str | None = None,
    servers: list[tuple[str, str]] | None = None,
    url: str | None = None,
    cases: list[str] | None = None,
    exclude: list[str] | None = None,
    exclude_agent_cases: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    spec = dict(template)
    if outdir is not None:
        spec["outdir"] = outdir
    if servers is not None:
        spec["servers"] = [{"agent": agent, "url": u} for agent, u in servers]
    if url is not None:
        spec["url"] = url
    if cases is not None:
        spec["cases"] = cases
    if exclude is not None:
        spec["exclude-cases"] = exclude
    if exclude_agent_cases:
        spec["exclude-agent-cases"] = exclude_agent_cases
    return spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("template")
    p.add_argument("out")
    p.add_argument("--outdir")
    p.add_argument("--server", action="append", metavar="AGENT=URL",
                   help="fuzzingclient: a testee server (repeatable; replaces the template's)")
    p.add_argument("--url", help="fuzzingserver: where wstest listens")
    p.add_argument("--cases", type=split_list, help="case patterns, e.g. '1.*,2.*'")
    p.add_argument("--exclude", type=split_list, help="exclude patterns ('' for none)")
    p.add_argument("--exclude-agent", action="append", metavar="AGENT=PATTERNS",
                   help="cases one agent skips, e.g. 'trio-gws-stream=10.*' (repeatable)")
    args = p.parse_args(argv)

    with open(args.template, encoding="utf-8") as f:
        template = json.load(f)
    servers = None
    if args.server:
        servers = []
        for item in args.server:
            agent, sep, u = item.partition("=")
            if not sep or not agent or not u:
                p.error(f"--server wants AGENT=URL, got {item!r}")
            servers.append((agent, u))
    per_agent: dict[str, list[str]] = {}
    for item in args.exclude_agent or ():
        agent, sep, patterns = item.partition("=")
        if not sep or not agent:
            p.error(f"--exclude-agent wants AGENT=PATTERNS, got {item!r}")
        per_agent[agent] = split_list(patterns)
    spec = make_spec(template, outdir=args.outdir, servers=servers, url=args.url,
                     cases=args.cases, exclude=args.exclude, exclude_agent_cases=per_agent)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=3)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
