"""The reads lent to ``on_stream`` (``_loan``): a streamed message read in its handler's
task on a plain socket, and every way the reads come back to the reader."""

from __future__ import annotations

import hashlib
import math
import os
import socket
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

import trio_gws as gws
import trio_gws._dispatch as dispatch
from helpers import (
    BINARY, CLOSE, CONT, PING, PONG, TEXT, build_frame, running_server, settle, ws_connect,
)
from trio_gws import Config, Conn, MessageStream, Opcode
from trio_gws._loan import ReadLoan
from trio_gws._reader import STREAM_PIECE
from trio_gws._streams import STREAM_QUEUE

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def loans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reader's loans (one entry per lend)."""
    lent: list[int] = []
    lend = dispatch.lend_reads

    async def counting(*args: Any) -> Any:
        lent.append(1)
        return await lend(*args)

    monkeypatch.setattr(dispatch, "lend_reads", counting)
    return lent


class Hasher(gws.EventHandler):
    """Hashes each streamed message and answers with the digest; records failures."""

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.stream: MessageStream | None = None
        self.tasks: set[Any] = set()
        self.errors: list[BaseException] = []
        self.endings: list[Any] = []

    async def on_open(self, conn: Conn) -> None:
        self.conn = conn

    async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
        self.stream = stream
        digest = hashlib.sha256()
        try:
            await self.before(conn, stream, digest)
            async for piece in stream:
                self.tasks.add(trio.lowlevel.current_task())
                digest.update(piece)
        except gws.ConnectionClosed as exc:
            self.errors.append(exc)
            raise
        await conn.write_message(Opcode.TEXT, digest.hexdigest())

    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        """What a test does with the stream before the plain iteration."""

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self.endings.append(("close", code))

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self.endings.append(("error", error))

    def lent(self) -> ReadLoan | None:
        return self.stream._loan if self.stream is not None else None


#: Fragments larger than the queue the reader fills for a handler: the reader waits
#: for room, the handler empties the queue and waits for more, and the reader then
#: lends it the reads. (With short fragments the reader itself waits on the socket
#: while the handler waits for it: the handler is then woken as before.)
FRAGMENT = 600_000


async def lend(peer: Any, loans: list[int], opcode: int = BINARY) -> bytes:
    """Start a message with FRAGMENT-byte fragments until the reads were lent."""
    sent = b""
    for _ in range(20):
        part = (b"a" if opcode == TEXT else os.urandom(1)) * FRAGMENT
        await peer.send(CONT if sent else opcode, part, fin=False)
        sent += part
        if await settle(lambda: bool(loans), tries=20):
            return sent
    raise AssertionError("the reads were never lent")


async def until_lent(stream: MessageStream, digest: Any) -> None:
    """Read pieces until one came through the handler's own read."""
    while stream._loan is None:
        digest.update(await stream.__anext__())


async def test_a_streamed_message_is_read_in_its_handlers_task(loans: list[int]) -> None:
    data = os.urandom(3 << 20)
    handler = Hasher()
    async with running_server(handler, Config(max_content_length=8 << 20)) as port:
        peer, _ = await ws_connect(port)
        first = await lend(peer, loans)
        reader_task = handler.conn._reader_task  # type: ignore[union-attr]
        await peer.send(CONT, data[:1 << 20], fin=False)
        await peer.send(PING, b"mid")  # handled by the reader, in wire order
        await peer.send(CONT, data[1 << 20:], fin=True)
        with trio.fail_after(10):
            pong = await peer.recv_frame()
            answer = await peer.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"mid")
        assert answer.payload.decode() == hashlib.sha256(first + data).hexdigest()
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        await peer.aclose()
    assert len(loans) >= 2  # lent again after the ping
    assert reader_task not in handler.tasks
    assert handler.errors == [] and handler.endings == [("close", 1000)]


class PingsMeanwhile(Hasher):
    """Waits in a lent read for a piece that does not come (and gives up), then pings
    the peer: the reader must be reading again to see the pong."""

    def __init__(self) -> None:
        super().__init__()
        self.rtt: float | None = None

    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        await until_lent(stream, digest)
        with trio.move_on_after(0.2):  # the rest of what was sent, then nothing
            async for piece in stream:
                digest.update(piece)
        assert stream._loan is None
        self.rtt = await conn.ping(b"meanwhile")


