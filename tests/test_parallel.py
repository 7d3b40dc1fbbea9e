"""Parallel handling: ``Config(parallel_enabled=True, parallel_limit=N)``.

on_message runs in its own task, at most N at a time per connection; when N are in
flight the reader stops reading (back-pressure). The connection ends only after the
handlers: on a clean close their replies go out before our close reply; on an error
they are cancelled first. A handler that raises fails the connection with 1011 and
on_error gets the original exception. Deterministic on the autojump clock.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import Config, Conn, Message, Opcode, ProtocolError

from helpers import CLOSE, PING, PONG, TEXT, Recorder, build_frame, server_conn_pair

pytestmark = pytest.mark.filterwarnings("error")


class Parallel(Recorder):
    """Each message's handler waits for its gate (or sleeps ``delays[data]``), then
    replies ``<data> done``; a message starting with ``raise`` raises instead."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[bytes, trio.Event] = {}
        self.delays: dict[bytes, float] = {}
        self.active = 0
        self.max_active = 0

    def gate(self, data: bytes) -> trio.Event:
        return self.gates.setdefault(data, trio.Event())

    async def on_message(self, conn: Conn, message: Message) -> None:
        data = message.data
        self._record("start", conn, data)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if data in self.delays:
                await trio.sleep(self.delays[data])
            else:
                await self.gate(data).wait()
            if data.startswith(b"raise"):
                raise ValueError(f"handler for {data!r} failed")
            await conn.write_message(Opcode.TEXT, data + b" done")
            self._record("end", conn, data)
        except trio.Cancelled:
            self._record("cancelled", conn, data)
            raise
        finally:
            self.active -= 1


def parallel(limit: int, **kw: Any) -> Config:
    return Config(parallel_enabled=True, parallel_limit=limit, **kw)


