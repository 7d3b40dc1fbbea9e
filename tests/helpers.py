"""Shared utilities for the connection, server, TLS and interop tests.

The frame encoder/parser here is written independently of ``trio_gws._frames`` and
``trio_gws._reader`` on purpose: the tests need an oracle that does not share the
library's bugs, and they need to build frames the library would never produce
(unmasked client frames, reserved bits, non-minimal lengths, bogus opcodes).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import zlib
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator

import trio
import trio.testing

import trio_gws as gws
from trio_gws import Config, Conn, EventHandler, Headers, Message, Request
from trio_gws._deflate import DeflateParams

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CONT = 0x1, 0x2, 0x0
CLOSE, PING, PONG = 0x8, 0x9, 0xA

RSV1, RSV2, RSV3 = 0x4, 0x2, 0x1  # the 3-bit "rsv" argument of build_frame


# -- frames ------------------------------------------------------------------------


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes | None = None,
    length: int | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """One frame, exactly as described; nothing is validated.

    ``length`` overrides the declared payload length (to send only a header),
    ``length_bytes`` forces 0, 2 or 8 extra length bytes (non-minimal encodings).
    """
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 0x10000 else 8
    if length_bytes == 0:
        header = bytes([first, mask_bit | n])
    elif length_bytes == 2:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4) if key is None else key
        return header + key + _xor(payload, key)
    return header + payload


def _xor(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key repeated (masking and unmasking are the same)."""
    n = len(data)
    rep = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big")


def naive_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """Reference implementation straight from RFC 6455 section 5.3."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    if code is None:
        return reason
    return struct.pack("!H", code) + reason


@dataclass
class RawFrame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes  # unmasked

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        if len(self.payload) < 2:
            return None
        return int(struct.unpack_from("!H", self.payload)[0])

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == CLOSE, self
        return self.payload[2:]


def parse_frame(buf: bytes | bytearray) -> tuple[RawFrame, int] | None:
    """(frame, bytes consumed) when ``buf`` starts with a whole frame, else None."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        (n,) = struct.unpack_from("!H", buf, 2)
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        (n,) = struct.unpack_from("!Q", buf, 2)
        pos = 10
    masked = bool(b1 & 0x80)
    key = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    if masked:
        payload = _xor(payload, key)
    frame = RawFrame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F, masked, payload)
    return frame, pos + n


# -- a hand-driven peer ------------------------------------------------------------


class Peer:
    """The other end of a connection, driven by the test byte by byte.

    ``client=True`` (the default) masks what it sends, as a client must.
    """

    def __init__(self, stream: trio.abc.Stream, *, client: bool = True,
                 buffer: bytes = b"") -> None:
        self.stream = stream
        self.client = client
        self.buf = bytearray(buffer)
        self.eof = False

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        kw.setdefault("mask", self.client)
        await self.stream.send_all(build_frame(opcode, payload, **kw))

    async def send_text(self, text: str | bytes, **kw: Any) -> None:
        data = text.encode() if isinstance(text, str) else text
        await self.send(TEXT, data, **kw)

    async def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        await self.send(CLOSE, close_payload(code, reason))

    async def _fill(self, max_bytes: int = 65536) -> bool:
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def recv_frame(self) -> RawFrame:
        """The next whole frame; EOFError if the stream ends first."""
        while True:
            parsed = parse_frame(self.buf)
            if parsed is not None:
                frame, used = parsed
                del self.buf[:used]
                return frame
            if not await self._fill():
                raise EOFError(f"stream ended with {len(self.buf)} unparsed bytes")

    async def recv_close(self) -> RawFrame:
        frame = await self.recv_frame()
        assert frame.opcode == CLOSE, frame
        return frame

    async def expect_eof(self) -> bytes:
        """Read until the other side closes; returns whatever came (should be nothing)."""
        while await self._fill():
            pass
        rest = bytes(self.buf)
        self.buf.clear()
        return rest

    async def recv_some(self, max_bytes: int) -> bytes:
        if not self.buf:
            await self._fill(max_bytes)
        data = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        return data

    async def recv_exactly(self, n: int) -> bytes:
        """The next ``n`` raw bytes; EOFError if the stream ends first."""
        while len(self.buf) < n:
            if not await self._fill(n - len(self.buf)):
                raise EOFError(f"stream ended after {len(self.buf)} of {n} bytes")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


