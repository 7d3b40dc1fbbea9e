"""Corking: what a sequential handler writes while the reader handles one read leaves
in one ``send_all``, and never waits behind code that blocks.

The stream records each ``send_all``; a hand-driven Peer parses what arrives.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_gws import Config, Conn, ConnectionClosedError, Message, Opcode
from trio_gws._deflate import DeflateParams
from trio_gws._writer import _CORK_LIMIT

from helpers import (
    BINARY,
    CLOSE,
    PONG,
    TEXT,
    MessageReader,
    Recorder,
    build_frame,
    make_conn,
    socket_conn_pair,
)

pytestmark = pytest.mark.filterwarnings("error")


def frames(*payloads: bytes) -> bytes:
    return b"".join(build_frame(TEXT, payload, mask=True) for payload in payloads)


async def test_echoes_of_one_read_leave_in_one_send() -> None:
    rec = Recorder(echo=True)
    conn, peer, recording = make_conn(rec, record=True)
    assert recording is not None
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        payloads = [f"m{i}".encode() for i in range(16)]
        await peer.send_raw(frames(*payloads) + build_frame(0x9, b"hb", mask=True))
        got = [await reader.next() for _ in range(17)]
        assert got == [(TEXT, p) for p in payloads] + [(PONG, b"hb")]
        assert len(recording.sent) == 1  # sixteen echoes and a pong: one send
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_large_bursts_are_sent_in_pieces_in_order() -> None:
    COUNT = 4 * _CORK_LIMIT // 1024 + 10

    class Burst(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            for i in range(COUNT):  # 1 KiB each, no checkpoint in between
                await conn.write_message(Opcode.BINARY, bytes([i % 256]) * 1024)

    rec = Burst()
    conn, peer, recording = make_conn(rec, record=True)
    assert recording is not None
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"go")
        got = [await reader.next() for _ in range(COUNT)]
        assert got == [(BINARY, bytes([i % 256]) * 1024) for i in range(COUNT)]
        # Bounded: several sends of at most the cork limit, not one of everything.
        assert len(recording.sent) >= 4
        assert max(len(piece) for piece in recording.sent) <= _CORK_LIMIT + 1100
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE


@pytest.mark.parametrize("blocker", ["event", "sleep", "checkpoint"])
async def test_a_handler_that_blocks_after_writing_does_not_hold_the_write(
    blocker: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The write must reach the peer while the handler is still blocked: here the
    handler waits for the peer's confirmation, which would deadlock otherwise."""
    confirmed = trio.Event()
    finished = trio.Event()

    class SlowAfterWrite(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            await conn.write_message(Opcode.TEXT, b"working on it")
            if blocker == "event":
                await confirmed.wait()
            elif blocker == "sleep":
                await trio.sleep(3600)
            else:
                await trio.lowlevel.checkpoint()
                await confirmed.wait()
            await conn.write_message(Opcode.TEXT, b"done")
            finished.set()

    rec = SlowAfterWrite()
    conn, peer, _ = make_conn(rec)
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"job")
        with trio.fail_after(60):
            assert await reader.next() == (TEXT, b"working on it")
        assert not finished.is_set()
        confirmed.set()
        assert await reader.next() == (TEXT, b"done")
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_other_writers_go_after_corked_frames() -> None:
    """A corked echo, then a write from another task and a queued write_async: all
    in call order."""
    other_done = trio.Event()

    class Mixed(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            await conn.write_message(Opcode.TEXT, b"first")
            conn.write_async(Opcode.TEXT, b"queued")
            await conn.write_message(Opcode.TEXT, b"after-queue")
            await other_done.wait()

    rec = Mixed()
    conn, peer, _ = make_conn(rec)
    reader = MessageReader(peer)

    async def other() -> None:
        await conn.write_message(Opcode.TEXT, b"other")
        other_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"x")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(other)
        got = [await reader.next() for _ in range(4)]
        assert got == [(TEXT, b"first"), (TEXT, b"queued"), (TEXT, b"after-queue"),
                       (TEXT, b"other")]
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE


