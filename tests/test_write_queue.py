"""``write_async`` (the bounded, ordered write queue) and ``writev``.

Conns run over in-memory streams; a hand-driven Peer parses what they send with the
independent parser of tests/helpers. ``lockstep`` streams make ``send_all`` wait until
the peer reads, which is how a peer that does not read is simulated. Timeouts run on
pytest-trio's ``autojump_clock``.
"""

from __future__ import annotations

import array
import logging
import random
import struct
from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import (
    Broadcaster,
    Config,
    Conn,
    ConnectionClosedError,
    ConnectionClosedOK,
    Headers,
    Opcode,
    ProtocolError,
    Request,
    WriteQueueFullError,
)
from trio_gws._deflate import DeflateParams

from helpers import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    RSV1,
    TEXT,
    Inflater,
    MessageReader,
    Peer,
    Recorder,
    build_frame,
    close_payload,
    count_tasks,
    drainer_count,
    make_conn,
    server_conn_pair,
)

pytestmark = pytest.mark.filterwarnings("error")


async def finish_clean(conn: Conn, peer: Peer, rec: Recorder) -> None:
    """Close from our side, answer as the peer, and require a clean ending.

    write_close runs in its own task: on a lockstep stream it returns only once the
    peer has read the frame.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.write_close, 1000)
        while True:
            frame = await peer.recv_frame()
            if frame.opcode == CLOSE:
                break
    await peer.send_close(1000)
    assert await peer.expect_eof() == b""
    [ending] = await rec.wait_endings()
    assert ending.kind == "close", rec.events


# -- ordering ------------------------------------------------------------------------


async def test_one_task_interleaving_keeps_call_order() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        conn.write_async(Opcode.TEXT, "a1")
        conn.write_async(Opcode.BINARY, b"a2")
        await conn.write_message(Opcode.TEXT, "m1")  # the queue has work: m1 waits its turn
        await conn.writev(Opcode.BINARY, b"v", bytearray(b"1"), memoryview(b"!v2")[1:])
        conn.write_async(Opcode.TEXT, "a3")
        await conn.write_ping(b"p1")
        conn.write_async(Opcode.TEXT, "a4")
        await conn.write_pong(b"q1")
        await conn.write_string("s1")
        conn.write_async(Opcode.BINARY, bytearray(b"a5"))
        await conn.write_close(1000, b"bye")
        got = [await reader.next() for _ in range(11)]
        assert got == [
            (TEXT, b"a1"), (BINARY, b"a2"), (TEXT, b"m1"), (BINARY, b"v1v2"), (TEXT, b"a3"),
            (PING, b"p1"), (TEXT, b"a4"), (PONG, b"q1"), (TEXT, b"s1"), (BINARY, b"a5"),
            (CLOSE, close_payload(1000, b"bye")),
        ]
        assert all(not f.masked and f.fin and f.rsv == 0 for f in reader.frames)
        await peer.send_close(1000)
        assert await peer.expect_eof() == b""
    assert [e.kind for e in rec.endings()] == ["close"]
    assert drainer_count() == 0


@pytest.mark.parametrize("seed", range(8))
async def test_several_tasks_interleaving_keeps_call_order(seed: int, autojump_clock: Any) -> None:
    """Random mixes of every kind of write from several tasks, against a slow reader.

    Each call is recorded when it is made; the wire must carry exactly the calls made
    before ``write_close``, in call order, then the close frame; later calls raise.
    """
    rnd = random.Random(seed)
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    calls: list[tuple[int, bytes]] = []  # (opcode, payload) in call order
    refused: list[tuple[int, bytes]] = []
    close_index: list[int] = []

    async def writer(name: str, close_at: int | None) -> None:
        for i in range(20):
            if i == close_at:
                calls.append((CLOSE, close_payload(1001, b"done")))
                close_index.append(len(calls) - 1)
                await conn.write_close(1001, b"done")
                continue
            label = f"{name}.{i}".encode()
            kind = rnd.choice(["async", "async", "message", "writev", "ping", "pong"])
            opcode = {"ping": PING, "pong": PONG, "message": TEXT}.get(kind, BINARY)
            entry = (opcode, label)
            calls.append(entry)
            try:
                if kind == "async":
                    conn.write_async(Opcode.BINARY, label)
                elif kind == "message":
                    await conn.write_message(Opcode.TEXT, label)
                elif kind == "writev":
                    await conn.writev(Opcode.BINARY, label[:1], label[1:3], label[3:])
                elif kind == "ping":
                    await conn.write_ping(label)
                else:
                    await conn.write_pong(label)
            except ConnectionClosedOK:
                # Only ever refused at the call, and only once closing began.
                assert calls[-1] == entry and close_index
                calls.pop()
                refused.append(entry)
            if rnd.random() < 0.4:
                await trio.sleep(0)

    received: list[tuple[int, bytes]] = []

    async def slow_peer() -> None:
        reader = MessageReader(peer)
        while True:
            if rnd.random() < 0.5:
                await trio.sleep(rnd.random() / 100)
            opcode, payload = await reader.next()
            received.append((opcode, payload))
            if opcode == CLOSE:
                await peer.send_close(1001)
                assert await peer.expect_eof() == b""
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        nursery.start_soon(slow_peer)
        async with trio.open_nursery() as writers:
            for n in range(4):
                writers.start_soon(writer, f"w{n}", rnd.randrange(12, 20) if n == 0 else None)
    assert received == calls
    assert len(received) > 12 and received[-1][0] == CLOSE
    assert [e.kind for e in rec.endings()] == ["close"]
    assert conn.queued == 0


async def test_write_async_before_listen_is_drained_once_listen_runs(autojump_clock: Any) -> None:
    class OpenWriter(Recorder):
        async def on_open(self, conn: Conn) -> None:
            await super().on_open(conn)
            await conn.write_message(Opcode.TEXT, "from on_open")

    rec = OpenWriter()
    conn, peer = server_conn_pair(rec)
    conn.write_async(Opcode.TEXT, "q1")
    reused = bytearray(b"q2")
    conn.write_async(Opcode.BINARY, reused)
    reused[:] = b"XX"  # the caller may reuse its buffer once write_async returns
    assert conn.queued == 2
    assert drainer_count() == 0
    done: list[str] = []

    async def direct() -> None:
        await conn.write_message(Opcode.TEXT, "direct")
        done.append("direct")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(direct)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # a direct write does not overtake the queue...
        with trio.move_on_after(5) as waited:
            await peer.recv_frame()  # ...and nothing is sent before listen() runs
        assert waited.cancelled_caught
        nursery.start_soon(conn.listen)
        reader = MessageReader(peer)
        got = [await reader.next() for _ in range(4)]
        assert got == [(TEXT, b"q1"), (BINARY, b"q2"), (TEXT, b"direct"),
                       (TEXT, b"from on_open")]
        assert done == ["direct"] and conn.queued == 0
        await finish_clean(conn, peer, rec)


# -- the bound and its policy --------------------------------------------------------


async def test_queue_bound_fails_the_connection_with_1008(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(write_queue_size=4, close_timeout=3),
                                  lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        conn.write_async(Opcode.TEXT, "m0")
        await trio.testing.wait_all_tasks_blocked()  # m0 is on its way; the peer reads nothing
        assert conn.queued == 0
        for i in range(1, 5):
            conn.write_async(Opcode.TEXT, f"m{i}")
        assert conn.queued == 4
        with pytest.raises(WriteQueueFullError) as info:
            conn.write_async(Opcode.TEXT, "m5")
        assert "write queue full (4 messages)" in str(info.value)
        assert "4 queued message(s) dropped" in str(info.value)
        assert info.value.close_code == 1008
        assert conn.queued == 0
        # The connection is failed: it accepts nothing more.
        with pytest.raises(ConnectionClosedError):
            conn.write_async(Opcode.TEXT, "m6")
        assert Broadcaster(Opcode.TEXT, "m7").broadcast_all([conn]) == 0
        with pytest.raises(ConnectionClosedError):
            await conn.write_message(Opcode.TEXT, "m8")
        # When the peer reads at last it gets what was on its way, then 1008.
        assert (await peer.recv_frame()).payload == b"m0"
        close = await peer.recv_close()
        assert close.close_code == 1008
        assert b"write queue full" in close.close_reason
        assert await peer.expect_eof() == b""
        await peer.aclose()
    [ending] = rec.endings()
    assert ending.kind == "error" and ending.data is info.value
    assert rec.kinds() == ["open", "error"]
    assert conn.closed and conn.queued == 0


async def test_byte_bound_fails_the_connection_with_1008(autojump_clock: Any) -> None:
    """write_buffer_limit bounds bytes, so 1,024 queued messages of 1 MiB each cannot
    pile up behind one slow reader."""
    rec = Recorder()
    config = Config(write_buffer_limit=10_000, close_timeout=3)
    conn, peer = server_conn_pair(rec, config, lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        conn.write_nowait(Opcode.BINARY, b"0" * 100)
        await trio.testing.wait_all_tasks_blocked()  # on its way; the peer reads nothing
        # A message larger than the bound passes when nothing else waits...
        conn.write_nowait(Opcode.BINARY, b"1" * 20_000)
        assert conn.queued == 1
        # ...but nothing may join it past the bound.
        with pytest.raises(WriteQueueFullError) as info:
            conn.write_nowait(Opcode.BINARY, b"2" * 10)
        assert "20000 bytes waiting, 10 more past 10000" in str(info.value)
        assert "1 queued message(s) dropped" in str(info.value)
        assert info.value.close_code == 1008
        assert (await peer.recv_frame()).payload == b"0" * 100
        assert (await peer.recv_close()).close_code == 1008
        await peer.aclose()
    [ending] = rec.endings()
    assert ending.data is info.value


async def test_byte_bound_counts_what_drained(autojump_clock: Any) -> None:
    """Bytes leave the count as their frames are sent: a reader that keeps up never
    meets the bound, however much goes through."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(write_buffer_limit=3_000))
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        for i in range(100):
            conn.write_nowait(Opcode.BINARY, bytes([i]) * 1_000)
            conn.write_nowait(Opcode.BINARY, bytes([i]) * 1_000)
            for _ in range(2):
                assert await reader.next() == (BINARY, bytes([i]) * 1_000)
        assert conn._writer._queued_bytes == 0
        await finish_clean(conn, peer, rec)


