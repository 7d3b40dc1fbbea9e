"""Streamed messages against the websockets library, both directions, compression on
and off: what we stream is read by websockets, what websockets fragments is read by
our on_stream, frame by frame."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

import trio_gws as gws
from helpers import running_server
from trio_gws import Config, Conn, MessageStream, Opcode

COMPRESSION = pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
DATA = bytes(range(256)) * 4096  # 1 MiB
TEXT = "streamed \u20ac text, " * 5000


class StreamEcho(gws.EventHandler):
    """Echoes each message by streaming it back piece by piece; counts the pieces."""

    def __init__(self) -> None:
        self.pieces: list[int] = []

    async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
        count = 0
        async with conn.message_writer(stream.opcode) as writer:
            async for piece in stream:
                count += 1
                await writer.write(piece)
        self.pieces.append(count)


def fragments(data: Any, size: int) -> list[Any]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@COMPRESSION
async def test_websockets_client_against_our_streaming_server(compress: bool) -> None:
    handler = StreamEcho()
    config = Config(compress_enabled=compress, max_content_length=4 << 20)
    async with running_server(handler, config) as port:
        def client() -> list[Any]:
            results = []
            with ws_connect(f"ws://127.0.0.1:{port}/", max_size=None,
                            compression="deflate" if compress else None) as ws:
                assert bool(ws.protocol.extensions) is compress
                for message in (DATA, TEXT):
                    ws.send(fragments(message, 20_000))  # websockets fragments it
                    received = list(ws.recv_streaming())  # and reads ours as fragments
                    results.append((len(received), type(message)(b"" if isinstance(
                        message, bytes) else "").join(received) == message))
            return results

        results = await trio.to_thread.run_sync(client)
    assert all(same for _, same in results), results
    # Both sides really streamed: several pieces each way, not one joined message.
    assert all(count > 3 for count, _ in results)
    assert all(count > 3 for count in handler.pieces)


@COMPRESSION
async def test_our_streaming_client_against_a_websockets_server(compress: bool) -> None:
    """websockets echoes what it reads as fragments, fragment by fragment."""
    def echo(ws: ServerConnection) -> None:
        for _ in range(2):
            ws.send(ws.recv_streaming())

    server = ws_serve(echo, "127.0.0.1", 0, max_size=None,
                      compression="deflate" if compress else None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        received: list[tuple[Opcode, list[bytes]]] = []
        done = trio.Event()

        class Reader(gws.EventHandler):
            async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
                pieces = [piece async for piece in stream]
                received.append((stream.opcode, pieces))
                if len(received) == 2:
                    done.set()

        config = Config(compress_enabled=compress, max_content_length=4 << 20)
        async with gws.open_conn(f"ws://127.0.0.1:{port}/", Reader(), config=config) as conn:
            assert conn.compressed is compress
            await conn.write_file(Opcode.BINARY, fragments(DATA, 70_000))
            async with conn.message_writer(Opcode.TEXT) as writer:
                for part in fragments(TEXT.encode(), 30_001):  # splits the euro signs
                    await writer.write(part)
            with trio.fail_after(20):
                await done.wait()
        (op1, pieces1), (op2, pieces2) = received
        assert op1 is Opcode.BINARY and b"".join(pieces1) == DATA
        assert op2 is Opcode.TEXT and b"".join(pieces2).decode() == TEXT
        assert len(pieces1) > 3 and len(pieces2) > 3
    finally:
        server.shutdown()
        thread.join(10)
