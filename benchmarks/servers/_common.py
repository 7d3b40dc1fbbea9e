"""Shared plumbing for the echo servers: arguments, fd limit, readiness line; and
a process's CPU time from /proc, which the load generators and the other
benchmarks read from the servers they measure.

Every server in this folder is started by ``benchmarks/run.py`` as
``python servers/NAME.py --port P [--compress]``, binds 127.0.0.1 only, and prints
``READY <port>`` on stdout once it accepts connections. It runs until it is signalled.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--compress", action="store_true",
                        help="enable permessage-deflate (refused if unsupported)")
    parser.add_argument("--profile", metavar="FILE",
                        help="run under cProfile and dump stats to FILE on SIGINT")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("benchmark servers bind the loopback interface only")
    return args


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    # after "pid (comm) ": state=0, ..., utime=11, stime=12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> None:
    """Lift the soft open-file limit to the hard one (2,000 idle connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def unsupported(feature: str) -> None:
    print(f"UNSUPPORTED {feature}", flush=True)
    sys.exit(3)


def ready(port: int) -> None:
    print(f"READY {port} {os.getpid()}", flush=True)
