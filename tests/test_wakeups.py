"""Fewer wakeups per message on a plain TCP socket (issue 17): the receive low-water
mark set to the rest of a frame in pieces, and the direct send, on real sockets."""

from __future__ import annotations

import socket

import pytest
import trio

from trio_gws import Config, Conn, Headers, Request
from trio_gws._reader import FrameReader
from trio_gws._transport import LOWAT_CAP, Transport

from helpers import BINARY, CLOSE, TEXT, Peer, Recorder, build_frame, settle

pytestmark = pytest.mark.filterwarnings("error")


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    assert isinstance(server, trio.SocketStream)
    return client, server


def lowat(stream: trio.SocketStream) -> int:
    return int(stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


async def serve_one(nursery: trio.Nursery, handler: Recorder
                    ) -> tuple[Conn, trio.SocketStream, Peer]:
    client, server = await tcp_pair()
    conn = Conn(server, handler, Config(), is_server=True,
                request=Request("GET", "/", Headers()))
    nursery.start_soon(conn.listen)
    return conn, server, Peer(client)


async def test_a_frame_in_pieces_wakes_the_reader_for_its_rest() -> None:
    payload = b"x" * 5000
    frame = build_frame(BINARY, payload)
    rec = Recorder(echo=True)
    async with trio.open_nursery() as nursery:
        conn, server, peer = await serve_one(nursery, rec)
        assert lowat(server) == 1
        await peer.send_raw(frame[:1008])  # header (8) + 1000 payload bytes
        assert await settle(lambda: lowat(server) == 4000)
        await peer.send_raw(frame[1008:])
        echo = await peer.recv_frame()
        assert (echo.opcode, echo.payload) == (BINARY, payload)
        assert await settle(lambda: lowat(server) == 1)  # between frames: any byte wakes it
        await peer.send_close(1000)
        assert (await peer.recv_frame()).opcode == CLOSE
        await rec.wait_endings()
        await peer.aclose()
    assert rec.of("close") == [(1000, b"")]


async def test_the_low_water_mark_is_capped() -> None:
    frame = build_frame(BINARY, b"y" * (4 * LOWAT_CAP))
    rec = Recorder(echo=True)
    async with trio.open_nursery() as nursery:
        conn, server, peer = await serve_one(nursery, rec)
        await peer.send_raw(frame[:100])
        assert await settle(lambda: lowat(server) == LOWAT_CAP)
        await peer.send_raw(frame[100:])
        assert len((await peer.recv_frame()).payload) == 4 * LOWAT_CAP
        await peer.send_close(1000)
        await rec.wait_endings()
        await peer.aclose()


@pytest.mark.parametrize("first", [b"ok", b""])
async def test_text_in_pieces_is_checked_piece_by_piece(first: bytes) -> None:
    # Autobahn 6.4.3: a valid first piece, then a piece with invalid UTF-8, and the
    # rest of the frame never comes: the connection must fail on the second piece,
    # so a text frame must not set the low-water mark to its rest.
    frame = build_frame(TEXT, first + b"\xf4\x90\x80\x80" + b"z" * 4000)
    header = len(frame) - len(first) - 4004
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        conn, server, peer = await serve_one(nursery, rec)
        await peer.send_raw(frame[:header + len(first)])
        assert await settle(lambda: conn._reader.buffered == 0 and
                            conn._reader._in_frame)  # the first piece is consumed
        assert lowat(server) == 1
        await peer.send_raw(frame[header + len(first):header + len(first) + 4])
        with trio.fail_after(10):
            close = await peer.recv_frame()
        assert close.opcode == CLOSE and close.payload[:2] == (1007).to_bytes(2, "big")
        await peer.aclose()
        await rec.wait_endings()


async def test_unix_sockets_are_left_alone() -> None:
    a, b = socket.socketpair()
    transport = Transport(trio.SocketStream(trio.socket.from_stdlib_socket(a)))
    transport.want(5000)
    assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    a.close()
    b.close()


async def test_a_partial_direct_send_finishes_through_the_stream() -> None:
    client, server = await tcp_pair()
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport = Transport(server)
    rests: list[int] = []

    class Spy:  # the stream, recording what the direct send left for it
        async def send_all(self, data: memoryview) -> None:
            rests.append(len(data))
            await server.send_all(data)

    transport.stream = Spy()  # type: ignore[assignment]
    data = bytes(range(256)) * (2 * 1024)  # 512 KiB: more than the buffers hold
    got = bytearray()

    async def read_all() -> None:
        await trio.sleep(0.1)  # let the direct send fill the buffers first
        while len(got) < len(data):
            got.extend(await client.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await transport.send_all(data)
        assert len(rests) == 1 and 0 < rests[0] < len(data)
    assert bytes(got) == data
    rests.clear()
    await transport.send_all(b"small")  # the kernel takes it whole: no stream call
    assert rests == [] and await client.receive_some(10) == b"small"
    await client.aclose()
    await server.aclose()


def test_the_reader_says_how_much_of_a_frame_is_still_to_come() -> None:
    reader = FrameReader(expect_masked=True, max_content_length=1 << 20)
    frame = build_frame(BINARY, b"a" * 300)
    assert reader.wanted == 0
    assert list(reader.receive(frame[:3])) == []  # not even the whole header
    assert reader.wanted == 0
    assert list(reader.receive(frame[3:108])) == []  # 8 header bytes, 100 of payload
    assert reader.wanted == 200
    [message] = list(reader.receive(frame[108:]))
    assert message.data == b"a" * 300 and reader.wanted == 0
    text = build_frame(TEXT, b"a" * 300)
    assert list(reader.receive(text[:108])) == []
    assert reader.wanted == 0  # text is checked as it comes: never held back