# -- a recording handler -----------------------------------------------------------


@dataclass
class Ev:
    kind: str  # open, message, ping, pong, close, error
    conn: Conn
    data: Any = None

    def __repr__(self) -> str:
        return f"Ev({self.kind}, {self.data!r})"


class Recorder(EventHandler):
    """Appends every event to ``events``; subclasses add behaviour via ``react``.

    ``echo=True`` answers every message with the same opcode and payload.
    """

    def __init__(self, *, echo: bool = False) -> None:
        self.events: list[Ev] = []
        self.echo = echo
        self._changed = trio.Event()

    def _record(self, kind: str, conn: Conn, data: Any = None) -> None:
        self.events.append(Ev(kind, conn, data))
        self._changed.set()
        self._changed = trio.Event()

    # -- queries
    def kinds(self, conn: Conn | None = None) -> list[str]:
        return [e.kind for e in self.events if conn is None or e.conn is conn]

    def endings(self, conn: Conn | None = None) -> list[Ev]:
        return [e for e in self.events
                if e.kind in ("close", "error") and (conn is None or e.conn is conn)]

    def of(self, kind: str) -> list[Any]:
        return [e.data for e in self.events if e.kind == kind]

    def conns(self) -> list[Conn]:
        return [e.conn for e in self.events if e.kind == "open"]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_endings(self, count: int = 1) -> list[Ev]:
        await self.wait_for(lambda: len(self.endings()) >= count)
        return self.endings()

    async def wait_kind(self, kind: str, count: int = 1) -> list[Any]:
        await self.wait_for(lambda: len(self.of(kind)) >= count)
        return self.of(kind)

    # -- callbacks
    async def on_open(self, conn: Conn) -> None:
        self._record("open", conn)

    async def on_message(self, conn: Conn, message: Message) -> None:
        self._record("message", conn, message)
        if self.echo:
            await conn.write_message(message.opcode, message.data)

    async def on_ping(self, conn: Conn, payload: bytes) -> None:
        self._record("ping", conn, payload)
        await super().on_ping(conn, payload)

    async def on_pong(self, conn: Conn, payload: bytes) -> None:
        self._record("pong", conn, payload)

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self._record("close", conn, (code, reason))

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self._record("error", conn, error)


def server_conn_pair(
    handler: EventHandler, config: Config | None = None, *, lockstep: bool = False,
    is_server: bool = True,
) -> tuple[Conn, Peer]:
    """A Conn on one end of an in-memory stream pair and a Peer on the other."""
    conn, peer, _ = make_conn(handler, config, lockstep=lockstep, is_server=is_server)
    return conn, peer


def make_conn(
    handler: EventHandler,
    config: Config | None = None,
    *,
    is_server: bool = True,
    lockstep: bool = False,
    deflate: Any = None,
    record: bool = False,
    extension: Any = None,
) -> tuple[Conn, Peer, RecordingStream | None]:
    """A Conn on one end of an in-memory stream pair and a Peer on the other.

    ``lockstep`` makes ``send_all`` wait until the peer reads (a peer that does not
    read); ``record`` keeps what each ``send_all`` was given.
    """
    make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    ours, theirs = make()
    stream: trio.abc.Stream = ours
    recording = None
    if record:
        stream = recording = RecordingStream(ours)
    conn = Conn(stream, handler, config if config is not None else Config(),
                is_server=is_server, request=Request("GET", "/", Headers()),
                extension=extension if extension is not None else deflate)
    return conn, Peer(theirs, client=is_server), recording


def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


