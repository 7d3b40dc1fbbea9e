"""examples/chat/server.py, in-process on a free port: the page and the health check
over plain HTTP on the WebSocket port, two websockets clients chatting, joins and
leaves, and the Origin check."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_sync_connect

from helpers import http_exchange, load_chat_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat" / "server.py"

TIMEOUT = 15

chat = load_chat_example()


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def join(stack: contextlib.ExitStack, ws_port: int, name: str) -> ClientConnection:
    return stack.enter_context(ws_sync_connect(f"ws://127.0.0.1:{ws_port}/chat?name={name}",
                                               open_timeout=5, close_timeout=5))


def receive(ws: ClientConnection) -> dict[str, Any]:
    data = ws.recv(timeout=5)
    assert isinstance(data, str)
    event = json.loads(data)
    assert isinstance(event, dict)
    return event


async def test_chat_page_and_room() -> None:
    with trio.fail_after(TIMEOUT), contextlib.ExitStack() as stack:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(chat.run_chat, "127.0.0.1", 0)
            port = server.port

            # The page and the health check, on the chat's own port.
            response, peer = await http_exchange(
                port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await peer.aclose()
            assert response.status == 200
            assert response.header("Content-Type") == "text/html; charset=utf-8"
            assert response.header("Connection") == "close"
            page = response.body.decode("utf-8")
            assert "new WebSocket(" in page and "location.host" in page
            head, peer = await http_exchange(
                port, b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert head.status == 200 and head.body == b""
            assert head.header("Content-Length") == str(len(response.body))
            await peer.aclose()
            health, peer = await http_exchange(
                port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await peer.aclose()
            assert (health.status, health.body) == (200, b"ok 0 members\n")
            missing, peer = await http_exchange(
                port, b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await peer.aclose()
            assert missing.status == 404
            # A plain GET of the chat itself: the default 426 says to upgrade.
            refused, peer = await http_exchange(
                port, b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await peer.aclose()
            assert refused.status == 426

            alice = await in_thread(join, stack, port, "alice")
            welcome = await in_thread(receive, alice)
            assert welcome == {"type": "welcome", "name": "alice", "users": ["alice"]}
            joined = await in_thread(receive, alice)
            assert (joined["type"], joined["name"], joined["count"]) == ("join", "alice", 1)

            bob = await in_thread(join, stack, port, "bob")
            assert (await in_thread(receive, bob))["users"] == ["alice", "bob"]
            for ws in (alice, bob):
                event = await in_thread(receive, ws)
                assert (event["type"], event["name"], event["count"]) == ("join", "bob", 2)
            assert len(server.connections) == 2

            health, peer = await http_exchange(
                port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await peer.aclose()
            assert health.body == b"ok 2 members\n"

            await in_thread(alice.send, "  hello bob \u20ac ")
            alice_port = alice.local_address[1]
            for ws in (alice, bob):
                event = await in_thread(receive, ws)
                assert event == {"type": "message", "name": "alice",
                                 "address": f"127.0.0.1:{alice_port}",
                                 "text": "hello bob \u20ac"}

            await in_thread(bob.close)
            left = await in_thread(receive, alice)
            assert (left["type"], left["name"], left["count"]) == ("leave", "bob", 1)
            await in_thread(alice.close)
            nursery.cancel_scope.cancel()


async def test_chat_refuses_other_origins_and_paths() -> None:
    def attempt(port: int, path: str, origin: str | None) -> int:
        kw: dict[str, Any] = {"origin": origin} if origin else {}
        try:
            with ws_sync_connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5, **kw):
                return 101
        except InvalidStatus as exc:
            return int(exc.response.status_code)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(chat.run_chat, "127.0.0.1", 0)
            port = server.port
            assert await in_thread(attempt, port, "/chat", "http://evil.example") == 403
            # Same host, another port: another origin.
            assert await in_thread(attempt, port, "/chat", "http://127.0.0.1:1") == 403
            assert await in_thread(attempt, port, "/elsewhere", None) == 404
            for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                assert await in_thread(attempt, port, "/chat?name=x", own) == 101
            assert await in_thread(attempt, port, "/chat?name=script", None) == 101
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("host, port, expected", [
    ("127.0.0.1", 8000, ["http://127.0.0.1:8000", "http://[::1]:8000",
                         "http://localhost:8000", None]),
    ("example.com", 80, ["http://example.com", None]),
    ("::", 8000, ["http://[::]:8000", None]),
])
def test_own_origins(host: str, port: int, expected: list[str | None]) -> None:
    assert chat.own_origins(host, port) == expected


def test_one_room_across_two_processes_through_redis(tmp_path: Path) -> None:
    """Two chat servers, two processes on two ports, one real redis-server: what is
    typed on one reaches the other, and joins and leaves cross too."""
    from realproc import free_port, running
    from redisproc import redis_server

    ports = [free_port(), free_port()]
    with redis_server(tmp_path) as redis, contextlib.ExitStack() as stack:
        for index, port in enumerate(ports):
            stack.enter_context(running(
                [sys.executable, EXAMPLE, "--port", str(port), "--redis", redis.url],
                log=tmp_path / f"chat-{index}.log", port=port))
        alice = join(stack, ports[0], "alice")
        assert receive(alice)["type"] == "welcome"
        assert receive(alice)["name"] == "alice"  # her own join, back through Redis
        bob = join(stack, ports[1], "bob")
        assert receive(bob) == {"type": "welcome", "name": "bob", "users": ["bob"]}
        for ws in (alice, bob):  # bob's join, told on both servers
            event = receive(ws)
            assert (event["type"], event["name"]) == ("join", "bob")
        alice.send("hello from the first server")
        bob.send("and back from the second")
        seen = [[receive(ws)["text"] for _ in range(2)] for ws in (alice, bob)]
        assert sorted(seen[0]) == ["and back from the second", "hello from the first server"]
        assert seen[0] == seen[1]  # whichever Redis took first, first for everyone
        bob.close()
        left = receive(alice)
        assert (left["type"], left["name"]) == ("leave", "bob")