def test_write_buffer_limit_is_validated() -> None:
    with pytest.raises(ValueError, match="write_buffer_limit"):
        Config(write_buffer_limit=0)
    assert Config().write_buffer_limit == 4 * 1024 * 1024


async def test_queue_bound_with_a_peer_that_never_reads(autojump_clock: Any) -> None:
    """The policy still ends the connection within close_timeout if the peer is gone."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(write_queue_size=2, close_timeout=3),
                                  lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        start = trio.current_time()
        sent = 0
        with pytest.raises(WriteQueueFullError):
            while True:
                conn.write_async(Opcode.BINARY, b"x" * 100)
                sent += 1
                await trio.testing.wait_all_tasks_blocked()
        assert sent == 3  # one on its way, two queued
        [ending] = await rec.wait_endings()
        assert isinstance(ending.data, WriteQueueFullError)
        assert trio.current_time() - start == pytest.approx(3)
    await peer.aclose()


async def test_transport_failure_with_queued_messages_says_how_many(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(write_queue_size=10), lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        for i in range(4):
            conn.write_async(Opcode.TEXT, f"m{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert conn.queued == 3  # m0 is on its way
        with caplog.at_level(logging.WARNING, logger="trio_gws"):
            await peer.aclose()  # the peer vanishes
            [ending] = await rec.wait_endings()
    assert ending.kind == "error" and isinstance(ending.data, ConnectionClosedError)
    assert "3 queued message(s) not sent" in str(ending.data)
    assert any("3 queued message(s) unsent" in r.getMessage() for r in caplog.records)
    assert conn.queued == 0


class BreakableStream(trio.abc.Stream):
    """A stream whose sends wait at a gate, then fail: a connection reset while
    writing, with the receive side still open (the reader notices nothing)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends = 0
        self.gate = trio.Event()

    async def send_all(self, data: Any) -> None:
        self.sends += 1
        await self.gate.wait()
        raise trio.BrokenResourceError("connection reset by peer")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_write_failure_with_queued_messages_says_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    ours, theirs = trio.testing.memory_stream_pair()
    stream = BreakableStream(ours)
    conn = Conn(stream, rec, Config(), is_server=True, request=Request("GET", "/", Headers()))
    waiter_errors: list[BaseException] = []

    async def direct() -> None:
        try:
            await conn.write_message(Opcode.TEXT, "direct")
        except ConnectionClosedError as exc:
            waiter_errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            await rec.wait_kind("open")
            for i in range(4):
                conn.write_async(Opcode.TEXT, f"m{i}")
            nursery.start_soon(direct)
            await trio.testing.wait_all_tasks_blocked()
            assert stream.sends == 1 and conn.queued == 3
            with caplog.at_level(logging.WARNING, logger="trio_gws"):
                stream.gate.set()
                [ending] = await rec.wait_endings()
    assert stream.sends == 1  # nothing more was tried on the broken stream
    assert isinstance(ending.data, ConnectionClosedError)
    assert "3 queued message(s) not sent" in str(ending.data)
    assert any("3 queued message(s) unsent" in r.getMessage() for r in caplog.records)
    assert len(waiter_errors) == 1  # the direct writer waiting in the queue is told too
    await trio.aclose_forcefully(theirs)


