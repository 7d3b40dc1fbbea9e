"""Interoperability with Node's ws (tests/node, installed by scripts/components/node.sh).

Both directions: ws's client against our server, our client against ws's server. Every
test runs with permessage-deflate on (ws compresses every message, threshold 0, and so
do we) and off, and checks that both sides agree on what was negotiated. ws reports
what it saw through tests/node/peer.js (see nodews.py); our side through a Recorder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import trio_gws as gws
from trio_gws import Config, Conn, MessageTooLargeError, Opcode

import realproc
from helpers import Recorder, running_server
from nodews import NodePeer, b64, node_peer, pattern, unb64

TIMEOUT = 60  # per test; each step is bounded by nodews.EVENT_TIMEOUT too
TEXT = "héllo wörld – 你好，世界 🌍🎉 ✓"
LIMIT = 64 * 1024

pytestmark = pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "plain"])


@dataclass
class Pair:
    node: NodePeer
    conn: Conn  # our end
    handler: Recorder


def config(deflate: bool, limit: int) -> Config:
    return Config(compress_enabled=deflate, compress_threshold=0, max_content_length=limit)


async def check_negotiated(pair: Pair, opened: dict[str, object], deflate: bool) -> None:
    """ws and trio-gws agree on permessage-deflate, and it is what the test asked for."""
    assert opened["extensions"] == ("permessage-deflate" if deflate else "")
    assert pair.conn.compressed is deflate
    header = opened["header"]
    assert (header is not None and str(header).startswith("permessage-deflate")) is deflate


async def check_close(pair: Pair, closer: str, code: int, reason: str) -> None:
    """Each side reports the other's close frame. ws answers a close with its code and
    reason, trio-gws with the code alone (both allowed by RFC 6455 section 5.5.1)."""
    by_node = closer == "node"
    assert (await pair.node.expect("close")) == {
        "ev": "close", "code": code, "reason": "" if by_node else reason}
    [ending] = await pair.handler.wait_endings()
    assert ending.kind == "close" and ending.data == (code, reason.encode())


@asynccontextmanager
async def node_client(tmp_path: Path, deflate: bool, *, limit: int = 16 << 20
                      ) -> AsyncIterator[Pair]:
    """ws's client connected to our echo server."""
    handler = Recorder(echo=True)
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config(deflate, limit)) as port:
            async with node_peer("client", f"ws://127.0.0.1:{port}/node", deflate=deflate,
                                 log=tmp_path / "node-client.log") as node:
                opened = await node.expect("open")
                await handler.wait_kind("open")
                [conn] = handler.conns()
                pair = Pair(node, conn, handler)
                await check_negotiated(pair, opened, deflate)
                yield pair


@asynccontextmanager
async def node_server(tmp_path: Path, deflate: bool, *, limit: int = 16 << 20
                      ) -> AsyncIterator[Pair]:
    """Our client connected to ws's echo server."""
    handler = Recorder()
    port = realproc.free_port()
    with trio.fail_after(TIMEOUT):
        async with node_peer("server", port, deflate=deflate, echo=True,
                             log=tmp_path / "node-server.log") as node:
            await node.expect("listening")
            async with gws.open_conn(f"ws://127.0.0.1:{port}/", handler,
                                     config=config(deflate, limit)) as conn:
                opened = await node.expect("open")
                pair = Pair(node, conn, handler)
                await check_negotiated(pair, opened, deflate)
                yield pair


# -- ws's client, our server ----------------------------------------------------------


