"""Autobahn testee client: a trio-gws echo client for wstest's fuzzingserver.

Uses the public API only (import trio_gws as gws), the way gws's own client testee
works: ask /getCaseCount, then for each case N connect to
/runCase?case=N&agent=AGENT and echo every message until the connection ends, then
/updateReports?agent=AGENT so wstest writes the report.

    python autobahn/testee_client.py --url ws://127.0.0.1:9004
    python autobahn/testee_client.py --url ws://127.0.0.1:9004 --compress

Exit status: 0 when every case ran (whatever wstest thinks of them: that is judged
from its report), 1 when a case raised something other than a WebSocketError or
OSError (a bug in the library or the testee) or the report could not be requested.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from urllib.parse import quote

import trio

import trio_gws as gws

from _testee import (EchoHandler, add_compression_options, add_verbose_option, make_config,
                     setup_logging)

log = logging.getLogger("testee_client")


class CollectHandler(gws.EventHandler):
    """Keeps the text of the last message (for /getCaseCount)."""

    def __init__(self) -> None:
        self.text: str | None = None

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        self.text = message.text


async def session(url: str, handler: gws.EventHandler, config: gws.Config, timeout: float) -> bool:
    """Connect, run the reader loop until the connection ends; False on timeout."""
    conn = None
    with trio.move_on_after(timeout) as scope:
        conn = await gws.connect(url, handler, config=config)
        await conn.listen()
    if scope.cancelled_caught:
        if conn is not None:
            with trio.move_on_after(5):
                await conn.aclose()
        return False
    return True


async def main(args: argparse.Namespace) -> int:
    config = make_config(args)
    base = args.url.rstrip("/")
    agent = quote(args.agent)

    counter = CollectHandler()
    await session(f"{base}/getCaseCount", counter, config, 30)
    if counter.text is None:
        print("testee_client: no case count from wstest", flush=True)
        return 1
    count = int(counter.text)
    print(f"testee_client: {count} cases, agent {args.agent!r}", flush=True)

    bugs = 0
    for case in range(1, count + 1):
        started = time.monotonic()
        url = f"{base}/runCase?case={case}&agent={agent}"
        try:
            finished = await session(url, EchoHandler(log), config, args.case_timeout)
            outcome = "done" if finished else f"TIMED OUT after {args.case_timeout:g}s"
        except (gws.WebSocketError, OSError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        except Exception:
            log.exception("case %d raised", case)
            outcome = "raised an unexpected exception (see traceback)"
            bugs += 1
        print(f"testee_client: case {case}/{count} {outcome} "
              f"({time.monotonic() - started:.2f}s)", flush=True)

    try:
        await session(f"{base}/updateReports?agent={agent}", gws.EventHandler(), config, 600)
    except (gws.WebSocketError, OSError) as exc:
        print(f"testee_client: updateReports failed: {exc}", flush=True)
        return 1
    print(f"testee_client: finished, {bugs} case(s) raised unexpected exceptions", flush=True)
    return 1 if bugs else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trio-gws echo client for Autobahn's fuzzingserver")
    p.add_argument("--url", default="ws://127.0.0.1:9004", help="where wstest listens")
    p.add_argument("--agent", default="trio-gws-client", help="agent name in the report")
    add_compression_options(p, compress_help="offer permessage-deflate")
    p.add_argument("--case-timeout", type=float, default=300.0,
                   help="give up on one case after this many seconds")
    add_verbose_option(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    setup_logging(arguments)
    sys.exit(trio.run(main, arguments))
