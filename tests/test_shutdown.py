"""Graceful shutdown of ``serve()`` under load, over real loopback sockets.

Cancelling serve() must: stop accepting, send 1001 to every open connection (after
whatever was already queued to it), wait at most ``close_timeout`` for the close
handshakes, close every stream, and leave no task or socket behind.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import Config, Conn, ConnectionClosed, ConnectionClosedError, Message, Opcode, WebSocketError

from helpers import (
    CLOSE,
    Peer,
    Recorder,
    count_fds,
    count_tasks,
    running_server,
    server_conn_pair,
    settle,
    ws_connect,
)

TIMEOUT = 20
CLOSE_TIMEOUT = 1.0


async def polite_client(peer: Peer, seen: dict[str, Any], name: str) -> None:
    """Idle until the close frame; answer it; wait for the server to close the TCP."""
    frame = await peer.recv_frame()
    while frame.opcode != CLOSE:
        frame = await peer.recv_frame()
    seen[name] = [frame.close_code]
    await peer.send_close(frame.close_code)
    seen[name].append(await peer.expect_eof())
    await peer.aclose()


async def chatty_client(peer: Peer, seen: dict[str, Any], name: str) -> None:
    """Keeps sending and reading echoes: mid-message-stream when the close comes."""
    i = 0
    while True:
        await peer.send_text(f"{name} {i}".encode())
        frame = await peer.recv_frame()
        if frame.opcode == CLOSE:
            break
        assert frame.payload == f"{name} {i}".encode()
        i += 1
    seen[name] = [frame.close_code]
    await peer.send_close(frame.close_code)
    seen[name].append(await peer.expect_eof())
    await peer.aclose()


async def listening_client(peer: Peer, seen: dict[str, Any], name: str) -> None:
    """Reads a stream of server messages; answers the close that ends it."""
    count = 0
    while True:
        frame = await peer.recv_frame()
        if frame.opcode == CLOSE:
            break
        assert frame.payload == f"stream {count}".encode(), (frame, count)
        count += 1
    seen[name] = [frame.close_code]
    await peer.send_close(frame.close_code)
    seen[name].append(await peer.expect_eof())
    seen[name + "-count"] = count
    await peer.aclose()


async def deaf_client(peer: Peer, seen: dict[str, Any], name: str) -> None:
    """Reads everything but never answers the close frame."""
    codes = []
    while True:
        try:
            frame = await peer.recv_frame()
        except EOFError:
            break
        if frame.opcode == CLOSE:
            codes.append(frame.close_code)
    seen[name] = codes
    await peer.aclose()


async def stalled_client(peer: Peer, seen: dict[str, Any], name: str) -> None:
    """Never reads: the server's queue to it is stuck behind full socket buffers."""
    await seen["stalled-release"].wait()
    await peer.aclose()