def socket_conn_pair(handler: EventHandler, config: Config | None = None) -> tuple[Conn, Peer]:
    """A server Conn on a real ``trio.SocketStream`` (a Unix socketpair: the reader's
    raw socket path) and a Peer on the other end."""
    ours, theirs = trio.socket.socketpair()
    conn = Conn(trio.SocketStream(ours), handler, config if config is not None else Config(),
                is_server=True, request=Request("GET", "/", Headers()))
    return conn, Peer(trio.SocketStream(theirs))


class RecordingStream(trio.abc.Stream):
    """Passes everything through and remembers each object given to ``send_all``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent: list[Any] = []

    async def send_all(self, data: Any) -> None:
        self.sent.append(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- HTTP --------------------------------------------------------------------------


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_request(
    *,
    method: str = "GET",
    target: str = "/",
    version: str = "HTTP/1.1",
    key: str | None = None,
    headers: dict[str, Any] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An upgrade request; ``headers`` overrides defaults (value None drops the header)."""
    fields: dict[str, Any] = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key if key is not None else new_key(),
        "Sec-WebSocket-Version": "13",
    }
    for name, value in (headers or {}).items():
        fields[name] = value
    lines = [f"{method} {target} {version}"]
    lines += [f"{k}: {v}" for k, v in fields.items() if v is not None]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HTTPResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_response(peer: Peer) -> HTTPResponse:
    """Read a response head (and a Content-Length body) through ``peer``'s buffer."""
    while b"\r\n\r\n" not in peer.buf:
        if not await peer._fill():
            raise EOFError(f"no complete response head: {bytes(peer.buf)!r}")
    end = peer.buf.index(b"\r\n\r\n") + 4
    head = bytes(peer.buf[:end - 4]).decode("latin-1")
    del peer.buf[:end]
    status_line, *lines = head.split("\r\n")
    version, status, reason = (status_line.split(" ", 2) + [""])[:3]
    assert version == "HTTP/1.1", status_line
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = HTTPResponse(int(status), reason, headers, b"")
    length = response.header("Content-Length")
    if length is not None:
        n = int(length)
        while len(peer.buf) < n:
            if not await peer._fill():
                break
        response.body = bytes(peer.buf[:n])
        del peer.buf[:n]
    return response


async def ws_connect(port: int, *, target: str = "/", headers: dict[str, Any] | None = None,
                     extra: Sequence[tuple[str, str]] = (), after: bytes = b"",
                     stream: trio.abc.Stream | None = None,
                     ) -> tuple[Peer, HTTPResponse]:
    """Open a raw client, complete the handshake (asserting 101 and the accept value)."""
    if stream is None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = Peer(stream)
    key = new_key()
    await peer.send_raw(upgrade_request(target=target, key=key, headers=headers,
                                        extra=extra) + after)
    response = await read_response(peer)
    assert response.status == 101, response
    assert response.header("Sec-WebSocket-Accept") == accept_for(key)
    return peer, response


async def http_exchange(port: int, request: bytes, *,
                        stream: trio.abc.Stream | None = None) -> tuple[HTTPResponse, Peer]:
    """Send raw bytes, read the HTTP response; the peer is left open."""
    if stream is None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = Peer(stream)
    await peer.send_raw(request)
    return await read_response(peer), peer


# -- running a server ---------------------------------------------------------------