async def test_a_handler_cancelled_in_a_lent_read_gives_the_reads_back(
        loans: list[int]) -> None:
    handler = PingsMeanwhile()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        first = await lend(peer, loans)
        with trio.fail_after(10):
            ping = await peer.recv_frame()
            assert (ping.opcode, ping.payload) == (PING, b"meanwhile")
            await peer.send(PONG, b"meanwhile")
            assert await settle(lambda: handler.rtt is not None)
            await peer.send(CONT, b"second", fin=True)
            answer = await peer.recv_frame()
        assert answer.payload.decode() == hashlib.sha256(first + b"second").hexdigest()
        await peer.send_close(1000)
        await peer.recv_close()
        await peer.aclose()
    assert handler.errors == []


@pytest.mark.parametrize("ending", ["utf8", "eof", "protocol"])
async def test_what_a_lent_read_meets_fails_the_connection_in_the_reader(
        ending: str, loans: list[int]) -> None:
    handler = Hasher()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        await lend(peer, loans, TEXT)
        with trio.fail_after(10):
            if ending == "eof":
                await peer.aclose()
            else:
                await peer.send(TEXT if ending == "protocol" else CONT, b"\xff", fin=False)
                close = await peer.recv_close()
                assert close.close_code == (1002 if ending == "protocol" else 1007)
                await peer.aclose()
            assert await settle(lambda: bool(handler.endings))
    assert len(handler.errors) == 1  # the handler's iteration raised
    assert [kind for kind, _ in handler.endings] == ["error"]  # on_error once
    expected = {"utf8": 1007, "protocol": 1002, "eof": 1006}[ending]
    assert handler.errors[0].code == expected  # type: ignore[attr-defined]


class SetsDeadline(Hasher):
    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        await until_lent(stream, digest)
        conn.set_deadline(trio.current_time() + 0.2)


async def test_a_deadline_set_while_the_reads_are_lent_applies(loans: list[int]) -> None:
    handler = SetsDeadline()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        await lend(peer, loans)
        with trio.fail_after(10):
            close = await peer.recv_close()  # nothing more comes: the deadline fails it
        assert close.close_code == 1011
        await peer.aclose()
        assert await settle(lambda: bool(handler.endings))
    assert len(handler.errors) == 1
    assert isinstance(handler.errors[0].__cause__, gws.WebSocketTimeoutError)


class ReturnsEarly(Hasher):
    async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
        self.stream = stream
        if stream.opcode is Opcode.BINARY:
            await until_lent(stream, hashlib.sha256())  # and return with the reads lent
        await conn.write_message(Opcode.TEXT, stream.opcode.name)


async def test_a_handler_that_returns_with_the_reads_lent_gives_them_back(
        loans: list[int]) -> None:
    handler = ReturnsEarly()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        await lend(peer, loans)
        with trio.fail_after(10):
            assert (await peer.recv_frame()).payload == b"BINARY"
            assert handler.lent() is None  # given back when it returned
            await peer.send(CONT, b"z" * 300_000, fin=True)  # the reader drains it
            await peer.send(TEXT, b"next")
            assert (await peer.recv_frame()).payload == b"TEXT"
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        await peer.aclose()
    assert loans


async def test_the_close_timeout_revokes_the_reads_from_a_waiting_handler(
        loans: list[int]) -> None:
    handler = Hasher()
    async with running_server(handler, Config(close_timeout=0.5)) as port:
        peer, _ = await ws_connect(port)
        await lend(peer, loans)
        assert await settle(lambda: handler.lent() is not None
                            and handler.lent()._waiter is not None)  # type: ignore[union-attr]
        conn = handler.conn
        assert conn is not None
        await conn.write_close(1000)
        with trio.fail_after(10):
            assert (await peer.recv_frame()).opcode == CLOSE  # and it is not answered
            assert await settle(lambda: bool(handler.endings))
        await peer.aclose()
    assert len(handler.errors) == 1  # the iteration raised: the connection ended
    assert [kind for kind, _ in handler.endings] == ["error"]
    assert isinstance(handler.endings[0][1], gws.WebSocketTimeoutError)