async def test_close_from_a_handler_goes_after_its_corked_writes() -> None:
    class Bye(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            await conn.write_message(Opcode.TEXT, b"last words")
            await conn.aclose(4000, "bye")
            with pytest.raises(ConnectionClosedError):
                await conn.write_message(Opcode.TEXT, b"too late")

    rec = Bye()
    conn, peer, recording = make_conn(rec, record=True)
    assert recording is not None
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"x")
        assert await reader.next() == (TEXT, b"last words")
        kind, payload = await reader.next()
        assert kind == CLOSE and payload[:2] == (4000).to_bytes(2, "big")
        assert len(recording.sent) == 1
        await peer.send_close(4000)
    assert rec.endings()[0].kind == "close"


async def test_a_failed_flush_reports_the_corked_messages() -> None:
    """The transport dies under corked echoes: on_error hears how many never left."""
    rec = Recorder(echo=True)
    conn, peer, recording = make_conn(rec, record=True)
    assert recording is not None

    async def broken_send_all(data: object) -> None:
        raise trio.BrokenResourceError("peer vanished")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        recording.send_all = broken_send_all  # type: ignore[method-assign]
        await peer.send_raw(frames(b"a", b"b", b"c"))
        [ending] = await rec.wait_endings()
    assert ending.kind == "error"
    assert isinstance(ending.data, ConnectionClosedError)
    assert "3 queued message(s) not sent" in str(ending.data)


async def test_handler_errors_and_cancellation_pass_through_the_cork() -> None:
    """A handler that raises after writing: its corked write still leaves before the
    1011 close frame; one cancelled while blocked sees Cancelled at its await."""
    seen: list[str] = []

    class Faulty(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            await conn.write_message(Opcode.TEXT, b"partial")
            if message.data == b"raise":
                raise RuntimeError("handler bug")
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                seen.append("cancelled")
                raise

    rec = Faulty()
    conn, peer, _ = make_conn(rec, Config(close_timeout=1))
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"raise")
        assert await reader.next() == (TEXT, b"partial")
        kind, payload = await reader.next()
        assert kind == CLOSE and payload[:2] == (1011).to_bytes(2, "big")
        await peer.send_close(1011)
    assert rec.endings()[0].kind == "error"

    rec = Faulty()
    conn, peer, _ = make_conn(rec)
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_text(b"wait")
        assert await reader.next() == (TEXT, b"partial")
        nursery.cancel_scope.cancel()
    assert seen == ["cancelled"]
    assert rec.endings()[0].kind == "error"


async def test_parallel_handlers_are_not_corked() -> None:
    rec = Recorder(echo=True)
    conn, peer, recording = make_conn(rec, Config(parallel_enabled=True), record=True)
    assert recording is not None
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await peer.send_raw(frames(b"1", b"2", b"3"))
        got = sorted([await reader.next() for _ in range(3)])
        assert got == [(TEXT, b"1"), (TEXT, b"2"), (TEXT, b"3")]
        assert len(recording.sent) == 3
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE


@pytest.mark.parametrize("is_server", [True, False], ids=["server", "client-masked"])
async def test_large_frames_go_in_two_pieces_without_a_whole_copy(is_server: bool) -> None:
    """A 100 KiB message: header plus the payload's first bytes, then a view of the
    rest; the peer gets it intact (unmasked correctly on the client side)."""
    rec = Recorder()
    conn, peer, recording = make_conn(rec, is_server=is_server, record=True)
    assert recording is not None
    reader = MessageReader(peer)
    payload = bytearray(random.Random(7).randbytes(100 * 1024))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await conn.write_message(Opcode.BINARY, payload)
        assert await reader.next() == (BINARY, bytes(payload))
        first, rest = recording.sent
        assert isinstance(rest, memoryview) and len(first) < 20 * 1024
        await conn.write_message(Opcode.BINARY, b"small")
        assert await reader.next() == (BINARY, b"small")
        assert isinstance(recording.sent[2], bytes)
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE
        await peer.aclose()  # a server closes the TCP first; the client waits for it
    assert [e.kind for e in rec.endings()] == ["close"]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
