"""Conn over in-memory streams: event order, back-pressure, endings, writes, timeouts.

Every test drives the peer by hand (tests/helpers.Peer) and parses what the Conn
sends with an independent frame parser. Timeouts run on pytest-trio's
``autojump_clock``, so they cost no real time.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_gws import (
    Config,
    ConnectionClosedError,
    ConnectionClosedOK,
    State,
    EventHandler,
    Message,
    Opcode,
    ProtocolError,
    WebSocketTimeoutError,
)

from helpers import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Peer,
    Recorder,
    build_frame,
    close_payload,
    parse_frame,
    server_conn_pair,
)

pytestmark = pytest.mark.filterwarnings("error")


def only_ending(rec: Recorder, kind: str) -> object:
    """Exactly one ending, of ``kind``, and it is the last event; returns its data."""
    endings = rec.endings()
    assert [e.kind for e in endings] == [kind], rec.events
    assert rec.events[-1] is endings[0], rec.events
    return endings[0].data


# -- order and back-pressure ---------------------------------------------------------


async def test_on_open_first_then_events_in_wire_order() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    # Everything is already buffered before listen() starts: on_open must still be first.
    await peer.send_raw(
        build_frame(TEXT, b"one")
        + build_frame(BINARY, b"\x00\xff")
        + build_frame(PING, b"p1")
        + build_frame(PONG, b"q1")
        + build_frame(TEXT, "h\u00e9".encode(), fin=False)
        + build_frame(PING, b"mid")
        + build_frame(CONT, b"ll", fin=False)
        + build_frame(CONT, b"o")
        + build_frame(BINARY, b"")
        + build_frame(CLOSE, close_payload(1000, b"done"))
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        assert (await peer.recv_frame()).payload == b"p1"
        assert (await peer.recv_frame()).payload == b"mid"
        echo = await peer.recv_close()
        assert echo.close_code == 1000
        assert await peer.expect_eof() == b""
    assert rec.kinds() == ["open", "message", "message", "ping", "pong", "ping",
                           "message", "message", "close"]
    msgs = rec.of("message")
    assert msgs[0] == Message(Opcode.TEXT, b"one") and msgs[0].text == "one"
    assert msgs[1].opcode is Opcode.BINARY and msgs[1].data == b"\x00\xff"
    assert msgs[2].opcode is Opcode.TEXT and msgs[2].text == "h\u00e9llo"
    assert msgs[3].opcode is Opcode.BINARY and msgs[3].data == b""
    assert rec.of("ping") == [b"p1", b"mid"]
    assert rec.of("pong") == [b"q1"]
    assert only_ending(rec, "close") == (1000, b"done")
    assert conn.closed


async def test_frames_delivered_one_byte_at_a_time() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    payload = bytes(range(256)) * 300  # 76800 bytes: a 64-bit length header
    wire = build_frame(BINARY, payload[:70000], fin=False) + build_frame(CONT, payload[70000:])
    wire += build_frame(TEXT, "\u20ac".encode())  # a 3-byte character split across reads
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        for i in range(0, 300):
            await peer.send_raw(wire[i:i + 1])
        await peer.send_raw(wire[300:-5])
        for i in range(len(wire) - 5, len(wire)):
            await peer.send_raw(wire[i:i + 1])
        await rec.wait_kind("message", 2)
        await peer.send_close(1000)
        await peer.recv_close()
    assert rec.of("message") == [Message(Opcode.BINARY, payload),
                                 Message(Opcode.TEXT, "\u20ac".encode())]
    assert rec.of("message")[1].text == "\u20ac"


class SlowHandler(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
        await super().on_message(conn, message)
        if message.data == b"slow":
            await self.release.wait()
            self._record("slow-done", conn)


async def test_callback_is_awaited_before_the_next_frame_is_parsed() -> None:
    rec = SlowHandler()
    conn, peer = server_conn_pair(rec)
    pongs: list[bytes] = []

    async def read_peer() -> None:
        while True:
            frame = await peer.recv_frame()
            if frame.opcode == CLOSE:
                return
            pongs.append(frame.payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        nursery.start_soon(read_peer)
        # Both frames arrive in one read: the second must wait for the first's callback.
        await peer.send_raw(build_frame(TEXT, b"slow") + build_frame(PING, b"later")
                            + build_frame(TEXT, b"next"))
        await trio.testing.wait_all_tasks_blocked()
        assert rec.kinds() == ["open", "message"]
        assert pongs == []  # not even the ping was looked at
        rec.release.set()
        await rec.wait_kind("message", 2)
        await peer.send_close(1000)
    assert rec.kinds() == ["open", "message", "slow-done", "ping", "message", "close"]
    assert pongs == [b"later"]


async def test_slow_handler_applies_back_pressure_to_the_transport() -> None:
    rec = SlowHandler()
    conn, peer = server_conn_pair(rec, lockstep=True)
    sent_second = trio.Event()

    async def send_second() -> None:
        await peer.send_text(b"second")
        sent_second.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"slow")
        nursery.start_soon(send_second)
        await trio.testing.wait_all_tasks_blocked()
        # The reader is parked in on_message, so nobody reads the socket.
        assert not sent_second.is_set()
        assert rec.kinds() == ["open", "message"]
        rec.release.set()
        await sent_second.wait()
        await rec.wait_kind("message", 2)
        await peer.send_close(1000)
        await peer.recv_close()
    assert [m.data for m in rec.of("message")] == [b"slow", b"second"]


# -- ping / pong -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"abc", bytes(range(125))])
async def test_default_on_ping_answers_with_the_same_payload(payload: bytes) -> None:
    conn, peer = server_conn_pair(EventHandler())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(PING, payload)
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.payload, pong.fin, pong.masked) == (PONG, payload, True, False)
        await peer.send_close(1000)
        await peer.recv_close()


async def test_on_pong_receives_payload_and_write_ping_pong() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_ping(b"are you there")
        await conn.write_pong(b"heartbeat")
        ping = await peer.recv_frame()
        pong = await peer.recv_frame()
        assert (ping.opcode, ping.payload) == (PING, b"are you there")
        assert (pong.opcode, pong.payload) == (PONG, b"heartbeat")
        await peer.send(PONG, b"are you there")
        await rec.wait_kind("pong")
        await peer.send_close(1000)
    assert rec.of("pong") == [b"are you there"]


# -- close handshake ---------------------------------------------------------------


@pytest.mark.parametrize(
    "code, reason, echoed, reported",
    [
        (4000, "bye \u2603".encode(), close_payload(4000), (4000, "bye \u2603".encode())),
        (1000, b"", close_payload(1000), (1000, b"")),
        (None, b"", b"", (1005, b"")),
    ],
)
async def test_close_started_by_peer(code, reason, echoed, reported) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_close(code, reason)
        frame = await peer.recv_close()
        assert frame.payload == echoed
        assert not frame.masked
        assert await peer.expect_eof() == b""  # the server closes the stream
    assert only_ending(rec, "close") == reported
    assert conn.closed


async def test_close_started_by_us() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_close(4001, "ours")
        assert conn.close_sent
        frame = await peer.recv_close()
        assert (frame.close_code, frame.close_reason) == (4001, b"ours")
        await trio.testing.wait_all_tasks_blocked()
        assert rec.endings() == []  # still waiting for the peer's answer
        # Data the peer sent before its close is still delivered.
        await peer.send_text("late")
        await peer.send_close(1000, b"ack")
        # We already sent our close: no second close frame, just the end of the stream.
        assert await peer.expect_eof() == b""
    assert rec.kinds() == ["open", "message", "close"]
    assert only_ending(rec, "close") == (1000, b"ack")


async def test_aclose_from_another_task_waits_for_the_handshake() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    returned = trio.Event()

    async def closer() -> None:
        await conn.aclose(1001, "going away")
        rec._record("aclose-returned", conn)
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        nursery.start_soon(closer)
        frame = await peer.recv_close()
        assert (frame.close_code, frame.close_reason) == (1001, b"going away")
        await trio.testing.wait_all_tasks_blocked()
        assert not returned.is_set()
        await peer.send_close(1001)
    assert rec.kinds() == ["open", "close", "aclose-returned"]
    assert rec.of("close") == [(1001, b"")]
    assert conn.closed


async def test_aclose_from_inside_a_handler() -> None:
    class Closer(Recorder):
        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            await super().on_message(conn, message)
            await conn.aclose(1000, "bye")
            self._record("aclose-returned", conn)

    rec = Closer()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text("please close")
        frame = await peer.recv_close()
        assert (frame.close_code, frame.close_reason) == (1000, b"bye")
        await rec.wait_kind("aclose-returned")  # returned without deadlocking the reader
        await peer.send_close(1000, b"ok")
    assert rec.kinds() == ["open", "message", "aclose-returned", "close"]
    assert only_ending(rec, "close") == (1000, b"ok")


async def test_a_second_write_close_raises_and_aclose_is_idempotent() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_close(1000)
        assert conn.state is State.LOCAL_CLOSING
        with pytest.raises(ConnectionClosedOK) as info:  # an illegal transition
            await conn.write_close(1001)
        assert info.value.code == 1000  # the close we sent
        nursery.start_soon(conn.aclose)  # closing already: waits for the end, no frame
        await peer.recv_close()
        await peer.send_close(1000)
        assert await peer.expect_eof() == b""
    assert conn.state is State.CLOSED and conn.closed
    await conn.aclose()  # already closed: returns
    with pytest.raises(ConnectionClosedOK):
        await conn.write_close(1000)
    only_ending(rec, "close")


# -- timeouts (autojump clock) ------------------------------------------------------


async def test_close_timeout_when_peer_never_answers(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(close_timeout=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.sleep(1)
        start = trio.current_time()
        await conn.write_close(1000)
        frame = await peer.recv_close()
        assert frame.close_code == 1000
        # The peer keeps the stream open and never answers; the server gives up.
        assert await peer.expect_eof() == b""
        assert trio.current_time() - start >= 3
    error = only_ending(rec, "error")
    assert isinstance(error, WebSocketTimeoutError)
    assert isinstance(error, TimeoutError)
    assert conn.closed


async def test_aclose_is_bounded_by_close_timeout(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(close_timeout=2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await conn.aclose()
        assert trio.current_time() - start == pytest.approx(2)
        assert conn.closed
    assert isinstance(only_ending(rec, "error"), WebSocketTimeoutError)


async def test_protocol_error_reported_even_if_peer_keeps_stream_open(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    conn, peer = server_conn_pair(rec, Config(close_timeout=2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"unmasked", mask=False)
        frame = await peer.recv_close()
        assert frame.close_code == 1002
        await peer.send_close(1002)  # a polite answer, but the stream stays open
        assert await peer.expect_eof() == b""
    error = only_ending(rec, "error")
    assert isinstance(error, ProtocolError) and error.close_code == 1002


async def test_handler_exception_reported_even_if_peer_keeps_stream_open(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    boom = KeyError("boom")

    class Raiser(Recorder):
        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            raise boom

    rec = Raiser()
    conn, peer = server_conn_pair(rec, Config(close_timeout=2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text("x")
        assert (await peer.recv_close()).close_code == 1011
        assert await peer.expect_eof() == b""
    assert only_ending(rec, "error") is boom


# -- failures ------------------------------------------------------------------------


async def test_peer_vanishes_mid_frame() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_raw(build_frame(BINARY, b"x" * 1000)[:300])
        await trio.testing.wait_all_tasks_blocked()
        assert rec.kinds() == ["open"]
        await peer.aclose()
    error = only_ending(rec, "error")
    assert isinstance(error, ConnectionClosedError)
    assert error.code == 1006
    assert conn.closed


async def test_peer_vanishes_between_frames() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text("hi")
        await rec.wait_kind("message")
        await peer.aclose()
    assert isinstance(only_ending(rec, "error"), ConnectionClosedError)


async def test_protocol_error_closes_with_its_code() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"\xff\xfe")  # invalid UTF-8
        frame = await peer.recv_close()
        assert frame.close_code == 1007
        frame.close_reason.decode("utf-8")
        assert await peer.expect_eof() == b""  # half-closed by the server
        await peer.aclose()
    error = only_ending(rec, "error")
    assert isinstance(error, ProtocolError) and error.close_code == 1007


@pytest.mark.parametrize("where", ["on_open", "on_message", "on_ping", "on_pong"])
async def test_exception_in_callback(where: str, caplog: pytest.LogCaptureFixture) -> None:
    boom = RuntimeError(f"bug in {where}")

    class Buggy(Recorder):
        async def on_open(self, conn):  # type: ignore[no-untyped-def]
            await super().on_open(conn)
            if where == "on_open":
                raise boom

        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            await super().on_message(conn, message)
            raise boom

        async def on_ping(self, conn, payload):  # type: ignore[no-untyped-def]
            raise boom

        async def on_pong(self, conn, payload):  # type: ignore[no-untyped-def]
            raise boom

    trigger = {
        "on_open": b"",
        "on_message": build_frame(TEXT, b"m"),
        "on_ping": build_frame(PING, b"p"),
        "on_pong": build_frame(PONG, b"p"),
    }[where]
    rec = Buggy()
    conn, peer = server_conn_pair(rec)
    with caplog.at_level(logging.ERROR, logger="trio_gws"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)  # must not raise
            await peer.send_raw(trigger)
            frame = await peer.recv_close()
            assert frame.close_code == 1011
            frame.close_reason.decode("utf-8")
            assert await peer.expect_eof() == b""
            await peer.aclose()
    assert only_ending(rec, "error") is boom
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is boom]
    assert logged and where in logged[0].getMessage()


@pytest.mark.parametrize("which", ["close", "error"])
async def test_exceptions_in_on_close_and_on_error_are_logged(
    which: str, caplog: pytest.LogCaptureFixture
) -> None:
    boom = ValueError(which)

    class Buggy(Recorder):
        async def on_close(self, conn, code, reason):  # type: ignore[no-untyped-def]
            await super().on_close(conn, code, reason)
            raise boom

        async def on_error(self, conn, error):  # type: ignore[no-untyped-def]
            await super().on_error(conn, error)
            raise boom

    rec = Buggy()
    conn, peer = server_conn_pair(rec)
    with caplog.at_level(logging.ERROR, logger="trio_gws"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)  # an exception here would fail the test
            if which == "close":
                await peer.send_close(1000)
                await peer.recv_close()
            else:
                await peer.aclose()
    only_ending(rec, which)
    assert any(r.exc_info and r.exc_info[1] is boom for r in caplog.records)
    assert conn.closed


# -- writing -----------------------------------------------------------------------


async def test_writes_after_close_raise() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_string("before")
        await conn.write_close(1000)
        # Closing: no data frame may follow our close frame; so far the close is clean.
        with pytest.raises(ConnectionClosedOK):
            await conn.write_message(Opcode.TEXT, "during")
        with pytest.raises(ConnectionClosedOK):
            await conn.write_ping()
        assert (await peer.recv_frame()).payload == b"before"
        await peer.recv_close()
        await peer.send_close(4002, b"peer")
        assert await peer.expect_eof() == b""
    # The peer answered with an application code: not a clean close any more.
    for write in (lambda: conn.write_string("x"),
                  lambda: conn.write_message(Opcode.BINARY, b"x"),
                  lambda: conn.write_ping(b"x"),
                  lambda: conn.write_pong(b"x"),
                  lambda: conn.write_close()):
        with pytest.raises(ConnectionClosedError) as info:
            await write()
        assert info.value.code == 4002 and info.value.reason == b"peer"


async def test_write_message_validates_opcode() -> None:
    conn, peer = server_conn_pair(Recorder())
    for bad in (Opcode.CONTINUATION, Opcode.CLOSE, Opcode.PING, Opcode.PONG, 3, 0xB, 99):
        with pytest.raises(ValueError):
            await conn.write_message(bad, b"x")
    await conn.write_message(1, "text as str")
    await conn.write_message(Opcode.BINARY, bytearray(b"\x01"))
    await conn.write_message(Opcode.BINARY, memoryview(b"\x02"))
    frames = [await peer.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in frames] == [
        (TEXT, b"text as str"), (BINARY, b"\x01"), (BINARY, b"\x02")]
    assert peer.buf == b""


async def test_control_payload_limits() -> None:
    conn, peer = server_conn_pair(Recorder())
    with pytest.raises(ValueError):
        await conn.write_ping(b"x" * 126)
    with pytest.raises(ValueError):
        await conn.write_pong(b"x" * 126)
    with pytest.raises(ValueError):
        await conn.write_close(1000, b"r" * 124)
    for code in (999, 1004, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError):
            await conn.write_close(code)
    with pytest.raises(ValueError):
        await conn.write_close(1000, b"\xff")
    assert not conn.close_sent
    await conn.write_ping(b"x" * 125)
    await conn.write_close(1000, b"r" * 123)
    assert (await peer.recv_frame()).payload == b"x" * 125
    frame = await peer.recv_close()
    assert frame.close_reason == b"r" * 123


async def test_write_message_sends_one_frame_with_minimal_length() -> None:
    conn, peer = server_conn_pair(Recorder())
    sizes = [0, 125, 126, 65535, 65536, 200_000]
    for n in sizes:
        await conn.write_message(Opcode.BINARY, bytes([n % 251]) * n)
    for n in sizes:
        while len(peer.buf) < 2:
            await peer._fill()
        header = bytes(peer.buf[:2])
        frame = await peer.recv_frame()
        assert (frame.fin, frame.rsv, frame.masked) == (True, 0, False)
        assert frame.payload == bytes([n % 251]) * n
        expected_len_byte = n if n < 126 else 126 if n < 65536 else 127
        assert header[1] == expected_len_byte


async def test_concurrent_writers_never_interleave_and_keep_call_order() -> None:
    conn, peer = server_conn_pair(Recorder(), lockstep=True)
    order: list[int] = []
    expected: dict[int, tuple[int, bytes]] = {}
    count = 60

    async def writer(i: int) -> None:
        await trio.sleep(0)
        kind = i % 4
        if kind == 3:
            payload = b"ping%d" % i
            order.append(i)
            await conn.write_ping(payload)
            expected[i] = (PING, payload)
        else:
            size = [10, 300, 70_000][kind]
            payload = (b"%04d" % i) * (size // 4)
            order.append(i)
            await conn.write_message(Opcode.BINARY if kind else Opcode.TEXT, payload)
            expected[i] = (BINARY if kind else TEXT, payload)

    received: list[tuple[int, bytes]] = []

    async def reader() -> None:
        # Small reads: every large frame takes many sends' worth of reads.
        while len(received) < count:
            parsed = parse_frame(peer.buf)
            if parsed is None:
                data = await peer.stream.receive_some(997)
                assert data
                peer.buf += data
                continue
            frame, used = parsed
            del peer.buf[:used]
            assert frame.fin and frame.rsv == 0 and not frame.masked
            received.append((frame.opcode, frame.payload))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(count):
            nursery.start_soon(writer, i)
    assert sorted(order) == list(range(count))
    assert received == [expected[i] for i in order]


async def test_write_cancelled_mid_send_aborts_the_connection() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec, lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:

            async def partial_reader() -> None:
                await peer.recv_some(100)  # part of the frame, then stop reading
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            nursery.start_soon(partial_reader)
            await conn.write_message(Opcode.BINARY, b"z" * 200_000)
        assert scope.cancelled_caught
    # The reader noticed: the connection ended once, with ConnectionClosedError.
    error = only_ending(rec, "error")
    assert isinstance(error, ConnectionClosedError)
    assert conn.closed
    with pytest.raises(ConnectionClosedError):
        await conn.write_message(Opcode.TEXT, "after")


async def test_cancelling_listen_reports_once_and_reraises() -> None:
    class SlowOnError(Recorder):
        async def on_error(self, conn, error):  # type: ignore[no-untyped-def]
            await trio.sleep(0)  # may still await: the report is shielded
            await super().on_error(conn, error)

    rec = SlowOnError()
    conn, peer = server_conn_pair(rec)
    reraised = []

    async def run() -> None:
        try:
            await conn.listen()
        except trio.Cancelled:
            reraised.append(True)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await peer.send_text("hello")
        await rec.wait_kind("message")
        nursery.cancel_scope.cancel()
    assert reraised == [True]
    assert isinstance(only_ending(rec, "error"), ConnectionClosedError)
    assert conn.closed
    assert await peer.expect_eof() == b""


async def test_listen_twice_raises() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError):
            await conn.listen()
        await peer.send_close(1000)
    with pytest.raises(RuntimeError):
        await conn.listen()
    only_ending(rec, "close")


@pytest.mark.parametrize("scenario", ["peer-close", "our-close", "protocol", "vanish",
                                      "handler"])
async def test_exactly_one_ending(scenario: str) -> None:
    class H(Recorder):
        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            await super().on_message(conn, message)
            if scenario == "handler":
                raise OSError("handler failed")
            if scenario == "our-close":
                await conn.write_close(1000)
                with pytest.raises(ConnectionClosedError):
                    await conn.write_string("nope")

    rec = H()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        if scenario == "protocol":
            await peer.send(CONT, b"nothing to continue")
        else:
            await peer.send_text("go")
        await rec.wait_kind("open")
        if scenario == "vanish":
            await rec.wait_kind("message")
            await peer.aclose()
        else:
            if scenario != "peer-close":
                await peer.recv_close()
            await peer.send_close(1000)
            await peer.expect_eof()
            await peer.aclose()
        await rec.wait_endings()
        await trio.testing.wait_all_tasks_blocked()
    assert len(rec.endings()) == 1
    assert rec.events[-1].kind in ("close", "error")
    assert rec.events[0].kind == "open"
    want = "close" if scenario in ("peer-close", "our-close") else "error"
    assert rec.events[-1].kind == want


# -- client side -------------------------------------------------------------------


async def test_client_conn_masks_its_frames() -> None:
    rec = Recorder()
    conn, server = server_conn_pair(rec, is_server=False)
    assert server.client is False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_string("hello")
        await conn.write_message(Opcode.BINARY, b"\x00" * 70_000)
        await conn.write_ping(b"pp")
        for opcode, payload in ((TEXT, b"hello"), (BINARY, b"\x00" * 70_000), (PING, b"pp")):
            frame = await server.recv_frame()
            assert frame.masked, frame
            assert (frame.opcode, frame.payload) == (opcode, payload)
        # Unmasked server frames are accepted.
        await server.send_text("from server")
        await rec.wait_kind("message")
        await server.send_close(1000, b"bye")
        echo = await server.recv_close()
        assert echo.masked and echo.close_code == 1000
        await trio.testing.wait_all_tasks_blocked()
        assert rec.endings() == []  # the client waits for the server to close the TCP stream
        await server.aclose()
    assert rec.of("message") == [Message(Opcode.TEXT, b"from server")]
    assert only_ending(rec, "close") == (1000, b"bye")


async def test_client_conn_uses_fresh_mask_keys() -> None:
    conn, server = server_conn_pair(Recorder(), is_server=False)
    for _ in range(4):
        await conn.write_message(Opcode.BINARY, b"\x00\x00\x00\x00")
    raw = await server.recv_some(40)  # four 10-byte frames: header, key, 4 payload bytes
    assert len(raw) == 40
    frames = [raw[i:i + 10] for i in range(0, 40, 10)]
    # A zero payload masked is the key itself: the key really is applied...
    assert all(f[1] == 0x84 and f[2:6] == f[6:10] for f in frames)
    # ...and a fresh one is drawn for every frame.
    assert len({f[2:6] for f in frames}) > 1


async def test_client_conn_rejects_masked_server_frames() -> None:
    rec = Recorder()
    conn, server = server_conn_pair(rec, is_server=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await server.send(TEXT, b"masked", mask=True)
        frame = await server.recv_close()
        assert frame.masked and frame.close_code == 1002
        await server.aclose()
    error = only_ending(rec, "error")
    assert isinstance(error, ProtocolError) and error.close_code == 1002
    assert rec.of("message") == []


async def test_client_close_handshake_completes_if_server_keeps_tcp_open(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    conn, server = server_conn_pair(rec, Config(close_timeout=2), is_server=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await conn.write_close(1000, "client done")
        assert (await server.recv_close()).close_code == 1000
        await server.send_close(1000, b"server ack")
        assert await server.expect_eof() == b""  # the client gave up waiting for EOF
    # Both close frames were exchanged: that is a completed close handshake.
    assert only_ending(rec, "close") == (1000, b"server ack")
