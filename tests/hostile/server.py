"""The server the hostile tests attack: a real trio-gws process on 127.0.0.1.

It echoes every message, counts every event, and answers plain HTTP on the same port
through ``Config.http_handler`` (the feature's own use: a control channel that needs
no second port):

* ``GET /stats``: JSON with what only the process itself can tell: its Trio task
  count, its event counts (opens, closes, errors, connections that ended twice or
  ended without opening), close codes and error types, log records by level, the
  live connections, the broadcast's progress. Its open descriptors and RSS the test
  reads from /proc/PID itself.
* ``GET /broadcast?rounds=R&size=S&interval=I``: starts a broadcast to every open
  connection, R rounds of S-byte messages every I seconds. Even rounds are
  personalised (``write_nowait`` of a payload made for each connection, as a feed
  stamped per recipient would be: per-connection memory, what the byte bound is
  for); odd rounds go through one ``Broadcaster`` (one shared frame). Each payload
  starts with the round number, so a reader can tell a lost message.

Anything that escapes ``serve`` (an exception reaching its nursery) ends the process
with a traceback, which the tests see as a dead process.

    python tests/hostile/server.py --port P [--tls-port Q --cert F --key F]
        [--handshake-timeout S] [--close-timeout S] [--write-buffer-limit N]
        [--write-queue-size N] [--nofile N] [--sndbuf N]
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import logging
import os
import resource
import ssl
import struct
import sys
import tracemalloc
from functools import partial
from typing import Any

import trio

import trio_gws as gws

try:
    LIBC: Any = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: no malloc_trim
    LIBC = None

#: The head of every broadcast payload: round number, recipient (0: shared frame).
HEAD = struct.Struct("!QQ")


class Counts(logging.Handler):
    """Counts log records by level (and EMFILE reports of the accept loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.levels: collections.Counter[str] = collections.Counter()
        self.emfile = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        if record.name == "trio.serve_listeners" and "EMFILE" in record.getMessage():
            self.emfile += 1


class Hostile(gws.EventHandler):
    """Echoes; counts opens and endings, and endings that should not happen."""

    def __init__(self) -> None:
        self.opens = 0
        self.closes = 0
        self.errors = 0
        self.doubles = 0  # a connection told twice how it ended
        self.unopened = 0  # an ending without on_open
        self.close_codes: collections.Counter[int] = collections.Counter()
        self.error_types: collections.Counter[str] = collections.Counter()
        self.error_codes: collections.Counter[str] = collections.Counter()
        self.next_id = 1

    async def on_open(self, conn: gws.Conn) -> None:
        self.opens += 1
        conn.session["id"] = self.next_id
        self.next_id += 1
        conn.session["ended"] = False

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)

    def _ending(self, conn: gws.Conn) -> None:
        if "ended" not in conn.session:
            self.unopened += 1
        elif conn.session["ended"]:
            self.doubles += 1
        conn.session["ended"] = True

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self._ending(conn)
        self.closes += 1
        self.close_codes[code] += 1

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self._ending(conn)
        self.errors += 1
        self.error_types[type(error).__name__] += 1
        code = getattr(error, "close_code", None)
        self.error_codes[str(code)] += 1