async def test_large_and_vectored_writes_go_after_the_corked_frames(compress: bool) -> None:
    """A large frame (sent in two pieces) or a vectored write from a corking handler
    leaves after what the handler corked before it, with the corked frames at the
    front of its first send; what it then queues with write_nowait follows."""
    large = random.Random(11).randbytes(100 * 1024)  # deflate cannot shrink it

    class Mixed(Recorder):
        async def on_message(self, conn: Conn, message: Message) -> None:
            await conn.write_message(Opcode.TEXT, b"corked 1")
            await conn.write_message(Opcode.BINARY, large)
            await conn.write_message(Opcode.TEXT, b"corked 2")
            await conn.writev(Opcode.BINARY, b"vec", b"tored")
            await conn.write_message(Opcode.TEXT, b"last")
            conn.write_nowait(Opcode.TEXT, b"queued")
            conn.write_nowait(Opcode.BINARY, large)

    rec = Mixed()
    config = Config(compress_enabled=compress)
    conn, peer, recording = make_conn(rec, config, record=True,
                                      deflate=DeflateParams() if compress else None)
    assert recording is not None
    reader = MessageReader(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        await peer.send_raw(frames(b"go"))
        got = [await reader.next() for _ in range(7)]
        assert got == [(TEXT, b"corked 1"), (BINARY, large), (TEXT, b"corked 2"),
                       (BINARY, b"vectored"), (TEXT, b"last"), (TEXT, b"queued"),
                       (BINARY, large)]
        # the large frame's send began with the corked frame before it
        first = bytes(recording.sent[0])
        assert first.startswith(build_frame(TEXT, b"corked 1", mask=False))  # under the threshold
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE
    assert [e.kind for e in rec.endings()] == ["close"]


# -- corking on a real TCP socket ----------------------------------------------------


async def test_corked_echoes_over_a_real_socket() -> None:
    rec = Recorder(echo=True)
    conn, peer = socket_conn_pair(rec)
    reader = MessageReader(peer)
    payloads = [bytes([i]) * 3000 for i in range(12)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            for _ in range(3):  # three reads, each echoed in one flush
                await peer.send_raw(b"".join(build_frame(BINARY, p, mask=True) for p in payloads))
                got = [await reader.next() for _ in payloads]
                assert got == [(BINARY, p) for p in payloads]
            await peer.send_close(1000)
            assert (await reader.next())[0] == CLOSE
    await peer.aclose()
    assert [e.kind for e in rec.endings()] == ["close"]


async def test_a_reset_under_the_flush_reports_the_corked_messages() -> None:
    """As above, the reset raised by the memory stream's send hook."""
    rec = Recorder(echo=True)
    conn, peer, _ = make_conn(rec)
    stream = conn._transport.stream
    assert isinstance(stream, trio.StapledStream)

    def reset() -> None:
        raise trio.BrokenResourceError("reset by peer")

    stream.send_stream.send_all_hook = reset
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            await peer.send_raw(frames(b"a", b"b"))
            [ending] = await rec.wait_endings()
    await peer.aclose()
    assert ending.kind == "error" and isinstance(ending.data, ConnectionClosedError)
    assert "reset by peer" in str(ending.data)
    assert "2 queued message(s) not sent" in str(ending.data)


async def test_every_read_asks_for_read_buffer_size() -> None:
    """read_buffer_size is what each read asks of the transport, large frames
    included (their rest arrives in reads of the same size)."""
    asked: list[int | None] = []
    rec = Recorder(echo=True)
    conn, peer, recording = make_conn(rec, Config(read_buffer_size=4096), record=True)
    assert recording is not None
    inner_receive = recording.receive_some

    async def receive_some(max_bytes: int | None = None) -> bytes | bytearray:
        asked.append(max_bytes)
        return await inner_receive(max_bytes)

    conn._transport.fast_receive = receive_some  # the reader's receive (see _transport)
    reader = MessageReader(peer)
    payload = bytes(range(256)) * 256  # 64 KiB: sixteen reads
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send_raw(build_frame(BINARY, payload, mask=True))
        assert await reader.next() == (BINARY, payload)
        await peer.send_close(1000)
        assert (await reader.next())[0] == CLOSE
    assert len(asked) > 16 and set(asked) == {4096}
