"""The server of the soak (benchmarks/soak.py): one trio-gws process, mixed traffic.

* ``/echo``: echoes every message (permessage-deflate when the client offers it).
* ``/listen``: gets the broadcasts: every 100 ms one 4 KiB message through one
  ``Broadcaster`` frame, and every 10th tick one personalised message per listener
  (``write_nowait``: memory per connection). A listener that does not read fills its
  queue (``write_buffer_limit`` 256 KiB) and is failed with 1008.
* plain HTTP through ``Config.http_handler``: ``/stats`` (JSON: tasks, live
  connections, event counts, log records, Python memory traced when tracing, and
  where the memory is: glibc's heap in use and free (``mallinfo2``) and the number of
  blocks Python's own allocator holds),
  ``/snapshot`` (keeps a tracemalloc snapshot) and ``/tracemalloc-diff`` (the top
  allocation sites grown since that snapshot).

    python benchmarks/servers/soak_server.py --port P [--tracemalloc]
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import json
import logging
import os
import struct
import sys
import tracemalloc
from functools import partial
from typing import Any

import trio

import trio_gws as gws

TICK = 0.1
SIZE = 4096
HEAD = struct.Struct("!QQ")


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later)."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None  # not glibc, or older than 2.33
    function.restype = MallInfo2
    return function


MALLINFO2 = _mallinfo2()


def allocator() -> dict[str, int] | None:
    """Where the memory is: glibc's heap (bytes in use, free inside the heap, mmapped
    chunks) and the blocks Python's allocator holds. RSS growing while "in use" and
    "blocks" stay flat is fragmentation, not a leak."""
    if MALLINFO2 is None:
        return None
    info = MALLINFO2()
    return {"heap_used": info.uordblks, "heap_free": info.fordblks,
            "mmapped": info.hblkhd, "blocks": sys.getallocatedblocks()}


class Counts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.levels: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1


class Soak(gws.EventHandler):
    def __init__(self) -> None:
        self.listeners: set[gws.Conn] = set()
        self.opens = 0
        self.endings: collections.Counter[str] = collections.Counter()
        self.messages = 0
        self.broadcasts = 0
        self.refused = 0

    async def on_open(self, conn: gws.Conn) -> None:
        self.opens += 1
        if conn.request.path == "/listen":
            self.listeners.add(conn)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        self.messages += 1
        await conn.write_message(message.opcode, message.data)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self.listeners.discard(conn)
        self.endings[f"close {code}"] += 1

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self.listeners.discard(conn)
        self.endings[type(error).__name__] += 1

    async def broadcast(self) -> None:
        body = bytes(range(256)) * (SIZE // 256)
        body = body[:SIZE - HEAD.size]
        seq = 0
        while True:
            await trio.sleep(TICK)
            conns = list(self.listeners)
            shared = gws.Broadcaster(gws.Opcode.BINARY, HEAD.pack(seq, 0) + body)
            for conn in conns:
                try:
                    shared.broadcast(conn)
                    if seq % 10 == 0:
                        conn.write_nowait(gws.Opcode.BINARY,
                                          HEAD.pack(seq, id(conn)) + body)
                except gws.WriteQueueFullError:
                    self.refused += 1
                except gws.ConnectionClosed:
                    pass
            self.broadcasts += 1
            seq += 1


def task_count() -> int:
    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


class App:
    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.handler = Soak()
        self.server: gws.Server | None = None
        self.snapshot: tracemalloc.Snapshot | None = None

    def http(self, request: gws.Request) -> gws.Response | None:
        if request.path == "/stats":
            return gws.Response(200, [("Content-Type", "application/json")],
                                json.dumps(self.stats()))
        if request.path == "/snapshot" and tracemalloc.is_tracing():
            self.snapshot = tracemalloc.take_snapshot()
            return gws.Response(200, body="kept\n")
        if request.path == "/tracemalloc-diff" and self.snapshot is not None:
            now = tracemalloc.take_snapshot()
            top = now.compare_to(self.snapshot, "lineno")[:20]
            return gws.Response(200, body="".join(f"{stat}\n" for stat in top))
        return None

    def stats(self) -> dict[str, Any]:
        h = self.handler
        return {
            "pid": os.getpid(),
            "tasks": task_count(),
            "live": len(self.server.connections) if self.server is not None else 0,
            "listeners": len(h.listeners),
            "opens": h.opens,
            "endings": dict(h.endings),
            "messages": h.messages,
            "broadcasts": h.broadcasts,
            "refused": h.refused,
            "log": dict(self.counts.levels),
            "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
            "allocator": allocator(),
        }

    async def main(self, port: int) -> None:
        config = gws.Config(compress_enabled=True, write_buffer_limit=256 * 1024,
                            handshake_timeout=5, close_timeout=2, http_handler=self.http)
        async with trio.open_nursery() as nursery:
            self.server = await nursery.start(partial(
                gws.serve, self.handler, port, host="127.0.0.1", config=config))
            nursery.start_soon(self.handler.broadcast)
            print(f"READY {port}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    counts = Counts()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(counts)
    try:
        trio.run(App(counts).main, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