async def test_handlers_run_concurrently_up_to_the_limit(autojump_clock: Any) -> None:
    rec = Parallel()
    conn, peer = server_conn_pair(rec, parallel(3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_raw(b"".join(build_frame(TEXT, f"m{i}".encode()) for i in range(5))
                            + build_frame(PING, b"after"))
        await trio.testing.wait_all_tasks_blocked()
        # Three in flight; the reader waits for room before looking at anything else.
        assert rec.of("start") == [b"m0", b"m1", b"m2"]
        assert rec.active == 3 and rec.of("ping") == []
        rec.gate(b"m1").set()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.of("start") == [b"m0", b"m1", b"m2", b"m3"]
        assert rec.of("end") == [b"m1"] and rec.of("ping") == []
        frame = await peer.recv_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"m1 done")
        for name in (b"m3", b"m0"):
            rec.gate(name).set()
        await trio.testing.wait_all_tasks_blocked()
        # m4 got a slot, then the reader went on to the ping.
        assert rec.of("start")[-1] == b"m4" and rec.of("ping") == [b"after"]
        replies = [await peer.recv_frame() for _ in range(3)]
        assert sorted(f.payload for f in replies) == [b"after", b"m0 done", b"m3 done"]
        assert next(f.opcode for f in replies if f.payload == b"after") == PONG
        rec.gate(b"m2").set()
        rec.gate(b"m4").set()
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_close(1000)
        frames = []
        while (frame := await peer.recv_frame()).opcode != CLOSE:
            frames.append(frame.payload)
        assert sorted(frames) == [b"m2 done", b"m4 done"]
        assert await peer.expect_eof() == b""
    assert rec.max_active == 3
    assert rec.kinds()[-1] == "close"


async def test_reader_stops_reading_while_the_limit_is_reached(autojump_clock: Any) -> None:
    rec = Parallel()
    conn, peer = server_conn_pair(rec, parallel(2), lockstep=True)
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        await peer.send_text(data)
        sent.append(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        for data in (b"a", b"b", b"c"):
            await send(data)
        nursery.start_soon(send, b"d")
        await trio.testing.wait_all_tasks_blocked()
        # Two in flight, "c" read and waiting for room: nobody reads the transport.
        assert sent == [b"a", b"b", b"c"] and rec.of("start") == [b"a", b"b"]
        rec.gate(b"a").set()
        await trio.testing.wait_all_tasks_blocked()
        assert (await peer.recv_frame()).payload == b"a done"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [b"a", b"b", b"c", b"d"] and rec.of("start") == [b"a", b"b", b"c"]
        for data in (b"b", b"c", b"d"):
            rec.gate(data).set()
        assert ({(await peer.recv_frame()).payload for _ in range(3)}
                == {b"b done", b"c done", b"d done"})
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        assert await peer.expect_eof() == b""
    assert rec.max_active == 2


async def test_clean_close_waits_for_handlers_and_sends_their_replies_first(
    autojump_clock: Any,
) -> None:
    rec = Parallel()
    rec.delays = {b"slow": 3.0, b"fast": 1.0, b"mid": 2.0}
    conn, peer = server_conn_pair(rec, parallel(4, close_timeout=10))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        start = trio.current_time()
        await peer.send_raw(build_frame(TEXT, b"slow") + build_frame(TEXT, b"fast")
                            + build_frame(TEXT, b"mid")
                            + build_frame(CLOSE, b"\x03\xe8bye"))
        frames = []
        while True:
            frame = await peer.recv_frame()
            frames.append((frame.opcode, frame.payload))
            if frame.opcode == CLOSE:
                break
        # The replies, in completion order, then our close reply.
        assert frames == [(TEXT, b"fast done"), (TEXT, b"mid done"), (TEXT, b"slow done"),
                          (CLOSE, b"\x03\xe8")]
        assert trio.current_time() - start == pytest.approx(3.0)
        assert await peer.expect_eof() == b""
    assert rec.kinds() == ["open", "start", "start", "start", "end", "end", "end", "close"]
    assert rec.endings()[0].data == (1000, b"bye")


async def test_error_cancels_in_flight_handlers_before_on_error(autojump_clock: Any) -> None:
    rec = Parallel()
    conn, peer = server_conn_pair(rec, parallel(4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"h1")
        await peer.send_text(b"h2")
        await trio.testing.wait_all_tasks_blocked()
        assert rec.active == 2
        await peer.send(TEXT, b"unmasked", mask=False)  # a protocol violation
        assert (await peer.recv_close()).close_code == 1002
        assert await peer.expect_eof() == b""
        await peer.aclose()
    assert rec.kinds() == ["open", "start", "start", "cancelled", "cancelled", "error"]
    assert isinstance(rec.endings()[0].data, ProtocolError)
    assert rec.active == 0


async def test_replies_to_messages_before_a_protocol_error_precede_the_close(
    autojump_clock: Any,
) -> None:
    """Autobahn 3.2 with the async agent: an echo, then a bad frame in the same read.
    The handler of the good message (not even started when the error is parsed)
    still answers before our close 1002."""
    rec = Parallel()
    rec.delays[b"good"] = 0.5
    conn, peer = server_conn_pair(rec, parallel(4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_raw(build_frame(TEXT, b"good") + build_frame(TEXT, b"bad", rsv=2))
        frame = await peer.recv_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"good done")
        assert (await peer.recv_close()).close_code == 1002
        assert await peer.expect_eof() == b""
        await peer.aclose()
    assert rec.kinds() == ["open", "start", "end", "error"]


async def test_handler_exception_fails_with_1011_and_reports_the_original(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Parallel()
    conn, peer = server_conn_pair(rec, parallel(4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"waits")
        await peer.send_text(b"raise now")
        await trio.testing.wait_all_tasks_blocked()
        with caplog.at_level(logging.ERROR, logger="trio_gws"):
            rec.gate(b"raise now").set()
            close = await peer.recv_close()
        assert close.close_code == 1011
        await peer.send_close(1011)
        assert await peer.expect_eof() == b""
    [ending] = rec.endings()
    assert ending.kind == "error"
    assert isinstance(ending.data, ValueError)
    assert str(ending.data) == "handler for b'raise now' failed"
    assert rec.of("cancelled") == [b"waits"]
    assert rec.kinds()[-2:] == ["cancelled", "error"]
    assert any(isinstance(r.exc_info[1], ValueError) for r in caplog.records if r.exc_info)


async def test_limit_one_handles_messages_one_at_a_time_in_order(autojump_clock: Any) -> None:
    rec = Parallel()
    rec.delays = {f"m{i}".encode(): float(5 - i) for i in range(5)}
    conn, peer = server_conn_pair(rec, parallel(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_raw(b"".join(build_frame(TEXT, f"m{i}".encode()) for i in range(5)))
        replies = [(await peer.recv_frame()).payload for _ in range(5)]
        await peer.send_close(1000)
        await peer.recv_close()
    assert replies == [f"m{i} done".encode() for i in range(5)]
    assert rec.max_active == 1


async def test_handlers_outliving_close_timeout_are_cancelled(autojump_clock: Any) -> None:
    """A handler that never finishes gets half of close_timeout; then our close reply
    (which the RFC requires) still goes out and the handler is cancelled."""
    rec = Parallel()
    conn, peer = server_conn_pair(rec, parallel(2, close_timeout=4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"forever")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await peer.send_close(1000)
        [ending] = await rec.wait_endings()
        assert trio.current_time() - start == pytest.approx(2)
        assert ending.kind == "close"
        close = await peer.recv_close()
        assert close.payload[:2] == b"\x03\xe8"
        await peer.aclose()
    assert rec.of("cancelled") == [b"forever"]
    assert rec.kinds()[-2:] == ["cancelled", ending.kind]