class Broadcast:
    """The broadcast started by ``GET /broadcast``; its progress goes into /stats."""

    def __init__(self) -> None:
        self.running = False
        self.rounds_done = 0
        self.queued = 0  # messages accepted by a connection's queue
        self.refused = 0  # WriteQueueFullError (the connection then fails with 1008)
        self.closed = 0  # the connection was closing already

    async def run(self, server: gws.Server, rounds: int, size: int, interval: float) -> None:
        self.running = True
        body = bytes(range(256)) * (size // 256 + 1)
        body = body[:max(0, size - HEAD.size)]
        try:
            for seq in range(rounds):
                conns = list(server.connections)
                if seq % 2:
                    shared = gws.Broadcaster(gws.Opcode.BINARY, HEAD.pack(seq, 0) + body)
                    for conn in conns:
                        self._queue(lambda c: shared.broadcast(c), conn)
                else:
                    for conn in conns:
                        # A payload made for this connection: its own memory.
                        self._queue(lambda c: c.write_nowait(
                            gws.Opcode.BINARY, HEAD.pack(seq, c.session.get("id", 0)) + body),
                            conn)
                self.rounds_done = seq + 1
                await trio.sleep(interval)
        finally:
            self.running = False

    def _queue(self, send: Any, conn: gws.Conn) -> None:
        try:
            send(conn)
        except gws.WriteQueueFullError:
            self.refused += 1
        except gws.ConnectionClosed:
            self.closed += 1
        else:
            self.queued += 1


def task_count() -> int:
    """Every task of this Trio run."""
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
    def __init__(self, args: argparse.Namespace, counts: Counts) -> None:
        self.args = args
        self.counts = counts
        self.handler = Hostile()
        self.broadcast = Broadcast()
        self.server: gws.Server | None = None
        self.nursery: trio.Nursery | None = None

    def http(self, request: gws.Request) -> gws.Response | None:
        if request.path == "/stats":
            return gws.Response(200, [("Content-Type", "application/json")],
                                json.dumps(self.stats()))
        if request.path == "/gc":
            # A full collection, then the C allocator hands its free pages back: the
            # RSS that remains is memory the process holds, not garbage waiting for
            # a collection (trio's SSL streams are reference cycles, and the OpenSSL
            # memory under them goes with them) or pages malloc keeps for later.
            collected = gc.collect()
            if LIBC is not None:
                LIBC.malloc_trim(0)
            return gws.Response(200, body=f"{collected}\n")
        if request.path == "/tracemalloc" and tracemalloc.is_tracing():
            top = tracemalloc.take_snapshot().statistics("lineno")[:25]
            return gws.Response(200, body="".join(f"{stat}\n" for stat in top))
        if request.path == "/broadcast":
            query = dict(part.partition("=")[::2] for part in request.query.split("&") if part)
            assert self.nursery is not None and self.server is not None
            if self.broadcast.running:
                return gws.Response(409, body="a broadcast is running\n")
            self.nursery.start_soon(self.broadcast.run, self.server,
                                    int(query.get("rounds", "100")),
                                    int(query.get("size", "4096")),
                                    float(query.get("interval", "0.02")))
            return gws.Response(202, body="started\n")
        return None

    def stats(self) -> dict[str, Any]:
        h = self.handler
        b = self.broadcast
        return {
            "pid": os.getpid(),
            "tasks": task_count(),
            "live": len(self.server.connections) if self.server is not None else 0,
            "opens": h.opens, "closes": h.closes, "errors": h.errors,
            "doubles": h.doubles, "unopened": h.unopened,
            "close_codes": {str(k): v for k, v in h.close_codes.items()},
            "error_types": dict(h.error_types),
            "error_codes": dict(h.error_codes),
            "log": dict(self.counts.levels), "emfile_logs": self.counts.emfile,
            "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
            "broadcast": {"running": b.running, "rounds_done": b.rounds_done,
                          "queued": b.queued, "refused": b.refused, "closed": b.closed},
        }

    async def main(self) -> None:
        args = self.args
        config = gws.Config(
            handshake_timeout=args.handshake_timeout,
            close_timeout=args.close_timeout,
            write_buffer_limit=args.write_buffer_limit,
            write_queue_size=args.write_queue_size,
            http_handler=self.http,
        )
        listeners: list[trio.abc.Listener[Any]] = []
        for listener in await gws.open_tcp_listeners(args.port, host="127.0.0.1"):
            if args.sndbuf:
                # Inherited by every accepted socket: the kernel holds little for a
                # peer that does not read, so its queue fills quickly.
                listener.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF,
                                           args.sndbuf)
            listeners.append(listener)
        if args.tls_port:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.cert, args.key)
            for listener in await gws.open_tcp_listeners(args.tls_port, host="127.0.0.1"):
                listeners.append(trio.SSLListener(listener, context,
                                                  https_compatible=False))
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.server = await nursery.start(partial(
                gws.serve_listeners, self.handler, listeners, config=config))
            nursery.start_soon(orphan_watch)
            print(f"listening on 127.0.0.1:{args.port} (pid {os.getpid()})", flush=True)


async def orphan_watch() -> None:
    """Exit when the test that started us is gone (killed before it could stop us):
    a server left behind would hold its port and memory for nothing."""
    parent = os.getppid()
    while os.getppid() == parent:
        await trio.sleep(1)
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    parser.add_argument("--close-timeout", type=float, default=5.0)
    parser.add_argument("--write-buffer-limit", type=int, default=4 << 20)
    parser.add_argument("--write-queue-size", type=int, default=1024)
    parser.add_argument("--nofile", type=int, default=0, help="RLIMIT_NOFILE (soft)")
    parser.add_argument("--sndbuf", type=int, default=0, help="SO_SNDBUF of accepted sockets")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations (/stats says how much is held)")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    elif soft < hard:
        # Thousands of connections: the usual soft limit of 1,024 would be the test.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = Counts()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(counts)
    try:
        trio.run(App(args, counts).main)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
