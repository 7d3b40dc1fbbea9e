"""A second, minimal load generator to cross-check loadgen.py: no WebSocket library.

Plain asyncio protocols (on uvloop when installed) that write the opening handshake and
every frame by hand and parse only the frame headers of what comes back, so nothing a
client library does (buffering, its own pings, its close sequence) is in the numbers.
It exists to answer "is it the load generator?" (benchmarks/README.md, "Two load
generators that disagree"): run it and loadgen.py against the same servers and
compare. Modes, with loadgen.py's arguments and output fields:

* ``echo``: N connections, K messages in flight each; echoes and server CPU counted
  in a timed window after a warm-up.
* ``handshake``: D dialers each loop connect -> opening handshake -> close; ``--close``
  says how: ``handshake`` (send a close frame, wait for the server's, then close the
  TCP connection: what loadgen.py does), ``eof`` (send the close frame and our FIN at
  once, wait for the server's FIN), ``abort`` (send the close frame, then reset the
  connection at once: the server is spared its part of the close).

Everything it dials is on the loopback interface; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import socket
import struct
import time
from typing import Any

from loadgen import Window, make_payload

try:
    from trio_gws._speedups import apply_mask
except ImportError:  # pragma: no cover - the pure version is slower but equal
    from trio_gws._mask import apply_mask_python as apply_mask  # type: ignore[assignment]

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked final frame (a fresh random key)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    return head + key + apply_mask(payload, key)


def request(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


class Conn(asyncio.Protocol):
    """Opening handshake, then frames: ``on_frame(opcode, payload_len)`` per frame."""

    def __init__(self, req: bytes) -> None:
        self.req = req
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:12])
            del self.buf[:end + 4]
            if status != b"HTTP/1.1 101":
                self.upgraded.set_exception(RuntimeError(f"refused: {status!r}"))
                return
            self.upgraded.set_result(None)
        buf = self.buf
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            h = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                h = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                h = 10
            if end - pos < h + n:
                break
            self.on_frame(buf[pos] & 0x0F, n)
            pos += h + n
        del buf[:pos]

    def on_frame(self, opcode: int, size: int) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("lost before the upgrade"))
        if not self.lost.done():
            self.lost.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.running = True
        self.measuring = False
        self.count = 0
        self.errors = 0
        self.samples: list[str] = []

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(text)


class EchoConn(Conn):
    def __init__(self, req: bytes, stats: Stats, frame_of: Any, size: int) -> None:
        super().__init__(req)
        self.stats, self.frame_of, self.size = stats, frame_of, size
        self.closing = False

    def on_frame(self, opcode: int, size: int) -> None:
        if opcode == 0x8:
            self.closing = True
            self.transport.close()
            return
        if size != self.size:
            self.stats.error(f"echo of {size} bytes, sent {self.size}")
        if self.stats.measuring:
            self.stats.count += 1
        if self.stats.running:
            self.transport.write(self.frame_of())


async def run_echo(args: argparse.Namespace, host: str, port: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    opcode, payload = make_payload(args.payload, args.size)
    opcode = int(opcode)
    stats = Stats()
    # 64 frames with fresh keys, reused in turn: masking is not what is measured.
    frames = [client_frame(opcode, payload) for _ in range(64)]
    turn = iter(range(1 << 62))

    def frame_of() -> bytes:
        return frames[next(turn) & 63]

    conns: list[EchoConn] = []
    gate = asyncio.Semaphore(64)

    async def open_one() -> None:
        async with gate:
            _, proto = await loop.create_connection(
                lambda: EchoConn(request(host, port), stats, frame_of, len(payload)),
                host, port)
            await asyncio.wait_for(proto.upgraded, 10)
            conns.append(proto)

    await asyncio.gather(*(open_one() for _ in range(args.conns)))
    for c in conns:
        for _ in range(args.inflight):
            c.transport.write(frame_of())
    await asyncio.sleep(args.warmup)
    gc.collect()
    gc.disable()
    window = Window(args.server_pid)
    stats.measuring = True
    window.start()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    clocks = window.stop()
    gc.enable()
    stats.running = False
    await asyncio.sleep(0.2)
    close = client_frame(0x8, struct.pack("!H", 1000))
    for c in conns:
        c.transport.write(close)
    await asyncio.wait([asyncio.ensure_future(c.lost) for c in conns], timeout=5)
    for c in conns:
        c.transport.abort()
    out: dict[str, Any] = {"mode": "echo", "generator": "rawgen", "connections": len(conns),
                           "inflight": args.inflight, "size": len(payload), **clocks,
                           "messages": stats.count,
                           "msgs_per_s": stats.count / clocks["seconds"],
                           "errors": stats.errors, "error_samples": stats.samples}
    if stats.count and "server_cpu_s" in clocks:
        out["server_cpu_us_per_msg"] = clocks["server_cpu_s"] / stats.count * 1e6
    return out


class DialConn(Conn):
    def __init__(self, req: bytes) -> None:
        super().__init__(req)
        self.closed_frame = asyncio.get_running_loop().create_future()

    def on_frame(self, opcode: int, size: int) -> None:
        if opcode == 0x8 and not self.closed_frame.done():
            self.closed_frame.set_result(None)


async def run_handshake(args: argparse.Namespace, host: str, port: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = Stats()
    close = client_frame(0x8, struct.pack("!H", 1000))

    async def dialer() -> None:
        while stats.running:
            try:
                _, proto = await loop.create_connection(lambda: DialConn(request(host, port)),
                                                        host, port)
                await asyncio.wait_for(proto.upgraded, 10)
                proto.transport.write(close)
                if args.close == "handshake":
                    await asyncio.wait_for(proto.closed_frame, 10)
                    proto.transport.close()
                elif args.close == "eof":
                    proto.transport.write_eof()
                else:
                    proto.transport.abort()
                await asyncio.wait_for(proto.lost, 10)
            except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                stats.error(f"dial: {exc!r}")
                await asyncio.sleep(0.01)
                continue
            if stats.measuring:
                stats.count += 1

    tasks = [asyncio.ensure_future(dialer()) for _ in range(args.dialers)]
    await asyncio.sleep(args.warmup)
    window = Window(args.server_pid)
    stats.measuring = True
    window.start()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    clocks = window.stop()
    stats.running = False
    await asyncio.wait(tasks, timeout=15)
    out: dict[str, Any] = {"mode": "handshake", "generator": "rawgen", "close": args.close,
                           "dialers": args.dialers, **clocks, "handshakes": stats.count,
                           "handshakes_per_s": stats.count / clocks["seconds"],
                           "errors": stats.errors, "error_samples": stats.samples}
    if stats.count and "server_cpu_s" in clocks:
        out["server_cpu_us_per_handshake"] = clocks["server_cpu_s"] / stats.count * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("echo", "handshake"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--size", type=int, default=4198)
    parser.add_argument("--payload", choices=("json", "text", "binary"), default="json")
    parser.add_argument("--dialers", type=int, default=50)
    parser.add_argument("--close", choices=("handshake", "eof", "abort"), default="handshake")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--settle", type=float, help="ignored (loadgen.py's idle mode)")
    args = parser.parse_args()
    hostport = args.url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("rawgen only dials the loopback interface")
    if not 0 < args.duration <= 60 or not 0 <= args.warmup <= 60:
        parser.error("durations are bounded: 0 < duration <= 60, 0 <= warmup <= 60")
    runner = run_echo if args.mode == "echo" else run_handshake
    coro = runner(args, host, int(port))
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
