"""Who gets in: Config.origins (before authorize), authorize's Accept, and the
connection limits (503 with Retry-After, per server and per address)."""

from __future__ import annotations

import resource
import socket
from collections.abc import MutableMapping
from functools import partial
from typing import Any

import pytest
import trio

import trio_gws as gws
from helpers import (
    Peer,
    Recorder,
    count_fds,
    http_exchange,
    read_response,
    running_server,
    settle,
    upgrade_request,
    ws_connect,
)


async def handshake(port: int, headers: dict[str, Any] | None = None,
                    source: str | None = None) -> tuple[int, Any, Peer]:
    """Try the opening handshake; (status, response, peer)."""
    if source is None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    else:
        stream = await open_from(source, port)
    peer = Peer(stream)
    await peer.send_raw(upgrade_request(headers=headers))
    response = await read_response(peer)
    return response.status, response, peer


async def open_from(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:port from another loopback address."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


# -- origins ------------------------------------------------------------------------


async def test_origins_are_checked_before_authorize() -> None:
    asked: list[str | None] = []

    def authorize(request: gws.Request, session: MutableMapping[str, object]) -> bool:
        asked.append(request.headers.get("Origin"))
        return True

    config = gws.Config(origins=["https://chat.example", None], authorize=authorize)
    async with running_server(Recorder(), config) as port:
        status, response, peer = await handshake(port, {"Origin": "https://evil.example"})
        assert status == 403 and b"origin not allowed" in response.body
        await peer.aclose()
        for origin in ("https://chat.example", "HTTPS://Chat.Example", None):
            headers = {"Origin": origin} if origin else {}
            status, _, peer = await handshake(port, headers)
            assert status == 101, origin
            await peer.aclose()
    assert asked == ["https://chat.example", "HTTPS://Chat.Example", None]


async def test_without_a_none_entry_a_request_with_no_origin_is_refused() -> None:
    config = gws.Config(origins=["https://chat.example"])
    async with running_server(Recorder(), config) as port:
        status, _, peer = await handshake(port)
        assert status == 403
        await peer.aclose()


async def test_a_repeated_origin_is_a_bad_request() -> None:
    config = gws.Config(origins=["https://a.example", "https://b.example"])
    async with running_server(Recorder(), config) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        peer = Peer(stream)
        await peer.send_raw(upgrade_request(extra=[("Origin", "https://a.example"),
                                                   ("Origin", "https://b.example")]))
        assert (await read_response(peer)).status == 400
        await peer.aclose()


async def test_origins_do_not_apply_to_plain_http() -> None:
    config = gws.Config(origins=["https://chat.example"],
                        http_handler=lambda request: gws.Response(200, body="page"))
    async with running_server(Recorder(), config) as port:
        response, peer = await http_exchange(
            port, b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: https://other.example\r\n\r\n")
        await peer.aclose()
        assert response.status == 200


def test_origins_must_be_a_sequence_not_a_string() -> None:
    with pytest.raises(ValueError, match="sequence"):
        gws.Config(origins="https://chat.example")  # type: ignore[arg-type]


# -- authorize: Accept and Response -------------------------------------------------


async def test_authorize_accept_adds_headers_to_this_connections_101() -> None:
    def authorize(request: gws.Request, session: MutableMapping[str, object]) -> Any:
        if request.query == "user=ann":
            return gws.Accept({"Set-Cookie": "session=ann; HttpOnly"})
        if request.query == "user=bob":
            return gws.Accept([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        return gws.Response(401, {"WWW-Authenticate": "Bearer"}, "log in")

    config = gws.Config(authorize=authorize, response_header={"X-Server": "gws"})
    async with running_server(Recorder(), config) as port:
        peer, response = await ws_connect(port, target="/?user=ann")
        assert response.all("Set-Cookie") == ["session=ann; HttpOnly"]
        assert response.header("X-Server") == "gws"
        await peer.aclose()
        peer, response = await ws_connect(port, target="/?user=bob")
        assert response.all("Set-Cookie") == ["a=1", "b=2"]
        await peer.aclose()
        status, refused, peer2 = await handshake(port, None)
        assert status == 401 and refused.body == b"log in"
        assert refused.header("WWW-Authenticate") == "Bearer"
        await peer2.aclose()


async def test_authorize_returning_something_else_is_a_500(
        caplog: pytest.LogCaptureFixture) -> None:
    config = gws.Config(authorize=lambda request, session: "yes")  # type: ignore[arg-type,return-value]
    async with running_server(Recorder(), config) as port:
        status, _, peer = await handshake(port)
        assert status == 500
        await peer.aclose()
    assert any("expected True, False, None, an Accept or a Response" in r.getMessage()
               for r in caplog.records)


# -- connection limits --------------------------------------------------------------


async def test_max_connections_refuses_with_503_and_serves_again_later() -> None:
    rec = Recorder()
    config = gws.Config(max_connections=3)
    async with running_server(rec, config) as port:
        held = [(await ws_connect(port))[0] for _ in range(3)]
        status, response, peer = await handshake(port)
        assert status == 503 and response.header("Retry-After") == "1"
        assert await peer.expect_eof() == b""
        # Plain HTTP requests count too while they last; the handshakes in progress
        # and the open connections are what is counted, from accept to close.
        await held[0].send_close(1000)
        await held[0].recv_close()
        await held[0].aclose()
        await rec.wait_endings(1)
        with trio.fail_after(5):
            while True:
                status, _, peer = await handshake(port)
                await peer.aclose()
                if status == 101:
                    break
                await trio.sleep(0.01)  # the closed one is still being counted down
        for other in held[1:]:
            await other.aclose()


async def test_a_limited_address_does_not_hold_up_the_others() -> None:
    """10,000 connection attempts from one address against max_connections_per_ip=100:
    the rest get 503 at once, another address is served, and no fd is leaked."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    config = gws.Config(max_connections_per_ip=100, handshake_timeout=30)
    baseline = count_fds()
    async with running_server(Recorder(), config) as port:
        held = [(await ws_connect(port))[0] for _ in range(100)]
        statuses: dict[int, int] = {}

        async def attempts(count: int) -> None:
            for _ in range(count):
                status, _, peer = await handshake(port)
                statuses[status] = statuses.get(status, 0) + 1
                await peer.aclose()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(50):  # 50 at a time, 200 each
                    nursery.start_soon(attempts, 200)
                # Meanwhile another address gets in.
                other, _ = await ws_connect(0, stream=await open_from("127.0.0.2", port))
                await other.send_text(b"hello")
                await other.aclose()
        assert statuses == {503: 10_000}
        for peer in held:
            await peer.aclose()
    assert await settle(lambda: count_fds() <= baseline + 2), (count_fds(), baseline)


async def test_limits_are_validated() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError):
            gws.Config(max_connections=bad)
        with pytest.raises(ValueError):
            gws.Config(max_connections_per_ip=bad)


async def test_a_unix_socket_client_has_no_address_to_limit(tmp_path: Any) -> None:
    config = gws.Config(max_connections_per_ip=1)
    path = tmp_path / "s.sock"
    async with trio.open_nursery() as nursery:
        listener = await gws.open_unix_listener(path)
        await nursery.start(partial(gws.serve_listeners, Recorder(), [listener],
                                    config=config))
        peers = []
        for _ in range(3):
            stream = await trio.open_unix_socket(str(path))
            peers.append((await ws_connect(0, stream=stream))[0])
        for peer in peers:
            await peer.aclose()
        nursery.cancel_scope.cancel()


def test_another_loopback_address_is_usable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))  # Linux routes all of 127/8 to the loopback