async def test_revoking_wakes_the_handlers_wait_and_no_writers() -> None:
    # The handler waits on its own duplicate of the socket: waking it must not wake
    # (with ClosedResourceError) a writer waiting on the socket itself.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        while True:
            ours.send(b"\0" * 65536)
    except BlockingIOError:
        pass  # ours is full: a writer waits
    stream = MessageStream(Opcode.BINARY)
    loan = ReadLoan(None, stream, drained=True)  # type: ignore[arg-type]
    stream._loan = loan
    woken: list[Any] = []

    async def write() -> None:
        await trio.lowlevel.wait_writable(ours)
        woken.append("writer")

    async def wait() -> None:
        woken.append(await loan._wait_readable(ours))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert loan._waiter is not None
        loan.revoke()
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [False] and stream._loan is None and loan._waiter is None
        theirs.setblocking(False)
        while len(woken) < 2:  # reading their side makes room: only then the writer
            try:
                theirs.recv(1 << 20)
            except BlockingIOError:
                pass
            await trio.sleep(0.01)
    assert woken == [False, "writer"]
    ours.close()
    theirs.close()


@pytest.mark.parametrize("how", ["revoke", "give_back"])
async def test_an_ended_loan_reads_nothing_more(how: str) -> None:
    # Revoked (or given back from another task, as recall_reads does) while the
    # handler's read yields to the scheduler: it must not read the socket after that
    # (the reader, or its closing phase, reads it next).
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.send(build_frame(CONT, b"more", fin=False))
    conn = SimpleNamespace(_read_deadline=math.inf, _transport=SimpleNamespace(raw=ours),
                           _reader=None, _config=Config(), _trace=False)
    stream = MessageStream(Opcode.BINARY)
    loan = stream._loan = ReadLoan(conn, stream, drained=False)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loan.pull)
        getattr(loan, how)()  # before the pull's checkpoint returns
    assert len(ours.recv(100)) == 10 and not stream._pieces
    ours.close()
    theirs.close()


class HoldsLittle(gws.EventHandler):
    """Counts a streamed message's bytes and the most it ever held queued."""

    def __init__(self, consumers: int = 1) -> None:
        self.consumers = consumers
        self.size = 0
        self.most = 0
        self.lent = 0

    async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
        async def consume() -> None:
            async for piece in stream:
                self.size += len(piece)
                self.most = max(self.most, stream._queued + len(piece))
                self.lent += stream._loan is not None

        async with trio.open_nursery() as nursery:
            for _ in range(self.consumers):
                nursery.start_soon(consume)
        await conn.write_message(Opcode.TEXT, str(self.size))