async def test_protocol_error_with_queued_messages_says_how_many(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(close_timeout=2), lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        for i in range(5):
            conn.write_async(Opcode.TEXT, f"m{i}")
        await trio.testing.wait_all_tasks_blocked()
        with caplog.at_level(logging.WARNING, logger="trio_gws"):
            await peer.send(TEXT, b"unmasked", mask=False)  # 1002, but we cannot say so
            [ending] = await rec.wait_endings()
        await peer.aclose()
    assert isinstance(ending.data, ProtocolError)
    assert "4 queued message(s) not sent" in str(ending.data)
    assert any("4 queued message(s) unsent" in r.getMessage() for r in caplog.records)


async def test_write_async_after_close_raises() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        conn.write_async(Opcode.TEXT, "before")
        await conn.write_close(1000)
        with pytest.raises(ConnectionClosedOK):
            conn.write_async(Opcode.TEXT, "after")
        with pytest.raises(ConnectionClosedOK):
            Broadcaster(Opcode.TEXT, "after").broadcast(conn)
        assert Broadcaster(Opcode.TEXT, "after").broadcast_all([conn]) == 0
        assert (await peer.recv_frame()).payload == b"before"
        assert (await peer.recv_close()).close_code == 1000
        await peer.send_close(1000, b"ok")
        assert await peer.expect_eof() == b""
    assert conn.closed
    with pytest.raises(ConnectionClosedOK) as info:
        conn.write_nowait(Opcode.TEXT, "much later")
    assert info.value.code == 1000 and info.value.reason == b"ok"
    with pytest.raises(ConnectionClosedOK):
        await conn.write_message(Opcode.TEXT, "much later")
    with pytest.raises(ValueError):
        conn.write_async(Opcode.PING, b"not a message opcode")
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_write_async_after_the_peer_closed_raises() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_close(1001, b"away")
        assert (await peer.recv_close()).close_code == 1001
        assert await peer.expect_eof() == b""
    with pytest.raises(ConnectionClosedOK) as info:
        conn.write_async(Opcode.TEXT, "late")
    assert (info.value.code, info.value.reason) == (1001, b"away")


# -- cancellation and the drain task -------------------------------------------------


async def test_direct_writer_cancelled_in_the_queue_is_never_sent(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    outcome: dict[str, bool] = {}
    scopes: list[trio.CancelScope] = []

    async def direct() -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await conn.write_message(Opcode.TEXT, "never")
            outcome["returned"] = True
        outcome["cancelled"] = scope.cancelled_caught

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        conn.write_async(Opcode.TEXT, "first")
        await trio.testing.wait_all_tasks_blocked()  # "first" waits for the peer to read
        nursery.start_soon(direct)
        await trio.testing.wait_all_tasks_blocked()
        conn.write_async(Opcode.TEXT, "second")
        scopes[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == {"cancelled": True}
        assert (await peer.recv_frame()).payload == b"first"
        assert (await peer.recv_frame()).payload == b"second"
        nursery.start_soon(conn.write_ping, b"then")
        assert (await peer.recv_frame()).payload == b"then"
        await finish_clean(conn, peer, rec)


async def test_drain_task_exists_only_while_the_queue_has_work(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await trio.testing.wait_all_tasks_blocked()
        baseline = count_tasks()
        assert drainer_count() == 0
        for i in range(3):
            conn.write_async(Opcode.TEXT, f"m{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert drainer_count() == 1 and count_tasks() == baseline + 1
        for i in range(3):
            assert (await peer.recv_frame()).payload == f"m{i}".encode()
        await trio.testing.wait_all_tasks_blocked()
        assert drainer_count() == 0 and count_tasks() == baseline
        # A direct write on an empty queue is sent by its caller: no extra task.
        nursery.start_soon(conn.write_message, Opcode.TEXT, "direct")
        await trio.testing.wait_all_tasks_blocked()
        assert drainer_count() == 0 and count_tasks() == baseline + 1  # just the caller
        assert (await peer.recv_frame()).payload == b"direct"
        # Queue again: a new drain task comes and goes.
        conn.write_async(Opcode.TEXT, "again")
        await trio.testing.wait_all_tasks_blocked()
        assert drainer_count() == 1
        assert (await peer.recv_frame()).payload == b"again"
        await trio.testing.wait_all_tasks_blocked()
        assert drainer_count() == 0 and count_tasks() == baseline
        await finish_clean(conn, peer, rec)


async def test_listen_cancelled_while_another_task_holds_the_writer() -> None:
    """An app task outside listen() is stuck writing to a peer that does not read, the
    queue has work, and listen() is cancelled: listen() must still end promptly (the
    drain task must not be respawned over and over in the cancelled nursery)."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    with trio.fail_after(5):  # real clock: a busy loop would never let virtual time pass
        async with trio.open_nursery() as outer:
            listen_scope = trio.CancelScope()

            async def run_listen() -> None:
                with listen_scope:
                    await conn.listen()

            stuck_errors: list[Exception] = []

            async def stuck_writer() -> None:
                try:
                    await conn.write_message(Opcode.TEXT, "stuck")
                except ConnectionClosedError as exc:
                    stuck_errors.append(exc)

            outer.start_soon(run_listen)
            await rec.wait_kind("open")
            outer.start_soon(stuck_writer)
            await trio.testing.wait_all_tasks_blocked()
            conn.write_async(Opcode.TEXT, "queued")
            await trio.testing.wait_all_tasks_blocked()
            listen_scope.cancel()
            [ending] = await rec.wait_endings()
    assert isinstance(ending.data, ConnectionClosedError)
    assert "1 queued message(s) not sent" in str(ending.data)
    assert len(stuck_errors) == 1  # the stream was closed under it
    assert conn.closed


async def test_queued_direct_write_cut_short_is_not_reported_as_sent() -> None:
    """A direct write that joined the queue and was being sent when the connection was
    torn down must raise, as it would have had its own task been sending it."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    outcome: list[object] = []

    async def direct() -> None:
        try:
            await conn.write_message(Opcode.BINARY, b"w" * 1000)
        except ConnectionClosedError as exc:
            outcome.append(exc)
        else:
            outcome.append("returned")

    with trio.fail_after(5):
        async with trio.open_nursery() as outer:
            listen_scope = trio.CancelScope()

            async def run_listen() -> None:
                with listen_scope:
                    await conn.listen()

            outer.start_soon(run_listen)
            await rec.wait_kind("open")
            conn.write_async(Opcode.TEXT, "m0")
            outer.start_soon(direct)
            await trio.testing.wait_all_tasks_blocked()
            assert (await peer.recv_frame()).payload == b"m0"
            await peer.recv_some(10)  # the drain is now sending the direct write
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == []
            listen_scope.cancel()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedError), outcome
    [ending] = rec.endings()
    assert ending.kind == "error"


# -- writev ----------------------------------------------------------------------------

BIG = 200_000

WRITEV_CASES: dict[str, tuple[Any, ...]] = {
    "none": (),
    "one-empty": (b"",),
    "mixed-types": (b"ab", bytearray(b"cd"), memoryview(b"-xyz")[1:]),
    "125": (b"a" * 100, b"b" * 25),
    "126": (b"a" * 100, b"", b"b" * 26),
    "65535": (b"a" * 65000, b"b" * 535),
    "65536": (b"a" * 65535, b"b"),
    "large-pieces": (b"head", bytes(range(256)) * 800, memoryview(bytearray(b"\x07") * BIG)),
}


@pytest.mark.parametrize("parts", WRITEV_CASES.values(), ids=WRITEV_CASES.keys())
async def test_writev_server_frames_are_byte_exact(parts: tuple[Any, ...]) -> None:
    rec = Recorder()
    conn, peer, recording = make_conn(rec, record=True)
    assert recording is not None
    joined = b"".join(parts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await conn.writev(Opcode.BINARY, *parts)
        await conn.writev(Opcode.TEXT, *parts)
        expected = build_frame(BINARY, joined, mask=False) + build_frame(TEXT, joined, mask=False)
        wire = await peer.recv_exactly(len(expected))
        assert wire == expected
        if len(joined) >= 65536:
            # Large messages go out piece by piece: the caller's buffers, not a copy.
            big = [p for p in parts if len(p) > 1000]
            assert all(any(sent is p for sent in recording.sent) for p in big)
        await finish_clean(conn, peer, rec)


@pytest.mark.parametrize("parts", WRITEV_CASES.values(), ids=WRITEV_CASES.keys())
async def test_writev_client_frames_are_masked(parts: tuple[Any, ...]) -> None:
    rec = Recorder()
    conn, peer, _ = make_conn(rec, is_server=False)
    joined = b"".join(parts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        keys = set()
        for _ in range(2):
            await conn.writev(Opcode.BINARY, *parts)
            header_len = 2 + (0 if len(joined) < 126 else 2 if len(joined) < 65536 else 8)
            wire = await peer.recv_exactly(header_len + 4 + len(joined))
            key = wire[header_len:header_len + 4]
            keys.add(key)
            assert wire == build_frame(BINARY, joined, mask=True, key=key)
        assert len(keys) == 2  # a fresh key per frame
        await conn.write_close(1000)
        assert (await peer.recv_close()).masked
        await peer.send(CLOSE, struct.pack("!H", 1000), mask=False)
        await peer.aclose()  # the client waits for the server to close the TCP
        await rec.wait_endings()


@pytest.mark.parametrize("is_server", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("no_takeover", [False, True], ids=["takeover", "no-takeover"])
async def test_writev_is_compressed_when_negotiated(is_server: bool, no_takeover: bool) -> None:
    params = DeflateParams(server_no_context_takeover=no_takeover,
                           client_no_context_takeover=no_takeover,
                           server_max_window_bits=12, client_max_window_bits=12)
    rec = Recorder()
    conn, peer, _ = make_conn(rec, Config(compress_threshold=512), is_server=is_server,
                              deflate=params)
    text = ("the quick brown fox jumps over the lazy dog " * 40).encode()
    inflater = Inflater()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await conn.writev(Opcode.TEXT, text[:100], bytearray(text[100:900]),
                          memoryview(text)[900:])
        await conn.write_message(Opcode.TEXT, text)
        await conn.writev(Opcode.BINARY, b"small", b" one")  # below the threshold
        await conn.writev(Opcode.TEXT, text[:600], text[600:])
        sizes = []
        for expected, compressed in ((text, True), (text, True), (b"small one", False),
                                     (text, True)):
            frame = await peer.recv_frame()
            assert frame.masked is (not is_server)
            assert bool(frame.rsv & RSV1) is compressed
            data = inflater.message(frame.payload) if compressed else frame.payload
            assert data == expected
            sizes.append(len(frame.payload))
        assert sizes[0] < len(text) // 4
        if not no_takeover:
            assert sizes[1] < sizes[0]  # the second copy refers to the first one
        await conn.write_close(1000)
        await peer.recv_close()
        await peer.send(CLOSE, struct.pack("!H", 1000), mask=is_server)
        await peer.aclose()
        await rec.wait_endings()


@pytest.mark.parametrize("is_server", [True, False], ids=["server", "client"])
async def test_wide_item_buffers_are_counted_in_bytes(is_server: bool) -> None:
    """A memoryview of 4-byte items has len() 3 but 12 bytes: frames count bytes."""
    wide = memoryview(array.array("i", [1, 2, 3]))
    grid = memoryview(bytearray(range(12))).cast("B", (3, 4))  # 2-D: len() is 3
    strided = memoryview(b"abcdefgh")[::2]  # not contiguous
    rec = Recorder()
    conn, peer, _ = make_conn(rec, is_server=is_server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await conn.write_message(Opcode.BINARY, wide)
        await conn.writev(Opcode.BINARY, wide, b"|", grid, strided)
        conn.write_async(Opcode.BINARY, wide)
        await conn.write_ping(wide)
        expected = [wide.tobytes(), wide.tobytes() + b"|" + grid.tobytes() + b"aceg",
                    wide.tobytes(), wide.tobytes()]
        for payload in expected:
            frame = await peer.recv_frame()
            assert frame.payload == payload
            assert frame.masked is (not is_server)
        nursery.cancel_scope.cancel()
