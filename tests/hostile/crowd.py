"""A slow-loris crowd, in a process of its own (so the live client that the test
measures shares no event loop with it).

* ``--slow N`` connections send a valid upgrade request one byte every
  ``--interval`` seconds (far too slowly to finish within the server's
  ``handshake_timeout``) while reading: each records the status of the response it
  got and when its first byte came, counted from its TCP connect.
* ``--idle M`` connections connect and then do nothing at all: no byte sent, none
  read, the socket left open (a half-open peer, as the server sees it), until the
  crowd is released. Then each reads what the server left in its buffer: the
  response, and whether the server had closed (EOF).

Connections are opened over ``--stagger`` seconds. Protocol on stdout, one line
each: ``ready`` (every connection is made), ``slow-done`` (every slow-loris has its
response), then, after stdin is closed (the release), one JSON line with the results.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
from typing import Any

import trio

REQUEST = (b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


def status_of(data: bytes) -> int:
    """The status of an HTTP response (0 when there is none)."""
    if not data.startswith(b"HTTP/1.1 "):
        return 0
    try:
        return int(data[9:12])
    except ValueError:
        return 0


async def connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    return sock


class Crowd:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # [status, seconds to the response, bytes sent, reset after the response]
        self.slow: list[list[Any]] = []
        self.idle: list[list[Any]] = []  # [status, eof]
        self.connected = 0
        self.all_connected = trio.Event()
        self.slow_left = args.slow
        self.slow_done = trio.Event()
        self.release = trio.Event()
        self.errors: list[str] = []

    def _connected(self) -> None:
        self.connected += 1
        if self.connected == self.args.slow + self.args.idle:
            self.all_connected.set()

    async def slowloris(self, delay: float) -> None:
        await trio.sleep(delay)
        record: list[Any] = [0, None, 0, False]
        self.slow.append(record)
        # Counted from before the connect: the server's clock starts at its accept,
        # later, so a 408 can never seem early (only late, by our own delays).
        start = trio.current_time()
        try:
            sock = await connect(self.args.port)
        except OSError as exc:
            self.errors.append(f"slow connect: {exc!r}")
            self._slow_finished()
            return
        self._connected()
        with sock:
            async with trio.open_nursery() as nursery:

                async def trickle() -> None:
                    for byte in REQUEST:
                        try:
                            await sock.send(bytes([byte]))
                        except OSError:
                            return
                        record[2] += 1
                        # Jitter: a thousand connections do not send in lock-step.
                        await trio.sleep(self.args.interval * random.uniform(0.9, 1.1))

                nursery.start_soon(trickle)
                data = b""
                try:
                    while True:
                        chunk = await sock.recv(65536)
                        if not chunk:
                            break
                        if not data:
                            record[1] = trio.current_time() - start
                        data += chunk
                except OSError as exc:
                    if not data:
                        self.errors.append(f"slow recv: {exc!r}")
                    record[3] = True  # a reset after the response (we kept sending)
                record[0] = status_of(data)
                nursery.cancel_scope.cancel()
        self._slow_finished()

    def _slow_finished(self) -> None:
        self.slow_left -= 1
        if self.slow_left == 0:
            self.slow_done.set()

    async def idle_one(self, delay: float) -> None:
        await trio.sleep(delay)
        record: list[Any] = [0, False]
        self.idle.append(record)
        try:
            sock = await connect(self.args.port)
        except OSError as exc:
            self.errors.append(f"idle connect: {exc!r}")
            return
        self._connected()
        with sock:
            await self.release.wait()
            data = b""
            with trio.move_on_after(5):
                try:
                    while True:
                        chunk = await sock.recv(65536)
                        if not chunk:
                            record[1] = True
                            break
                        data += chunk
                except OSError:
                    record[1] = True  # reset after the response: closed too
            record[0] = status_of(data)

    async def main(self) -> None:
        args = self.args
        async with trio.open_nursery() as nursery:
            for _ in range(args.slow):
                nursery.start_soon(self.slowloris, random.uniform(0, args.stagger))
            for _ in range(args.idle):
                nursery.start_soon(self.idle_one, random.uniform(0, args.stagger))
            if args.slow + args.idle:
                with trio.move_on_after(args.stagger + 30):
                    await self.all_connected.wait()
            print("ready", flush=True)
            if args.slow:
                await self.slow_done.wait()
            print("slow-done", flush=True)
            # Released when the test closes our stdin.
            await trio.to_thread.run_sync(sys.stdin.read)
            self.release.set()
        print(json.dumps({"slow": self.slow, "idle": self.idle, "errors": self.errors}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--stagger", type=float, default=1.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # 2,000 sockets: more than the usual soft limit of 1,024
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(Crowd(args).main)


if __name__ == "__main__":
    main()
