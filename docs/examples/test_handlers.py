"""Testing handlers without a network: the how-to's example, a real pytest file.

Run it with ``python -m pytest docs/examples/test_handlers.py`` (pytest and
pytest-trio installed). Server and client talk over ``trio.testing``'s in-memory
streams, through the real handshake and the real frames; with the ``autojump_clock``
fixture, Trio's clock jumps ahead whenever every task is waiting, so a test of a
30-second timeout takes milliseconds and always gives the same result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import trio_gws as gws

# -- the handlers under test (in an application: imported from its own modules) -----


class Echo(gws.EventHandler):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)


class Heartbeat(Echo):
    """Drops a client that sends nothing for 30 s (gws's SetDeadline pattern)."""

    IDLE = 30.0

    async def on_open(self, conn: gws.Conn) -> None:
        conn.set_deadline(trio.current_time() + self.IDLE)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        conn.set_deadline(trio.current_time() + self.IDLE)
        await super().on_message(conn, message)

    async def on_ping(self, conn: gws.Conn, payload: bytes) -> None:
        conn.set_deadline(trio.current_time() + self.IDLE)
        await super().on_ping(conn, payload)


# -- test helpers ---------------------------------------------------------------------


class Client(gws.EventHandler):
    """The test's side: messages on a channel, and how the connection ended."""

    def __init__(self) -> None:
        self._send, self.messages = trio.open_memory_channel[gws.Message](100)
        self.ended = trio.Event()
        self.close_code: int | None = None
        self.ended_at = 0.0

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await self._send.send(message)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self.close_code, self.ended_at = code, trio.current_time()
        self.ended.set()

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self.ended_at = trio.current_time()
        self.ended.set()


@asynccontextmanager
async def connected(handler: gws.EventHandler, client: gws.EventHandler,
                    config: gws.Config | None = None) -> AsyncIterator[gws.Conn]:
    """A server connection running ``handler`` and a client connection running
    ``client``, joined by an in-memory stream pair; yields the client's Conn."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve_one() -> None:
        conn = await gws.Upgrader(handler, config).upgrade(server_stream)
        await conn.listen()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        # The URL only fills in the request's Host and path: nothing is dialled.
        conn = await gws.connect("ws://test/", client, stream=client_stream)
        nursery.start_soon(conn.listen)
        yield conn
        await conn.aclose()  # close handshake; both listen() calls then return


# -- the tests ------------------------------------------------------------------------


@pytest.mark.trio
async def test_echo() -> None:
    client = Client()
    with trio.fail_after(5):
        async with connected(Echo(), client) as conn:
            await conn.write_string("hello")
            await conn.write_message(gws.Opcode.BINARY, b"\x00\xff")
            assert (await client.messages.receive()).text == "hello"
            assert (await client.messages.receive()).data == b"\x00\xff"
    assert client.close_code == 1000


@pytest.mark.trio
async def test_silent_client_is_dropped_after_30_seconds(
        autojump_clock: trio.testing.MockClock) -> None:
    client = Client()
    start = trio.current_time()
    with trio.fail_after(60):  # virtual seconds too: a broken timeout fails, never hangs
        async with connected(Heartbeat(), client):
            await client.ended.wait()  # 30 virtual seconds, a few real milliseconds
    assert client.close_code == 1011  # the server failed the connection: timeout
    assert client.ended_at - start == pytest.approx(Heartbeat.IDLE)


@pytest.mark.trio
async def test_pings_keep_a_quiet_client_connected(
        autojump_clock: trio.testing.MockClock) -> None:
    client = Client()
    async with connected(Heartbeat(), client) as conn:
        for _ in range(10):  # five minutes, a ping every 29 s
            await trio.sleep(29)
            await conn.write_ping(b"still here")
        assert not client.ended.is_set()
        assert conn.state is gws.State.OPEN
    assert client.close_code == 1000  # and it ends with our own clean close