async def test_client_echo(tmp_path: Path, deflate: bool) -> None:
    async with node_client(tmp_path, deflate) as p:
        await p.node.command("send", text=TEXT)
        await p.node.command("send", text="")
        await p.node.command("send", b64=b64(b"\x00\xff" * 100), binary=True)
        await p.node.command("send", size=1 << 20, binary=True)
        assert (await p.node.expect("message")) == {"ev": "message", "binary": False,
                                                    "text": TEXT}
        assert (await p.node.expect("message"))["text"] == ""
        assert unb64((await p.node.expect("message"))["b64"]) == b"\x00\xff" * 100
        big = await p.node.expect("message")
        assert big["binary"] and unb64(big["b64"]) == pattern(1 << 20)
        received = p.handler.of("message")
        assert [m.opcode for m in received] == [Opcode.TEXT, Opcode.TEXT, Opcode.BINARY,
                                                Opcode.BINARY]
        assert received[0].text == TEXT and received[3].data == pattern(1 << 20)
        await p.node.command("close", code=1000, reason="done")
        # our answer echoes the code, without a reason (RFC 6455 section 5.5.1)
        assert (await p.node.expect("close")) == {"ev": "close", "code": 1000, "reason": ""}
        [ending] = await p.handler.wait_endings()
        assert ending.kind == "close" and ending.data == (1000, b"done")


async def test_client_fragments(tmp_path: Path, deflate: bool) -> None:
    async with node_client(tmp_path, deflate) as p:
        for piece in ("frag", "mént", "ed 🌍"):
            await p.node.command("send", text=piece, fin=piece.endswith("🌍"))
        # "€" split inside its UTF-8 sequence, a ping between the fragments
        euro = "€".encode()
        await p.node.command("send", b64=b64(euro[:1]), binary=False, fin=False)
        await p.node.command("ping", b64=b64(b"between"))
        await p.node.command("send", b64=b64(euro[1:] + euro), binary=False)
        await p.node.command("send", b64=b64(b""), binary=True, fin=False)
        await p.node.command("send", size=70_000, binary=True, fin=False)
        await p.node.command("send", b64=b64(b"\x01"), binary=True)
        assert (await p.node.expect("message"))["text"] == "fragménted 🌍"
        assert (await p.node.expect("pong"))["b64"] == b64(b"between")
        assert (await p.node.expect("message"))["text"] == "€€"
        assert unb64((await p.node.expect("message"))["b64"]) == pattern(70_000) + b"\x01"
        assert [m.data for m in p.handler.of("message")] == [
            "fragménted 🌍".encode(), euro * 2, pattern(70_000) + b"\x01"]
        assert p.handler.of("ping") == [b"between"]


async def test_client_ping_pong(tmp_path: Path, deflate: bool) -> None:
    async with node_client(tmp_path, deflate) as p:
        await p.node.command("ping", b64=b64(b"\x00node\xff"))
        assert unb64((await p.node.expect("pong"))["b64"]) == b"\x00node\xff"
        assert p.handler.of("ping") == [b"\x00node\xff"]
        await p.conn.write_ping(b"server \x00 ping")
        assert unb64((await p.node.expect("ping"))["b64"]) == b"server \x00 ping"
        assert await p.handler.wait_kind("pong") == [b"server \x00 ping"]


@pytest.mark.parametrize("closer", ["node", "ours"])
async def test_client_close_codes(tmp_path: Path, deflate: bool, closer: str) -> None:
    async with node_client(tmp_path, deflate) as p:
        if closer == "node":
            await p.node.command("close", code=4001, reason="bye – ünïcode")
        else:
            await p.conn.write_close(4002, "server says ✓")
        code, reason = (4001, "bye – ünïcode") if closer == "node" else (4002, "server says ✓")
        await check_close(p, closer, code, reason)


async def test_client_message_too_large(tmp_path: Path, deflate: bool) -> None:
    async with node_client(tmp_path, deflate, limit=LIMIT) as p:
        await p.node.command("send", size=LIMIT, binary=True)  # exactly the limit: fine
        assert unb64((await p.node.expect("message"))["b64"]) == pattern(LIMIT)
        await p.node.command("send", size=LIMIT + 1, textual=True)
        closed = await p.node.expect("close")
        assert closed["code"] == 1009 and "65536 bytes" in closed["reason"]
        [ending] = await p.handler.wait_endings()
        assert ending.kind == "error" and isinstance(ending.data, MessageTooLargeError)