@asynccontextmanager
async def running_server(
    handler: EventHandler, config: Config | None = None, **kw: Any
) -> AsyncIterator[int]:
    """Run ``serve`` on 127.0.0.1:0; yield the port; cancel it and require a prompt exit."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(gws.serve, handler, 0, host="127.0.0.1", config=config, **kw)
        )
        assert server.port is not None
        yield server.port
        nursery.cancel_scope.cancel()


def count_tasks() -> int:
    """Every task of this Trio run (walks the task tree)."""
    return len(task_names())


def count_fds() -> int:
    """Open sockets of this process (Linux: /proc/self/fd)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile (e.g. the listdir's own descriptor)
    return count


async def settle(predicate: Callable[[], bool], *, tries: int = 200,
                 interval: float = 0.01) -> bool:
    """Poll ``predicate`` (real clock) until it holds; returns its final value."""
    for _ in range(tries):
        if predicate():
            return True
        await trio.sleep(interval)
    return predicate()


# -- write side: queues, broadcasts, compressed frames -----------------------------


def task_names() -> list[str]:
    """The names of every task of this Trio run (walks the task tree)."""
    names = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


def drainer_count() -> int:
    """How many write-queue drain tasks exist right now (all connections)."""
    return sum(1 for name in task_names() if name.endswith("._drain"))


class Inflater:
    """Decodes the compressed messages of one direction (RFC 7692), independently.

    One raw-inflate stream with the largest window: it accepts messages from a sender
    with or without context takeover, and any window size up to 15 bits.
    """

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(-15)

    def message(self, payload: bytes) -> bytes:
        return self._inflater.decompress(payload + b"\x00\x00\xff\xff")


class MessageReader:
    """Reads whole data messages (reassembled, inflated) from a Peer, skipping nothing.

    ``next()`` returns (opcode, payload) for data messages and for control frames
    too, so tests see every frame in wire order (trio-gws never fragments).
    """

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.inflater = Inflater()
        self.frames: list[RawFrame] = []

    async def next(self) -> tuple[int, bytes]:
        parts: list[bytes] = []
        opcode = None
        compressed = False
        while True:
            frame = await self.peer.recv_frame()
            self.frames.append(frame)
            if frame.opcode >= 0x8:
                assert opcode is None, f"control frame inside a fragmented message: {frame}"
                return frame.opcode, frame.payload
            if opcode is None:
                opcode = frame.opcode
                compressed = bool(frame.rsv & RSV1)
            parts.append(frame.payload)
            if frame.fin:
                data = b"".join(parts)
                return opcode, (self.inflater.message(data) if compressed else data)


class _OneWay:
    __slots__ = ("data", "eof", "reader_closed", "lot")

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False  # the writer sent EOF or closed
        self.reader_closed = False
        self.lot = trio.lowlevel.ParkingLot()


class PipeStream(trio.abc.HalfCloseableStream):
    """A lean in-memory stream end for tests with very many connections.

    Unbounded like ``memory_stream_pair`` but with one checkpoint per call and no
    pump, so 1,000 connections cost little. Sending after the other end closed
    raises BrokenResourceError; receiving after the other end closed or sent EOF
    returns b"".
    """

    def __init__(self, incoming: _OneWay, outgoing: _OneWay) -> None:
        self._in = incoming
        self._out = outgoing
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("this end is closed")
        if self._out.eof or self._out.reader_closed:
            raise trio.BrokenResourceError("the other end is closed")
        self._out.data += data
        self._out.lot.unpark_all()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("this end is closed")
        self._out.eof = True
        self._out.lot.unpark_all()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        incoming = self._in
        if incoming.data or incoming.eof or self._closed:
            await trio.lowlevel.checkpoint()
        while not (incoming.data or incoming.eof or self._closed):
            await incoming.lot.park()
        if self._closed:
            raise trio.ClosedResourceError("this end is closed")
        n = len(incoming.data) if max_bytes is None else min(max_bytes, len(incoming.data))
        chunk = bytes(incoming.data[:n])
        del incoming.data[:n]
        return chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._out.lot.unpark_all()
            self._in.reader_closed = True
            self._in.lot.unpark_all()
        await trio.lowlevel.checkpoint()


def pipe_stream_pair() -> tuple[PipeStream, PipeStream]:
    """Two connected PipeStream ends."""
    a_to_b, b_to_a = _OneWay(), _OneWay()
    return PipeStream(b_to_a, a_to_b), PipeStream(a_to_b, b_to_a)


def load_chat_example() -> Any:
    """examples/chat/server.py as a module (loaded once: tests share its classes)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "chat_example_server"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "examples" / "chat" / "server.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
