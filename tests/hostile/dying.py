"""Clients that die at chosen points of a connection's life, by FIN or by RST.

Each ``Death`` kind opens a raw connection (plain or TLS) to the hostile server,
goes as far as its kind says (a cut chosen by a seeded ``random.Random``), and then
dies: an ordinary close (FIN) or, with ``rst``, ``SO_LINGER`` 0 first so the
kernel sends a reset and drops whatever was unsent. Nothing waits politely: a
client that dies does not read what the server still has to say.

``run_crowd`` runs a number of them concurrently and returns what the clients saw
(how many got the 101, i.e. completed handshakes the server must report once each).
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
from collections import Counter
from dataclasses import dataclass, field

import trio

from helpers import CLOSE, TEXT, build_frame, close_payload, new_key

KINDS = (
    "connect",       # TCP connect, then die
    "request",       # part of the upgrade request
    "tls_hello",     # part of the TLS ClientHello
    "tls_mid",       # the whole ClientHello, part of the server's answer read
    "tls_request",   # TLS done, part of the upgrade request
    "tls_frame",     # TLS, 101, part of a frame
    "frame",         # 101, a few echoes, part of a frame
    "close",         # 101, part of a close frame / the whole one, reply unread / read
    "abandon",       # 101, a large message sent, its echo never read
    "clean",         # a whole life: 101, echoes, close handshake, EOF (the control)
)

#: Kinds whose client waits for the 101 before dying: the server opened them.
OPENED = {"tls_frame", "frame", "close", "abandon", "clean"}


def request_bytes() -> bytes:
    return (f"GET /dying HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {new_key()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


@dataclass
class Seen:
    """What the clients of one crowd saw."""

    by_kind: Counter[str] = field(default_factory=Counter)
    opened: int = 0  # got the 101
    rst: int = 0
    failures: list[str] = field(default_factory=list)  # unexpected client-side problems


class Raw:
    """A raw connection: a trio socket, optionally with TLS in memory BIOs (so the
    TLS handshake can be cut at any byte)."""

    def __init__(self, sock: trio.socket.SocketType, context: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.tls = None
        if context is not None:
            self.incoming = ssl.MemoryBIO()
            self.outgoing = ssl.MemoryBIO()
            self.tls = context.wrap_bio(self.incoming, self.outgoing,
                                        server_hostname="127.0.0.1")
        self.buf = bytearray()

    async def recv_wire(self) -> bytes:
        return await self.sock.recv(65536)

    async def handshake_tls(self) -> None:
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            await self._flush_tls()
            data = await self.recv_wire()
            if not data:
                raise EOFError("EOF during the TLS handshake")
            self.incoming.write(data)
        await self._flush_tls()

    async def _flush_tls(self) -> None:
        data = self.outgoing.read()
        if data:
            await self._send_raw(data)

    async def _send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self.sock.send(view)
            view = view[sent:]

    async def send(self, data: bytes) -> None:
        """Application bytes (through TLS when on)."""
        if self.tls is None:
            await self._send_raw(data)
        else:
            self.tls.write(data)
            await self._flush_tls()

    async def recv(self) -> bytes:
        """Some application bytes; b"" at EOF."""
        if self.tls is None:
            return await self.recv_wire()
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = await self.recv_wire()
                if not data:
                    return b""
                self.incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def recv_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            data = await self.recv()
            if not data:
                raise EOFError(f"EOF before {marker!r}: {bytes(self.buf[:200])!r}")
            self.buf += data
        end = self.buf.index(marker) + len(marker)
        head = bytes(self.buf[:end])
        del self.buf[:end]
        return head

    async def recv_frame(self) -> tuple[int, bytes]:
        """One (unmasked, server) frame: opcode, payload."""
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                pos = 2
                if n == 126 and len(self.buf) >= 4:
                    n, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
                if n < 126 or pos > 2:
                    if len(self.buf) >= pos + n:
                        opcode = self.buf[0] & 0x0F
                        payload = bytes(self.buf[pos:pos + n])
                        del self.buf[:pos + n]
                        return opcode, payload
            data = await self.recv()
            if not data:
                raise EOFError("EOF before a whole frame")
            self.buf += data

    async def upgrade(self) -> None:
        head = await self.recv_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise AssertionError(f"no 101: {head[:100]!r}")

    def die(self, rst: bool) -> None:
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


async def one(kind: str, rng: random.Random, rst: bool, port: int, tls_port: int,
              context: ssl.SSLContext, seen: Seen) -> None:
    """One client of ``kind``: go as far as the kind says, then die."""
    tls = kind.startswith("tls")
    sock = trio.socket.socket()
    raw = Raw(sock, context if tls else None)
    try:
        await sock.connect(("127.0.0.1", tls_port if tls else port))
        request = request_bytes()
        if kind == "request":
            await raw.send(request[:rng.randrange(1, len(request))])
        elif kind == "tls_hello":
            assert raw.tls is not None
            try:
                raw.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = raw.outgoing.read()
            await raw._send_raw(hello[:rng.randrange(1, len(hello))])
        elif kind == "tls_mid":
            assert raw.tls is not None
            try:
                raw.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            await raw._flush_tls()
            if rng.random() < 0.5:
                await raw.recv_wire()  # part of the server's answer, unanswered
        elif kind == "tls_request":
            await raw.handshake_tls()
            await raw.send(request[:rng.randrange(0, len(request))])
        elif kind != "connect":
            if tls:
                await raw.handshake_tls()
            await raw.send(request)
            await raw.upgrade()
            seen.opened += 1
            await opened_life(kind, raw, rng)
    except (OSError, EOFError, ssl.SSLError, AssertionError) as exc:
        seen.failures.append(f"{kind}: {exc!r}")
    finally:
        seen.by_kind[kind] += 1
        seen.rst += rst
        raw.die(rst)


async def opened_life(kind: str, raw: Raw, rng: random.Random) -> None:
    """After the 101: echoes, then the kind's way of dying."""
    for i in range(rng.randrange(0, 3)):
        payload = b"echo %d" % i
        await raw.send(build_frame(TEXT, payload))
        opcode, got = await raw.recv_frame()
        assert (opcode, got) == (TEXT, payload), (opcode, got)
    if kind in ("frame", "tls_frame"):
        size = rng.choice((0, 10, 125, 126, 4000, 65535, 65536, 70000))
        frame = build_frame(TEXT, b"x" * size)
        await raw.send(frame[:rng.randrange(1, len(frame))])
    elif kind == "close":
        frame = build_frame(CLOSE, close_payload(1000, b"bye"))
        how = rng.randrange(3)
        if how == 0:
            await raw.send(frame[:rng.randrange(1, len(frame))])  # part of it
        else:
            await raw.send(frame)
            if how == 2:
                opcode, _ = await raw.recv_frame()  # the reply, then die before EOF
                assert opcode == CLOSE
    elif kind == "abandon":
        await raw.send(build_frame(TEXT, b"y" * rng.randrange(65536, 262144)))
        await trio.sleep(rng.random() * 0.01)  # the echo is being written
    elif kind == "clean":
        await raw.send(build_frame(CLOSE, close_payload(1000)))
        opcode, _ = await raw.recv_frame()
        assert opcode == CLOSE
        while await raw.recv():
            pass


async def run_crowd(port: int, tls_port: int, context: ssl.SSLContext, count: int,
                    weights: dict[str, int], rst_fraction: float, seed: int,
                    concurrency: int = 64) -> Seen:
    """``count`` dying clients, ``concurrency`` at a time."""
    rng = random.Random(seed)
    kinds = [k for k in KINDS if weights.get(k)]
    chosen = rng.choices(kinds, [weights[k] for k in kinds], k=count)
    seen = Seen()
    limit = trio.CapacityLimiter(concurrency)

    async def run(kind: str, sub_seed: int, rst: bool) -> None:
        async with limit:
            with trio.move_on_after(30) as scope:
                await one(kind, random.Random(sub_seed), rst, port, tls_port, context, seen)
            if scope.cancelled_caught:
                seen.failures.append(f"{kind}: client stuck for 30 s")

    async with trio.open_nursery() as nursery:
        for kind in chosen:
            nursery.start_soon(run, kind, rng.getrandbits(32), rng.random() < rst_fraction)
            await trio.sleep(0)
    return seen
