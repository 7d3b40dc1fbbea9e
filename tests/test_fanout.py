"""Fan-out: 1,000 connections, one deliberately stalled reader.

Every healthy connection receives every broadcast, in order; the stalled one fills
its own bounded queue (write_queue_size=16) and is dealt with by the documented
policy: WriteQueueFullError, close 1008, connection failed. Nobody else is held up.

The connections run over lean in-process pipes (tests/helpers.PipeStream: 1,000
loopback sockets would need 2,000 descriptors and be slow on a small machine); the
stalled peer is a trio lockstep stream nobody reads, so its writer blocks exactly
like a full socket buffer.
Timeouts run on the autojump clock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import (
    Broadcaster,
    Config,
    Conn,
    EventHandler,
    Headers,
    Opcode,
    Request,
    WriteQueueFullError,
)

from helpers import CLOSE, TEXT, Peer, drainer_count, pipe_stream_pair, server_conn_pair

CONNECTIONS = 1000
MESSAGES = 24
BURST = 8  # below write_queue_size: a healthy reader drains a burst in time


class Counting(EventHandler):
    """Counts opens and keeps each connection's ending (cheap at 1,000 connections).

    ``all_open`` / ``all_ended`` are set once ``count`` connections opened / ended.
    """

    def __init__(self, count: int = CONNECTIONS) -> None:
        self.count = count
        self.opened = 0
        self.all_open = trio.Event()
        self.endings: dict[Conn, tuple[str, Any]] = {}
        self.all_ended = trio.Event()

    async def on_open(self, conn: Conn) -> None:
        self.opened += 1
        if self.opened == self.count:
            self.all_open.set()

    def _end(self, conn: Conn, kind: str, data: Any) -> None:
        assert conn not in self.endings, "two endings for one connection"
        self.endings[conn] = (kind, data)
        if len(self.endings) == self.count:
            self.all_ended.set()

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        self._end(conn, "close", code)

    async def on_error(self, conn: Conn, error: Exception) -> None:
        self._end(conn, "error", error)


async def test_broadcast_to_1000_with_one_stalled_reader(autojump_clock: Any) -> None:
    handler = Counting()
    config = Config(write_queue_size=16, close_timeout=2)
    conns: list[Conn] = []
    peers: list[Peer] = []
    for i in range(CONNECTIONS):
        make = (trio.testing.lockstep_stream_pair if i == CONNECTIONS // 2
                else pipe_stream_pair)
        ours, theirs = make()
        conns.append(Conn(ours, handler, config, is_server=True,
                          request=Request("GET", f"/{i}", Headers())))
        peers.append(Peer(theirs))
    stalled = conns[CONNECTIONS // 2]
    received: dict[int, list[bytes]] = {i: [] for i in range(CONNECTIONS)}

    async def healthy_peer(i: int) -> None:
        peer = peers[i]
        for _ in range(MESSAGES):
            frame = await peer.recv_frame()
            assert frame.opcode == TEXT and not frame.masked
            received[i].append(frame.payload)
        await peer.send_close(1000)
        assert (await peer.recv_frame()).opcode == CLOSE
        assert await peer.expect_eof() == b""

    accepted: list[int] = []
    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            nursery.start_soon(conn.listen)
            if conn is not stalled:
                nursery.start_soon(healthy_peer, i)
        await handler.all_open.wait()
        for start in range(0, MESSAGES, BURST):
            for n in range(start, start + BURST):
                accepted.append(Broadcaster(Opcode.TEXT, f"news {n}").broadcast_all(conns))
            await trio.testing.wait_all_tasks_blocked()
        await handler.all_ended.wait()
        await peers[CONNECTIONS // 2].aclose()

    expected = [f"news {n}".encode() for n in range(MESSAGES)]
    for i in range(CONNECTIONS):
        if i != CONNECTIONS // 2:
            assert received[i] == expected, i
    assert received[CONNECTIONS // 2] == []
    # The stalled connection took one message on its way plus 16 queued, then the
    # 18th overflowed; from then on every broadcast skipped it.
    assert accepted == [CONNECTIONS] * 17 + [CONNECTIONS - 1] * (MESSAGES - 17)
    kind, error = handler.endings[stalled]
    assert kind == "error" and isinstance(error, WriteQueueFullError)
    assert error.close_code == 1008
    assert "16 queued message(s) dropped" in str(error)
    others = [handler.endings[c] for c in conns if c is not stalled]
    assert others == [("close", 1000)] * (CONNECTIONS - 1)
    assert all(conn.closed and conn.queued == 0 for conn in conns)
    assert drainer_count() == 0


SMALL = 50  # connections in the smaller run


@pytest.mark.parametrize("stalled_index", [0, SMALL - 1], ids=["first", "last"])
async def test_stalled_reader_position_does_not_matter(stalled_index: int,
                                                       autojump_clock: Any) -> None:
    """A smaller run: the stalled connection first or last in the list."""
    count = SMALL
    handler = Counting(count)
    config = Config(write_queue_size=4, close_timeout=1)
    conns = []
    peers = []
    for i in range(count):
        conn, peer = server_conn_pair(handler, config, lockstep=i == stalled_index)
        conns.append(conn)
        peers.append(peer)
    got: dict[int, list[bytes]] = {i: [] for i in range(count)}

    async def reader(i: int) -> None:
        while True:
            frame = await peers[i].recv_frame()
            if frame.opcode == CLOSE:
                await peers[i].send_close(1000)
                await peers[i].expect_eof()
                return
            got[i].append(frame.payload)

    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            nursery.start_soon(conn.listen)
            if i != stalled_index:
                nursery.start_soon(reader, i)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(12):
            Broadcaster(Opcode.BINARY, n.to_bytes(2, "big")).broadcast_all(conns)
            if n % 3 == 2:
                await trio.testing.wait_all_tasks_blocked()
        for i, conn in enumerate(conns):
            if i != stalled_index:
                await conn.write_close(1000)
        await handler.all_ended.wait()
        await peers[stalled_index].aclose()
    for i in range(count):
        if i != stalled_index:
            assert got[i] == [n.to_bytes(2, "big") for n in range(12)], i
    assert isinstance(handler.endings[conns[stalled_index]][1], WriteQueueFullError)
