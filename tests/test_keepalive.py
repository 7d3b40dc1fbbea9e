"""Keepalive (``Config.ping_interval`` / ``ping_timeout``) and ``conn.set_deadline``.

Everything runs over memory streams on the autojump clock, so every time below is
exact virtual time and the tests cost no real time.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import Config, Conn, Message, Opcode, WebSocketTimeoutError

import helpers
from helpers import CLOSE, PING, PONG, Peer, Recorder, server_conn_pair

pytestmark = pytest.mark.filterwarnings("error")


async def answer_pings(peer: Peer, log: list[tuple[float, int, bytes]], *,
                       answer: bool = True) -> None:
    """Read frames until a close; answer each ping with a pong unless told not to."""
    while True:
        frame = await peer.recv_frame()
        log.append((trio.current_time(), frame.opcode, frame.payload))
        if frame.opcode == PING and answer:
            await peer.send(PONG, frame.payload)
        if frame.opcode == CLOSE:
            return


async def test_keepalive_pings_and_an_answering_peer_stays(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(ping_interval=10, ping_timeout=4))
    log: list[tuple[float, int, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        start = trio.current_time()
        nursery.start_soon(answer_pings, peer, log)
        await trio.sleep(105)
        assert rec.endings() == [] and not conn.close_sent
        pings = [t - start for t, opcode, _ in log if opcode == PING]
        assert pings == pytest.approx([10.0 * i for i in range(1, 11)])
        assert len(rec.of("pong")) == 10
        await conn.write_close(1000)
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_close(1000)
        assert await peer.expect_eof() == b""
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_keepalive_fails_a_silent_peer_with_1011(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(ping_interval=10, ping_timeout=4,
                                              close_timeout=2))
    log: list[tuple[float, int, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        start = trio.current_time()
        await answer_pings(peer, log, answer=False)  # reads, never answers
        assert [(t - start, opcode) for t, opcode, _ in log] == [(10, PING), (14, CLOSE)]
        close_code = int.from_bytes(log[-1][2][:2], "big")
        assert close_code == 1011
        [ending] = await rec.wait_endings()
        await peer.aclose()
    assert ending.kind == "error" and isinstance(ending.data, WebSocketTimeoutError)
    assert isinstance(ending.data, TimeoutError)
    assert rec.kinds() == ["open", "error"]


async def test_keepalive_fails_a_peer_that_stopped_reading(autojump_clock: Any) -> None:
    """The ping cannot even be sent (it waits behind a queued message the peer never
    reads): ping_timeout covers that wait too, or a dead peer would stay forever."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(ping_interval=10, ping_timeout=4,
                                              close_timeout=2), lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        start = trio.current_time()
        conn.write_async(Opcode.TEXT, "never read")
        with trio.fail_after(100):
            [ending] = await rec.wait_endings()
        # Ping due at 10, no pong by 14; the close frame cannot go out either (2 s).
        assert trio.current_time() - start == pytest.approx(16)
        await peer.aclose()
    assert isinstance(ending.data, WebSocketTimeoutError)
    assert conn.closed


