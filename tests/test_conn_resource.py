"""Trio conventions of Conn: an AsyncResource, write_nowait, a frozen Config, DEBUG
tracing, and open_conn keeping the block's own exception whatever races it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
import trio
import trio.testing

import trio_gws as gws
from helpers import Recorder, running_server, server_conn_pair
from trio_gws import Config, Conn, Message, Opcode, State


async def test_async_with_closes_with_1000_while_listen_runs_elsewhere() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    assert isinstance(conn, trio.abc.AsyncResource)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)

        async def answer() -> None:
            assert (await peer.recv_frame()).payload == b"inside"
            assert (await peer.recv_close()).close_code == 1000
            await peer.send_close(1000)

        nursery.start_soon(answer)
        async with conn:
            await conn.write_string("inside")
        # Leaving the block waited for the whole close handshake.
        assert conn.closed and conn.state is State.CLOSED
    assert rec.kinds()[-1] == "close"


async def test_async_with_closes_with_1011_when_the_block_raises() -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    codes: list[int | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)

        async def answer() -> None:
            frame = await peer.recv_close()
            codes.append(frame.close_code)
            await peer.send_close(1011)

        nursery.start_soon(answer)
        with pytest.raises(KeyError):
            async with conn:
                raise KeyError("body")
    assert codes == [1011]


async def test_async_with_on_a_connection_nobody_listens_to(autojump_clock: Any) -> None:
    """aclose() runs the reader itself until the peer answers."""
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        async def answer() -> None:
            await peer.send_text(b"late")
            assert (await peer.recv_close()).close_code == 1000
            await peer.send_close(1000)

        nursery.start_soon(answer)
        async with conn:
            pass
    assert rec.kinds() == ["open", "message", "close"]


async def test_aclose_cancelled_while_waiting_closes_the_stream(autojump_clock: Any) -> None:
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        with trio.move_on_after(1):
            await conn.aclose()  # the peer never answers
        # Trio's rule: an aclose that is cancelled still closes, forcefully.
        await trio.testing.wait_all_tasks_blocked()
        assert conn.closed
    assert rec.kinds()[-1] == "error"


async def test_write_nowait_is_write_async() -> None:
    assert Conn.write_async is Conn.write_nowait
    rec = Recorder()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        conn.write_nowait(Opcode.TEXT, "a")
        conn.write_async(Opcode.TEXT, "b")
        assert (await peer.recv_frame()).payload == b"a"
        assert (await peer.recv_frame()).payload == b"b"
        await peer.send_close(1000)
        await peer.recv_close()


def test_config_is_frozen_and_replace_derives_one() -> None:
    config = Config(max_content_length=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_content_length = 5  # type: ignore[misc]
    derived = dataclasses.replace(config, compress_enabled=True)
    assert derived.compress_enabled and derived.max_content_length == 100
    assert not config.compress_enabled
    with pytest.raises(ValueError):
        dataclasses.replace(config, max_content_length=0)  # still validated


def test_handler_error_is_internal() -> None:
    assert not hasattr(gws, "HandlerError")
    assert "HandlerError" not in gws.__all__
    assert issubclass(gws.ConnectionClosedOK, gws.ConnectionClosed)
    assert issubclass(gws.ConnectionClosedError, gws.ConnectionClosed)
    assert not issubclass(gws.ConnectionClosedOK, gws.ConnectionClosedError)


async def test_frames_and_transitions_are_traced_at_debug(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gws")
    rec = Recorder(echo=True)
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"hi")
        await peer.recv_frame()
        await peer.send_close(1000)
        await peer.recv_close()
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_gws"]
    assert any("< Message(TEXT, b'hi'" in line for line in lines)
    assert any("> TEXT 2 bytes" in line for line in lines)
    assert any("-> remote closing (the peer closes with 1000)" in line for line in lines)
    assert any("-> closed (we answer the peer's close)" in line for line in lines)


async def test_nothing_is_traced_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_gws")
    rec = Recorder(echo=True)
    conn, peer = server_conn_pair(rec)
    assert not conn._trace
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"hi")
        await peer.recv_frame()
        await peer.send_close(1000)
        await peer.recv_close()
    assert [r for r in caplog.records if r.levelno < logging.INFO] == []


# -- open_conn: the block's exception comes out as itself ----------------------------


class Silent(gws.EventHandler):
    """A server handler that keeps connections open and records how they end."""

    def __init__(self) -> None:
        self.endings: list[object] = []

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self.endings.append(code)

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self.endings.append(error)


async def test_open_conn_body_error_right_after_the_handshake() -> None:
    """Regression: the body raised before the background listen() got to start, and
    the exit's aclose() started a second reader: ExceptionGroup([RuntimeError])."""
    async with running_server(Silent()) as port:
        for _ in range(20):  # the race was deterministic; a few rounds for good measure
            with pytest.raises(KeyError, match="body error"):
                async with gws.open_conn(f"ws://127.0.0.1:{port}/", gws.EventHandler()):
                    raise KeyError("body error")


async def test_open_conn_cancelled_right_after_the_handshake() -> None:
    async with running_server(Silent()) as port:
        with trio.CancelScope() as scope:
            async with gws.open_conn(f"ws://127.0.0.1:{port}/", gws.EventHandler()):
                scope.cancel()
                await trio.lowlevel.checkpoint()
                pytest.fail("not cancelled")
        assert scope.cancelled_caught


class ClosesAtOnce(gws.EventHandler):
    async def on_open(self, conn: Conn) -> None:
        await conn.write_close(1001, "going")


async def test_open_conn_body_error_while_the_server_closes() -> None:
    async with running_server(ClosesAtOnce()) as port:
        for _ in range(10):
            with pytest.raises(KeyError, match="body"):
                async with gws.open_conn(f"ws://127.0.0.1:{port}/", gws.EventHandler()):
                    raise KeyError("body")


async def test_open_conn_body_finishing_while_the_server_closes() -> None:
    seen: list[tuple[int, bytes]] = []

    class Client(gws.EventHandler):
        async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
            seen.append((code, reason))

        async def on_message(self, conn: Conn, message: Message) -> None:
            pass

    async with running_server(ClosesAtOnce()) as port:
        async with gws.open_conn(f"ws://127.0.0.1:{port}/", Client()) as conn:
            await trio.sleep(0)
        assert conn.closed
    assert seen == [(1001, b"going")]


async def test_an_ended_connection_is_freed_without_the_garbage_collector() -> None:
    """No reference cycle outlives a connection: with the cyclic collector off, the
    Conn is gone as soon as the last reference to it is."""
    import gc
    import weakref

    for parallel in (False, True):
        gc.collect()
        gc.disable()
        try:
            conn, peer = server_conn_pair(gws.EventHandler(),
                                          Config(parallel_enabled=parallel))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.listen)
                await peer.send_text(b"x")
                await peer.send_close(1000)
                await peer.recv_close()
            gone = weakref.ref(conn)
            del conn
            assert gone() is None, gc.get_referrers(gone())
        finally:
            gc.enable()
        await peer.aclose()