async def test_a_lent_read_that_inflates_far_queues_no_more_than_the_reader_would(
        loans: list[int]) -> None:
    # 64 MiB of zeros deflate to a few hundred bytes per 256 KiB fragment: one lent
    # read holds many fragments. Inflating them all at once would hold megabytes.
    total = 64 << 20
    handler = HoldsLittle()
    config = Config(compress_enabled=True, max_content_length=total)
    async with running_server(handler, config) as port:
        async with gws.open_conn(f"ws://127.0.0.1:{port}/", config=config) as client:
            zeros = bytes(256 * 1024)
            await client.write_file(Opcode.BINARY, (zeros for _ in range(total // len(zeros))))
            with trio.fail_after(30):
                assert (await client.receive()).text == str(total)
    assert loans and handler.lent
    assert handler.most <= STREAM_QUEUE + STREAM_PIECE


async def test_two_tasks_iterating_one_stream_share_the_lent_reads(
        loans: list[int]) -> None:
    handler = HoldsLittle(consumers=2)
    data = os.urandom(4 << 20)
    async with running_server(handler, Config(max_content_length=len(data))) as port:
        async with gws.open_conn(f"ws://127.0.0.1:{port}/") as client:
            view = memoryview(data)
            await client.write_file(Opcode.BINARY, (view[i:i + 300_000]
                                                    for i in range(0, len(data), 300_000)))
            with trio.fail_after(30):
                assert (await client.receive()).text == str(len(data))
    assert loans and handler.lent


async def test_a_cancelled_aclose_ends_a_connection_whose_reads_are_lent(
        loans: list[int]) -> None:
    # aclose() cancelled while it waits for the peer's close frame closes the socket:
    # the reader, its reads lent to a handler that waits on a duplicate of the socket,
    # must notice as it would in its own wait (and the duplicate must not keep the
    # connection open).
    handler = Hasher()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        await lend(peer, loans)
        assert await settle(lambda: handler.lent() is not None
                            and handler.lent()._waiter is not None)  # type: ignore[union-attr]
        conn = handler.conn
        assert conn is not None
        with trio.move_on_after(0.2):
            await conn.aclose()  # the peer never answers
        with trio.fail_after(5):
            assert await settle(lambda: bool(handler.endings))
            assert (await peer.recv_frame()).opcode == CLOSE
            await peer.expect_eof()
        await peer.aclose()
    assert len(handler.errors) == 1


class ClosesMidway(Hasher):
    """Reads all that was sent (``expect`` bytes), then closes from on_stream."""

    expect: int | None = None

    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        seen = 0
        while self.expect is None or seen < self.expect:
            seen += len(await stream.__anext__())
        await conn.aclose(1000)  # from its own task: waits until the connection ended


async def test_a_handler_closing_with_the_reads_lent_lets_the_reader_see_the_answer(
        loans: list[int]) -> None:
    # The handler holds the reads (it read everything sent, nothing more comes) and
    # awaits aclose(): the reader must get the reads back to see the peer's answer,
    # or the close would end in a timeout.
    handler = ClosesMidway()
    async with running_server(handler, Config(close_timeout=1)) as port:
        peer, _ = await ws_connect(port)
        sent = await lend(peer, loans)
        handler.expect = len(sent) + 10
        await peer.send(CONT, b"y" * 10, fin=False)
        with trio.fail_after(10):
            close = await peer.recv_close()
            assert close.close_code == 1000
            await peer.send_close(1000)
            await peer.expect_eof()
            assert await settle(lambda: bool(handler.endings))
        await peer.aclose()
    assert handler.endings == [("close", 1000)]


class PingsWithTheReads(ClosesMidway):
    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        seen = 0
        while self.expect is None or seen < self.expect:
            piece = await stream.__anext__()
            digest.update(piece)
            seen += len(piece)
        await conn.ping(b"holding")  # the reader must read the pong


async def test_a_handler_pinging_with_the_reads_lent_gets_its_pong(
        loans: list[int]) -> None:
    handler = PingsWithTheReads()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        sent = await lend(peer, loans)
        handler.expect = len(sent) + 10
        await peer.send(CONT, b"y" * 10, fin=False)
        with trio.fail_after(10):
            assert (await peer.recv_frame()).opcode == PING
            await peer.send(PONG, b"holding")
            await peer.send(CONT, b"", fin=True)
            answer = await peer.recv_frame()
        assert answer.payload.decode() == hashlib.sha256(sent + b"y" * 10).hexdigest()
        await peer.send_close(1000)
        await peer.recv_close()
        await peer.aclose()
    assert handler.errors == []


class Counts(Hasher):
    size = 0

    async def before(self, conn: Conn, stream: MessageStream, digest: Any) -> None:
        async for piece in stream:
            self.size += len(piece)


async def test_a_deadline_set_from_another_task_recalls_the_reads(
        loans: list[int]) -> None:
    handler = Counts()
    async with running_server(handler) as port:
        peer, _ = await ws_connect(port)
        sent = await lend(peer, loans)
        # everything sent was read: the handler waits on the socket with the reads
        assert await settle(lambda: handler.size == len(sent) and handler.lent() is not None)
        await trio.testing.wait_all_tasks_blocked()
        assert handler.lent()._waiter is not None  # type: ignore[union-attr]
        assert handler.conn is not None
        handler.conn.set_deadline(trio.current_time() + 0.2)  # not from the handler
        with trio.fail_after(10):
            assert (await peer.recv_close()).close_code == 1011
        await peer.aclose()
        assert await settle(lambda: bool(handler.endings))
    assert isinstance(handler.errors[0].__cause__, gws.WebSocketTimeoutError)