# -- our client, ws's server ----------------------------------------------------------


async def test_server_echo(tmp_path: Path, deflate: bool) -> None:
    async with node_server(tmp_path, deflate) as p:
        await p.conn.write_string(TEXT)
        await p.conn.write_message(Opcode.BINARY, pattern(1 << 20))
        await p.conn.write_message(Opcode.BINARY, b"")
        assert (await p.node.expect("message"))["text"] == TEXT
        assert unb64((await p.node.expect("message"))["b64"]) == pattern(1 << 20)
        assert (await p.node.expect("message")) == {"ev": "message", "binary": True, "b64": ""}
        echoes = await p.handler.wait_kind("message", 3)
        assert [(m.opcode, m.data) for m in echoes] == [
            (Opcode.TEXT, TEXT.encode()), (Opcode.BINARY, pattern(1 << 20)),
            (Opcode.BINARY, b"")]
        await p.conn.aclose()
        assert (await p.node.expect("close")) == {"ev": "close", "code": 1000, "reason": ""}
        [ending] = await p.handler.wait_endings()
        assert ending.kind == "close" and ending.data == (1000, b"")


async def test_server_fragments(tmp_path: Path, deflate: bool) -> None:
    async with node_server(tmp_path, deflate) as p:
        await p.node.command("send", text="Tei", fin=False)
        await p.node.command("ping", b64=b64(b"mid-message"))
        await p.node.command("send", text="le – 片", fin=False)
        await p.node.command("send", text="段")
        await p.node.command("send", size=100_000, binary=True, fin=False)
        await p.node.command("send", b64=b64(b"end"), binary=True)
        first, second = await p.handler.wait_kind("message", 2)
        assert (first.opcode, first.text) == (Opcode.TEXT, "Teile – 片段")
        assert (second.opcode, second.data) == (Opcode.BINARY, pattern(100_000) + b"end")
        assert p.handler.of("ping") == [b"mid-message"]
        assert (await p.node.expect("pong"))["b64"] == b64(b"mid-message")


async def test_server_ping_pong(tmp_path: Path, deflate: bool) -> None:
    async with node_server(tmp_path, deflate) as p:
        await p.conn.write_ping(b"client \xff ping")
        assert unb64((await p.node.expect("ping"))["b64"]) == b"client \xff ping"
        assert await p.handler.wait_kind("pong") == [b"client \xff ping"]
        await p.node.command("ping", b64=b64(b"\x00ws"))
        assert unb64((await p.node.expect("pong"))["b64"]) == b"\x00ws"
        assert p.handler.of("ping") == [b"\x00ws"]


@pytest.mark.parametrize("closer", ["node", "ours"])
async def test_server_close_codes(tmp_path: Path, deflate: bool, closer: str) -> None:
    async with node_server(tmp_path, deflate) as p:
        if closer == "node":
            await p.node.command("close", code=4004, reason="node – ✓")
        else:
            await p.conn.write_close(4003, "ciao – ✓")
        code, reason = (4004, "node – ✓") if closer == "node" else (4003, "ciao – ✓")
        await check_close(p, closer, code, reason)


async def test_server_message_too_large(tmp_path: Path, deflate: bool) -> None:
    async with node_server(tmp_path, deflate, limit=LIMIT) as p:
        await p.node.command("send", size=LIMIT, binary=True)
        [message] = await p.handler.wait_kind("message")
        assert message.data == pattern(LIMIT)
        await p.node.command("send", size=LIMIT + 1, binary=True)
        closed = await p.node.expect("close")
        assert closed["code"] == 1009
        [ending] = await p.handler.wait_endings()
        assert ending.kind == "error" and isinstance(ending.data, MessageTooLargeError)