@pytest.mark.parametrize("kind_counts", [(29, 10, 9)], ids=["50-connections"])
async def test_shutdown_under_load(kind_counts: tuple[int, int, int],
                                   caplog: pytest.LogCaptureFixture) -> None:
    polite, chatty, listening = kind_counts
    rec = Recorder(echo=True)  # "listening" connections are fed by the test
    # 200 x 64 KiB queued to the stalled client: past the default byte bound on purpose.
    config = Config(close_timeout=CLOSE_TIMEOUT, write_buffer_limit=16 << 20)
    seen: dict[str, Any] = {"stalled-release": trio.Event()}
    tasks_before = count_tasks()
    fds_before = count_fds()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as app:
                async with running_server(rec, config) as port:
                    kinds = ([("polite", polite_client)] * polite
                             + [("chatty", chatty_client)] * chatty
                             + [("listening", listening_client)] * listening
                             + [("deaf", deaf_client), ("stalled", stalled_client)])
                    names = []
                    for i, (kind, client) in enumerate(kinds):
                        peer, _ = await ws_connect(port, target=f"/{kind}")
                        names.append(f"{kind}{i}")
                        clients.start_soon(client, peer, seen, names[-1])
                    await rec.wait_kind("open", len(kinds))
                    streams = [c for c in rec.conns() if c.request.path == "/listening"]
                    [stalled] = [c for c in rec.conns() if c.request.path == "/stalled"]
                    chunk = bytes(64 * 1024)
                    for _ in range(200):  # far more than the socket buffers hold
                        stalled.write_async(Opcode.BINARY, chunk)

                    async def feed() -> None:
                        i = 0
                        while streams:
                            for conn in list(streams):
                                try:
                                    conn.write_async(Opcode.TEXT, f"stream {i}")
                                except WebSocketError:
                                    streams.remove(conn)
                            i += 1
                            await trio.sleep(0.002)

                    app.start_soon(feed)
                    # Let the traffic flow for a moment, then shut down mid-stream.
                    await rec.wait_kind("message", 3 * chatty)
                    await trio.sleep(0.05)
                    started = time.monotonic()
                # serve() has returned.
                elapsed = time.monotonic() - started
                app.cancel_scope.cancel()
                seen["stalled-release"].set()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
    assert elapsed < CLOSE_TIMEOUT + 2.0, elapsed  # bounded by close_timeout, not hung
    assert await settle(lambda: count_tasks() == tasks_before), (count_tasks(), tasks_before)
    assert await settle(lambda: count_fds() <= fds_before), (count_fds(), fds_before)

    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(name.rstrip("0123456789"), []).append(name)
    for name in by_kind["polite"] + by_kind["listening"]:
        assert seen[name] == [1001, b""], (name, seen[name])
    for name in by_kind["listening"]:
        assert seen[name + "-count"] > 0
    for name in by_kind["chatty"]:
        assert seen[name][0] == 1001, (name, seen[name])
    assert seen[by_kind["deaf"][0]] == [1001]
    assert "unsent" in caplog.text  # the stalled connection's queue was not dropped silently

    # Exactly one ending per connection: a close handshake for everyone but the deaf one.
    conns = rec.conns()
    assert len(conns) == len(names)
    for conn in conns:
        endings = rec.endings(conn)
        assert len(endings) == 1, (conn.request.path, endings)
        if conn.request.path == "/deaf":
            assert endings[0].kind == "error"
            assert isinstance(endings[0].data, WebSocketError)
        elif conn.request.path == "/stalled":
            assert endings[0].kind == "error"
            assert isinstance(endings[0].data, ConnectionClosedError)
            assert "queued message(s) not sent" in str(endings[0].data)
        else:
            assert endings[0].kind == "close", (conn.request.path, endings[0])
            assert endings[0].data[0] == 1001
        assert conn.closed


class RacingEcho(Recorder):
    """Echoes, but only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.write_errors: list[Exception] = []

    async def on_message(self, conn: Conn, message: Message) -> None:
        await super().on_message(conn, message)
        await self.gate.wait()
        try:
            await conn.write_message(message.opcode, message.data)
        except ConnectionClosed as exc:
            self.write_errors.append(exc)
            raise


async def test_handler_write_racing_our_close_keeps_the_handshake(autojump_clock: Any) -> None:
    """A message that arrives just before our close (a shutdown's 1001, say) is handled
    after it: the handler's echo fails, but that must not cut the close handshake
    short. We keep reading until the peer's close, and report on_close."""
    rec = RacingEcho()
    conn, peer = server_conn_pair(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"in flight")
        await rec.wait_kind("message")
        await conn.write_close(1001, b"going away")
        assert (await peer.recv_close()).close_code == 1001
        rec.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(rec.write_errors) == 1
        assert rec.endings() == []  # still waiting for the peer's close
        await peer.send_text(b"more data after the close is discarded or delivered")
        await peer.send_close(1001)
        assert await peer.expect_eof() == b""
    [ending] = rec.endings()
    assert ending.kind == "close" and ending.data == (1001, b"")
