"""Pull mode (a connection without a handler: receive() and async for) and round trips
(conn.ping(), conn.latency)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import trio_gws as gws
from helpers import BINARY, PING, PONG, TEXT, Peer, Recorder, make_conn, running_server
from trio_gws import Config, ConnectionClosedError, ConnectionClosedOK, Message, Opcode
from trio_gws._inbox import RECEIVE_BUFFER


def pull_conn(config: Config | None = None) -> tuple[gws.Conn, Peer]:
    conn, peer, _ = make_conn(None, config, is_server=False)  # type: ignore[arg-type]
    return conn, peer


async def server_closes(peer: Peer, code: int | None = 1000, reason: bytes = b"") -> None:
    """The server side of a close it starts: close frame, the reply, then TCP close."""
    await peer.send_close(code, reason)
    await peer.recv_close()
    await peer.aclose()


async def test_receive_returns_messages_in_order_then_ok_on_a_normal_close() -> None:
    conn, peer = pull_conn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"one")
        await peer.send(BINARY, b"\x00two")
        assert await conn.receive() == Message(Opcode.TEXT, b"one")
        assert await conn.receive() == Message(Opcode.BINARY, b"\x00two")
        await server_closes(peer, 1000, b"bye")
        with pytest.raises(ConnectionClosedOK) as info:
            await conn.receive()
        assert (info.value.code, info.value.reason) == (1000, b"bye")


async def test_async_for_ends_on_1000_and_1001() -> None:
    for code in (1000, 1001, None):
        conn, peer = pull_conn()
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            for word in (b"a", b"b", b"c"):
                await peer.send(TEXT, word)
            nursery.start_soon(server_closes, peer, code)
            async for message in conn:
                got.append(message.data)
        assert got == [b"a", b"b", b"c"]


async def test_async_for_raises_on_any_other_ending() -> None:
    conn, peer = pull_conn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"kept")
        nursery.start_soon(server_closes, peer, 4001, b"app error")
        got = []
        with pytest.raises(ConnectionClosedError) as info:
            async for message in conn:
                got.append(message.data)
    assert got == [b"kept"]  # what arrived before the close is still delivered
    assert (info.value.code, info.value.reason) == (4001, b"app error")


async def test_a_protocol_error_ends_iteration_with_its_cause() -> None:
    conn, peer = pull_conn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"\xff", mask=False)  # invalid UTF-8
        assert (await peer.recv_close()).close_code == 1007
        await peer.aclose()
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive()
        assert info.value.code == 1007
        assert isinstance(info.value.__cause__, gws.InvalidTextError)


async def test_a_slow_consumer_slows_the_peer_down(autojump_clock: Any) -> None:
    """Past the buffer the reader stops reading: the peer's writes back up."""
    conn, peer = pull_conn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        for i in range(RECEIVE_BUFFER + 5):
            await peer.send(TEXT, b"%d" % i)
        await trio.testing.wait_all_tasks_blocked()
        inbox = conn._handler
        assert inbox.buffered == RECEIVE_BUFFER  # type: ignore[attr-defined]
        # The reader waits to hand over message RECEIVE_BUFFER: pings are not answered.
        await peer.send(PING, b"p")
        with trio.move_on_after(10) as waited:
            await peer.recv_frame()
        assert waited.cancelled_caught  # no pong: the reader is not reading
        for i in range(RECEIVE_BUFFER + 5):
            assert (await conn.receive()).data == b"%d" % i
        assert (await peer.recv_frame()).opcode == PONG  # answered once unblocked
        await server_closes(peer)


async def test_receive_on_a_handled_connection_is_a_clear_error() -> None:
    conn, _, _ = make_conn(Recorder())
    with pytest.raises(RuntimeError, match="pull mode"):
        await conn.receive()
    with pytest.raises(RuntimeError, match="pull mode"):
        conn.__aiter__()


async def test_open_conn_without_a_handler_against_a_real_server() -> None:
    async with running_server(Recorder(echo=True)) as port:
        async with gws.open_conn(f"ws://127.0.0.1:{port}/") as conn:
            for i in range(20):
                await conn.write_string(f"hello {i}")
            for i in range(20):
                assert (await conn.receive()).text == f"hello {i}"


# -- ping() and latency ----------------------------------------------------------------


async def test_ping_measures_the_round_trip(autojump_clock: Any) -> None:
    conn, peer, _ = make_conn(Recorder())
    assert conn.latency is None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        result: list[float] = []

        async def pinger() -> None:
            result.append(await conn.ping())

        nursery.start_soon(pinger)
        frame = await peer.recv_frame()
        assert frame.opcode == PING and len(frame.payload) == 8
        await trio.sleep(0.25)
        await peer.send(PONG, frame.payload)
        await trio.testing.wait_all_tasks_blocked()
        assert result == [pytest.approx(0.25)]
        assert conn.latency == pytest.approx(0.25)
        await peer.send_close(1000)
        await peer.recv_close()


async def test_a_pong_answers_its_ping_and_every_earlier_one(autojump_clock: Any) -> None:
    conn, peer, _ = make_conn(Recorder())
    rtts: dict[bytes, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)

        async def pinger(payload: bytes) -> None:
            rtts[payload] = await conn.ping(payload)

        for payload in (b"first", b"second", b"third"):
            nursery.start_soon(pinger, payload)
            await peer.recv_frame()
            await trio.sleep(1)
        await peer.send(PONG, b"unsolicited")  # answers nothing
        await peer.send(PONG, b"second")  # the peer skipped "first"
        await trio.testing.wait_all_tasks_blocked()
        assert rtts == {b"first": pytest.approx(3), b"second": pytest.approx(2)}
        with pytest.raises(ValueError, match="already waiting"):
            await conn.ping(b"third")
        await peer.send(PONG, b"third")
        await trio.testing.wait_all_tasks_blocked()
        assert rtts[b"third"] == pytest.approx(1) and conn.latency == pytest.approx(1)
        await peer.send_close(1000)
        await peer.recv_close()


async def test_a_ping_waiting_when_the_connection_ends_raises(autojump_clock: Any) -> None:
    conn, peer, _ = make_conn(Recorder())
    outcome: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)

        async def pinger() -> None:
            try:
                await conn.ping()
            except gws.ConnectionClosed as exc:
                outcome.append(exc)

        nursery.start_soon(pinger)
        await peer.recv_frame()
        await peer.send_close(1001)
        await peer.recv_close()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedOK)
    with pytest.raises(ConnectionClosedOK):
        await conn.ping()


async def test_keepalive_measures_latency(autojump_clock: Any) -> None:
    conn, peer, _ = make_conn(Recorder(), Config(ping_interval=5, ping_timeout=3))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        frame = await peer.recv_frame()
        assert frame.opcode == PING
        await trio.sleep(0.5)
        await peer.send(PONG, frame.payload)
        await trio.testing.wait_all_tasks_blocked()
        assert conn.latency == pytest.approx(0.5)
        await peer.send_close(1000)
        await peer.recv_close()
    assert not conn._pings  # nothing left waiting


async def test_ping_against_a_real_server() -> None:
    async with running_server(Recorder()) as port:
        async with gws.open_conn(f"ws://127.0.0.1:{port}/", gws.EventHandler()) as conn:
            with trio.fail_after(5):
                rtt = await conn.ping()
            assert 0 <= rtt < 5 and conn.latency == rtt
