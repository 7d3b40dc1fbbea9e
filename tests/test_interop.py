"""Interoperability with an independent implementation: the ``websockets`` sync client.

The client runs in a worker thread (trio.to_thread.run_sync), so Trio stays in charge
of the server while the client blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_sync_connect

from trio_gws import Config, Conn, Message, Opcode

from helpers import Recorder, running_server

TIMEOUT = 10
T = TypeVar("T")


class InteropHandler(Recorder):
    """Echoes messages; a few commands make the server act instead."""

    async def on_message(self, conn: Conn, message: Message) -> None:
        await super().on_message(conn, message)
        if message.opcode is Opcode.TEXT and message.text.startswith("cmd:"):
            _, command, *args = message.text.split(":")
            if command == "close":
                await conn.write_close(int(args[0]), args[1])
            elif command == "ping":
                await conn.write_ping(args[0].encode())
            elif command == "info":
                await conn.write_string(f"{conn.subprotocol}|{conn.request.target}|"
                                        f"{conn.request.headers.get('X-Client')}")
            return
        await conn.write_message(message.opcode, message.data)


async def run_client(port: int, body: Callable[[ClientConnection], T], *,
                     path: str = "/", **kw: Any) -> T:
    """Connect with websockets in a thread, run ``body(ws)``, close, return its result."""
    kw.setdefault("compression", None)

    def client() -> T:
        with ws_sync_connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5,
                             close_timeout=5, max_size=None, **kw) as ws:
            return body(ws)

    return await trio.to_thread.run_sync(client)


async def interop(body: Callable[[ClientConnection], T], *, config: Config | None = None,
                  path: str = "/", **kw: Any) -> tuple[T, InteropHandler]:
    handler = InteropHandler()
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config) as port:
            result = await run_client(port, body, path=path, **kw)
            await handler.wait_endings()
    return result, handler


def text_of_size(n: int) -> str:
    """A string of exactly ``n`` UTF-8 bytes, mostly 3-byte characters."""
    return "\u20ac" * (n // 3) + "x" * (n % 3)


SIZES = [0, 125, 126, 65535, 65536, 1024 * 1024]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_echo(kind: str, size: int) -> None:
    payload: str | bytes = (text_of_size(size) if kind == "text"
                            else bytes(i % 251 for i in range(size)))

    def body(ws: ClientConnection) -> object:
        ws.send(payload)
        return ws.recv(timeout=5)

    echoed, handler = await interop(body)
    assert type(echoed) is type(payload)
    assert echoed == payload
    [message] = handler.of("message")
    assert message.opcode is (Opcode.TEXT if kind == "text" else Opcode.BINARY)
    assert len(message.data) == size
    assert handler.kinds()[-1] == "close"


async def test_many_messages_keep_their_order() -> None:
    def body(ws: ClientConnection) -> list[object]:
        for i in range(200):
            ws.send(f"m{i}" if i % 2 else f"m{i}".encode())
        return [ws.recv(timeout=5) for _ in range(200)]

    got, _ = await interop(body)
    assert got == [f"m{i}" if i % 2 else f"m{i}".encode() for i in range(200)]


@pytest.mark.parametrize(
    "fragments, expected",
    [
        (["frag", "ment", "ed \u20ac"], "fragmented \u20ac"),
        ([b"\x00", b"", b"\x01" * 70_000, b"\x02"], b"\x00" + b"\x01" * 70_000 + b"\x02"),
        # a 3-byte character split across fragments
        (["\u20ac"[:1], "\u20ac" * 2], "\u20ac" * 3),
    ],
    ids=["text", "binary", "text-many"],
)
async def test_fragmented_send(fragments: list[Any], expected: object) -> None:
    def body(ws: ClientConnection) -> object:
        ws.send(iter(fragments))  # an iterable is sent as one fragmented message
        return ws.recv(timeout=5)

    echoed, handler = await interop(body)
    assert echoed == expected
    assert len(handler.of("message")) == 1


async def test_utf8_character_split_across_fragments_by_bytes() -> None:
    # ws.send(iterable) fragments per str item; to split a character's bytes across
    # fragments, drive websockets' sans-I/O protocol under the connection's send lock.
    def body(ws: ClientConnection) -> object:
        data = "a\u20acb".encode()
        with ws.send_context():
            ws.protocol.send_text(data[:2], fin=False)
        with ws.send_context():
            ws.protocol.send_continuation(data[2:], fin=True)
        return ws.recv(timeout=5)

    echoed, _ = await interop(body)
    assert echoed == "a\u20acb"


@pytest.mark.parametrize("payload", [b"", b"interop ping", bytes(range(125))])
async def test_client_ping_gets_pong_with_payload(payload: bytes) -> None:
    def body(ws: ClientConnection) -> bool:
        return ws.ping(payload).wait(5)

    answered, handler = await interop(body)
    assert answered is True
    assert handler.of("ping") == [payload]


async def test_server_ping_gets_pong_with_payload() -> None:
    def body(ws: ClientConnection) -> object:
        ws.send("cmd:ping:from server")
        ws.send("sync")  # the server writes the ping before this echo
        return ws.recv(timeout=5)

    echoed, handler = await interop(body)
    assert echoed == "sync"
    assert handler.of("pong") == [b"from server"]
    # the client answered the ping before it closed (the pong may come before or
    # after the "sync" message: the client's thread answers pings on its own)
    kinds = handler.kinds()
    assert kinds.count("pong") == 1
    assert kinds[-1] == "close" and kinds.index("pong") < len(kinds) - 1


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "bye"), (4001, "client \u2603")])
async def test_client_close_code_and_reason(code: int, reason: str) -> None:
    def body(ws: ClientConnection) -> Any:
        ws.close(code, reason)
        return ws.protocol.close_rcvd

    echoed, handler = await interop(body)
    assert echoed is not None and echoed.code == code  # the server echoed the code
    assert handler.of("close") == [(code, reason.encode())]


@pytest.mark.parametrize("code, reason", [(1000, "done"), (4002, "server \u2603 bye")])
async def test_server_initiated_close(code: int, reason: str) -> None:
    def body(ws: ClientConnection) -> tuple[Any, type]:
        ws.send(f"cmd:close:{code}:{reason}")
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as exc:
            return exc.rcvd, type(exc)
        raise AssertionError("recv() should have seen the close")

    (received, exc_type), handler = await interop(body)
    assert (received.code, received.reason) == (code, reason)
    assert (exc_type is ConnectionClosedOK) == (code == 1000)
    [ending] = handler.endings()
    assert ending.kind == "close"
    assert ending.data[0] == code  # websockets echoes the code


@pytest.mark.parametrize(
    "offered, expected",
    [(["superchat", "chat"], "chat"), (["superchat"], "superchat"), (["nope"], None)],
)
async def test_subprotocol_negotiation(offered: list[str], expected: str | None) -> None:
    config = Config(subprotocols=("chat", "superchat"))

    def body(ws: ClientConnection) -> tuple[Any, object]:
        ws.send("cmd:info")
        return ws.subprotocol, ws.recv(timeout=5)

    # (websockets accepts a server that picks none of the offered subprotocols)
    (chosen, info), handler = await interop(body, config=config, subprotocols=offered)
    assert chosen == expected
    assert str(info).split("|")[0] == str(expected)
    assert handler.conns()[0].subprotocol == expected


async def test_request_target_and_headers() -> None:
    def body(ws: ClientConnection) -> object:
        ws.send("cmd:info")
        return ws.recv(timeout=5)

    info, _ = await interop(body, path="/room/7?user=ann",
                            additional_headers={"X-Client": "websockets"})
    assert info == "None|/room/7?user=ann|websockets"


async def test_response_header_visible_to_client() -> None:
    config = Config(response_header={"X-Server": "trio-gws"})

    def body(ws: ClientConnection) -> object:
        return ws.response.headers.get("X-Server")

    value, _ = await interop(body, config=config)
    assert value == "trio-gws"


async def test_server_writes_from_another_task_while_client_reads() -> None:
    """Writes from a task other than the reader reach an independent client in order."""
    handler = InteropHandler()
    with trio.fail_after(TIMEOUT):
        async with running_server(handler) as port:
            async with trio.open_nursery() as nursery:

                def body(ws: ClientConnection) -> list[object]:
                    return [ws.recv(timeout=5) for _ in range(50)]

                async def client() -> None:
                    got.extend(await run_client(port, body))

                got: list[object] = []
                order: list[str] = []
                nursery.start_soon(client)
                await handler.wait_kind("open")
                conn = handler.conns()[0]

                async def writer(i: int) -> None:
                    await trio.sleep(0)
                    order.append(f"w{i}")  # no checkpoint between this and the write
                    await conn.write_string(f"w{i}")

                async with trio.open_nursery() as writers:
                    for i in range(50):
                        writers.start_soon(writer, i)
            await handler.wait_endings()
    assert sorted(order) == sorted(f"w{i}" for i in range(50))
    assert got == order