async def test_keepalive_fails_a_peer_whose_buffer_is_full(autojump_clock: Any) -> None:
    """Same, when the ping itself is stuck in the transport: the connection still ends
    within ping_timeout + close_timeout."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(ping_interval=10, ping_timeout=4,
                                              close_timeout=2), lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        start = trio.current_time()
        with trio.fail_after(100):
            [ending] = await rec.wait_endings()
        assert trio.current_time() - start <= 16
        await peer.aclose()
    assert ending.kind == "error"  # the ping was cut short mid-frame: the stream is unusable
    assert conn.closed


async def test_keepalive_tolerates_a_late_but_timely_pong(autojump_clock: Any) -> None:
    """A pong just inside ping_timeout keeps the connection; the next ping follows."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(ping_interval=10, ping_timeout=4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        for _ in range(3):
            frame = await peer.recv_frame()
            assert frame.opcode == PING
            await trio.sleep(3.9)
            await peer.send(PONG, frame.payload)
        assert rec.endings() == []
        await peer.send_close(1000)
        while (frame := await peer.recv_frame()).opcode != CLOSE:
            pass
        assert await peer.expect_eof() == b""
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_no_pings_without_ping_interval(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        with trio.move_on_after(10_000) as waited:
            await peer.recv_frame()
        assert waited.cancelled_caught
        await peer.send_close(1000)
        await peer.recv_close()
    assert [e.kind for e in rec.endings()] == ["close"]


# -- set_deadline: gws's SetDeadline heartbeat ---------------------------------------

HEARTBEAT = 5.0


class Heartbeat(Recorder):
    """Fail the connection unless something arrives every HEARTBEAT seconds."""

    async def on_open(self, conn: Conn) -> None:
        await super().on_open(conn)
        conn.set_deadline(trio.current_time() + HEARTBEAT)

    async def on_ping(self, conn: Conn, payload: bytes) -> None:
        conn.set_deadline(trio.current_time() + HEARTBEAT)
        await super().on_ping(conn, payload)

    async def on_message(self, conn: Conn, message: Message) -> None:
        await super().on_message(conn, message)
        if message.data == b"forever":
            conn.set_deadline(math.inf)
        else:
            conn.set_deadline(trio.current_time() + HEARTBEAT)


async def test_deadline_keeps_a_pinging_peer_and_fails_a_silent_one(autojump_clock: Any) -> None:
    rec = Heartbeat()
    conn, peer = server_conn_pair(rec, Config(close_timeout=2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        start = trio.current_time()
        for i in range(10):
            await trio.sleep(4)
            if i % 2:
                await peer.send(PING, b"beat")
                assert (await peer.recv_frame()).opcode == PONG
            else:
                await peer.send_text(b"tick")
        assert rec.endings() == []
        last = trio.current_time()
        assert last - start == pytest.approx(40)
        close = await peer.recv_close()  # now silent
        assert close.close_code == 1011
        assert trio.current_time() - last == pytest.approx(HEARTBEAT)
        [ending] = await rec.wait_endings()
        await peer.aclose()
    assert isinstance(ending.data, WebSocketTimeoutError)
    assert len(rec.of("ping")) == 5 and len(rec.of("message")) == 5


async def test_deadline_set_to_inf_is_cleared(autojump_clock: Any) -> None:
    rec = Heartbeat()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.sleep(4)
        await peer.send_text(b"forever")
        await trio.sleep(10_000)
        assert rec.endings() == []
        await peer.send_text(b"tick")  # a finite deadline again
        close = await peer.recv_close()
        assert close.close_code == 1011
        await peer.aclose()
        [ending] = await rec.wait_endings()
    assert isinstance(ending.data, WebSocketTimeoutError)


async def test_deadline_in_the_past_fails_at_once(autojump_clock: Any) -> None:
    class Impatient(Recorder):
        async def on_open(self, conn: Conn) -> None:
            await super().on_open(conn)
            conn.set_deadline(trio.current_time() - 1)

    rec = Impatient()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        start = trio.current_time()
        assert (await peer.recv_close()).close_code == 1011
        assert trio.current_time() == start
        await peer.aclose()
    assert isinstance(rec.endings()[0].data, WebSocketTimeoutError)


async def test_deadline_set_from_another_task_applies_to_an_idle_reader(
    autojump_clock: Any,
) -> None:
    """Conn is usable from any task: a deadline set while the reader already waits
    (with no deadline) must still end the connection in time."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        conn.set_deadline(start + 7)
        with trio.move_on_after(100):
            close = await peer.recv_close()
        assert close.close_code == 1011
        assert trio.current_time() - start == pytest.approx(7)
        await peer.aclose()
    assert isinstance(rec.endings()[0].data, WebSocketTimeoutError)


def socket_conn_pair(handler: Recorder) -> tuple[Conn, Peer]:
    conn, peer = helpers.socket_conn_pair(handler)
    assert conn._transport.raw is not None  # the reader's raw path is under test
    return conn, peer


@pytest.mark.parametrize("pair", [server_conn_pair, socket_conn_pair])
async def test_deadline_from_another_task_is_moved_while_the_reader_waits(
    autojump_clock: Any, pair: Any,
) -> None:
    """Pushed again before it passes, the later deadline holds (on a socket too)."""
    rec = Recorder()
    conn, peer = pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        conn.set_deadline(start + 7)
        await trio.sleep(5)
        conn.set_deadline(start + 12)
        with trio.fail_after(50):  # without the fix it would wait for ever
            close = await peer.recv_close()
        assert close.close_code == 1011
        assert trio.current_time() - start == pytest.approx(12)
        await peer.aclose()
    [ending] = rec.endings()
    assert isinstance(ending.data, WebSocketTimeoutError)
    assert "read deadline passed" in str(ending.data)


@pytest.mark.parametrize("pair", [server_conn_pair, socket_conn_pair])
async def test_deadline_from_another_task_then_data_then_cleared(
    autojump_clock: Any, pair: Any,
) -> None:
    """Data before the deadline takes it off the read scope: the next read carries it
    in a scope of its own, and clearing it from another task leaves nothing armed."""
    rec = Recorder()
    conn, peer = pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        conn.set_deadline(start + 7)
        await trio.sleep(3)
        await peer.send_text(b"in time")
        await trio.sleep(2)
        assert [m.data for m in rec.of("message")] == [b"in time"]
        conn.set_deadline(math.inf)
        await trio.sleep(100)
        assert rec.endings() == []
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        await peer.aclose()
    assert [e.kind for e in rec.endings()] == ["close"]


@pytest.mark.parametrize("pair", [server_conn_pair, socket_conn_pair])
async def test_deadline_from_another_task_cleared_while_the_reader_waits(
    autojump_clock: Any, pair: Any,
) -> None:
    rec = Recorder()
    conn, peer = pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        conn.set_deadline(trio.current_time() + 7)
        await trio.sleep(1)
        conn.set_deadline(math.inf)
        await trio.sleep(100)
        assert rec.endings() == []
        await peer.send_text(b"still here")
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        await peer.aclose()
    assert [m.data for m in rec.of("message")] == [b"still here"]
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_deadline_from_another_task_on_a_socket(autojump_clock: Any) -> None:
    """The idle reader on a real socket (the raw path) fails at the deadline."""
    rec = Recorder()
    conn, peer = socket_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        conn.set_deadline(start + 7)
        with trio.fail_after(50):
            assert (await peer.recv_close()).close_code == 1011
        assert trio.current_time() - start == pytest.approx(7)
        await peer.aclose()
    [ending] = rec.endings()
    assert "read deadline passed" in str(ending.data)


async def test_close_timeout_is_still_told_apart_from_a_read_deadline(
    autojump_clock: Any,
) -> None:
    """A read deadline later than the closing one: the closing one is what passed."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(close_timeout=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        conn.set_deadline(start + 50)
        await conn.write_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        assert await peer.expect_eof() == b""  # no close frame back
        assert trio.current_time() - start == pytest.approx(3)
        await peer.aclose()
    [ending] = rec.endings()
    assert "no close frame" in str(ending.data)


async def test_deadline_pushed_by_parallel_handlers(autojump_clock: Any) -> None:
    """With parallel handling on_message runs in its own task: pushing the deadline
    from there works too."""
    rec = Heartbeat()
    conn, peer = server_conn_pair(rec, Config(parallel_enabled=True, parallel_limit=2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        for _ in range(5):
            await trio.sleep(4)
            await peer.send_text(b"tick")
        assert rec.endings() == []
        last = trio.current_time()
        assert (await peer.recv_close()).close_code == 1011
        assert trio.current_time() - last == pytest.approx(HEARTBEAT)
        await peer.aclose()
    assert isinstance(rec.endings()[0].data, WebSocketTimeoutError)
    assert [m.data for m in rec.of("message")] == [b"tick"] * 5

