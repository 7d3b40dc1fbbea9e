"""Plain HTTP on the WebSocket port (Config.http_handler) and what an application
answers with (gws.Response, gws.Accept): health checks, HEAD, limits, failures,
header injection."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import pytest
import trio
import trio.testing

import trio_gws as gws
from helpers import Recorder, http_exchange, running_server, ws_connect
from realproc import require


def pages(request: gws.Request) -> gws.Response | None:
    if request.path == "/healthz":
        return gws.Response(200, body="ok\n")
    if request.path == "/page":
        return gws.Response(200, {"Content-Type": "text/html; charset=utf-8"},
                            "<h1>caf\u00e9</h1>")
    if request.path == "/json":
        return gws.Response(201, [("Content-Type", "application/json"), ("X-A", "1"),
                                  ("X-A", "2")], b'{"ok": true}')
    return None  # the default: 426


CONFIG = gws.Config(http_handler=pages)


async def get(port: int, target: str, method: str = "GET", extra: str = "") -> Any:
    request = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    response, peer = await http_exchange(port, request)
    assert await peer.expect_eof() == b""  # Connection: close, and it did close
    return response


async def test_plain_get_head_health_and_upgrade_share_one_port() -> None:
    async with running_server(Recorder(echo=True), CONFIG) as port:
        health = await get(port, "/healthz")
        assert (health.status, health.body) == (200, b"ok\n")
        assert health.header("Content-Type") == "text/plain; charset=utf-8"
        assert health.header("Content-Length") == "3"
        assert health.header("Connection") == "close"
        page = await get(port, "/page")
        assert page.body == "<h1>caf\u00e9</h1>".encode()
        assert page.header("Content-Type") == "text/html; charset=utf-8"
        head = await get(port, "/page", "HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Length") == str(len(page.body))
        created = await get(port, "/json")
        assert created.status == 201 and created.body == b'{"ok": true}'
        assert created.all("X-A") == ["1", "2"]
        # Not the handler's: today's 426 for a GET without Upgrade...
        default = await get(port, "/chat")
        assert default.status == 426 and default.header("Upgrade") == "websocket"
        # ...and the WebSocket itself on the same port.
        peer, _ = await ws_connect(port, target="/chat")
        await peer.send_text(b"still a websocket")
        assert (await peer.recv_frame()).payload == b"still a websocket"
        await peer.aclose()


async def test_other_methods_reach_the_handler_and_unanswered_ones_get_405() -> None:
    seen: list[str] = []

    def record(request: gws.Request) -> gws.Response | None:
        seen.append(request.method)
        return gws.Response(204) if request.method == "OPTIONS" else None

    async with running_server(Recorder(), gws.Config(http_handler=record)) as port:
        assert (await get(port, "/", "OPTIONS")).status == 204
        refused = await get(port, "/", "POST", "Content-Length: 0\r\n")
        assert refused.status == 405 and refused.header("Allow") == "GET"
    assert seen == ["OPTIONS", "POST"]


async def test_curl_sees_the_health_check_and_the_page() -> None:
    curl = require("curl")
    async with running_server(Recorder(), CONFIG) as port:
        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([curl, "-sS", "--max-time", "10", *args],
                                  capture_output=True, text=True, timeout=20)

        result = await trio.to_thread.run_sync(run, f"http://127.0.0.1:{port}/healthz")
        assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
        result = await trio.to_thread.run_sync(run, "-I", f"http://127.0.0.1:{port}/page")
        assert result.stdout.startswith("HTTP/1.1 200 OK"), result.stdout
        assert "content-type: text/html; charset=utf-8" in result.stdout.lower()
        result = await trio.to_thread.run_sync(run, "-o", "/dev/null", "-w", "%{http_code}",
                                               f"http://127.0.0.1:{port}/nothing")
        assert result.stdout == "426"


async def test_a_handler_may_be_async() -> None:
    async def later(request: gws.Request) -> gws.Response:
        await trio.sleep(0.01)
        return gws.Response(200, body=request.query)

    async with running_server(Recorder(), gws.Config(http_handler=later)) as port:
        assert (await get(port, "/?a=1")).body == b"a=1"


async def test_a_handler_that_raises_is_a_500_and_the_server_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: gws.Request) -> gws.Response:
        if request.path == "/boom":
            raise KeyError("boom")
        return gws.Response(200, body="fine")

    async with running_server(Recorder(), gws.Config(http_handler=broken)) as port:
        failed = await get(port, "/boom")
        assert failed.status == 500 and failed.body == b"internal server error"
        assert (await get(port, "/fine")).body == b"fine"
    assert any("http_handler raised" in r.getMessage() and r.exc_info
               for r in caplog.records)


@pytest.mark.parametrize("returned", [200, "ok", b"ok", {"status": 200}, True])
async def test_a_handler_that_returns_no_response_is_a_500_with_a_clear_log(
        returned: object, caplog: pytest.LogCaptureFixture) -> None:
    config = gws.Config(http_handler=lambda request: returned)  # type: ignore[arg-type,return-value]
    async with running_server(Recorder(), config) as port:
        assert (await get(port, "/")).status == 500
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("expected a gws.Response or None" in m and repr(returned) in m
               for m in messages), messages


async def test_a_handler_slower_than_handshake_timeout_is_a_408() -> None:
    async def stuck(request: gws.Request) -> gws.Response:
        await trio.sleep_forever()
        raise AssertionError

    config = gws.Config(http_handler=stuck, handshake_timeout=0.3)
    async with running_server(Recorder(), config) as port:
        with trio.fail_after(5):
            assert (await get(port, "/")).status == 408


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
])
async def test_limits_and_malformed_heads_on_the_http_path(request_bytes: bytes,
                                                          status: int) -> None:
    called: list[gws.Request] = []

    def handler(request: gws.Request) -> gws.Response:
        called.append(request)
        return gws.Response(200)

    async with running_server(Recorder(), gws.Config(http_handler=handler)) as port:
        response, peer = await http_exchange(port, request_bytes)
        await peer.aclose()
        assert response.status == status
    assert called == []  # refused before the application saw it


# -- responses: validated when made ---------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nSet-Cookie: session=stolen"},
    {"X-Evil": "a\nb"},
    {"X-Evil": "a\rb"},
    {"X-Evil": "nul\x00"},
    {"Bad Name": "x"},
    {"X:Colon": "x"},
    {"": "x"},
    [("X-Unicode", "\u2028")],
])
def test_header_injection_is_a_value_error(headers: Any) -> None:
    with pytest.raises(ValueError):
        gws.Response(200, headers)
    with pytest.raises(ValueError):
        gws.Accept(headers)


@pytest.mark.parametrize("status", [99, 100, 101, 199, 600, "200", None])
def test_a_response_status_is_a_final_one(status: Any) -> None:
    with pytest.raises(ValueError):
        gws.Response(status)


def test_responses_keep_what_they_were_given() -> None:
    response = gws.Response(404, {"X-A": "1"}, "caf\u00e9")
    assert response.body == "caf\u00e9".encode() and response.header_items == [("X-A", "1")]
    assert gws.Rejection().status == 403 and isinstance(gws.Rejection(), gws.Response)
    assert gws.Response(200) == gws.Response(200)
    assert gws.Accept({"Set-Cookie": "a=1"}).header_items == [("Set-Cookie", "a=1")]


async def test_an_injection_attempt_in_a_handler_never_reaches_the_wire() -> None:
    def echo_name(request: gws.Request) -> gws.Response:
        # What a careless handler does with user input:
        return gws.Response(200, {"X-Name": request.query.replace("%0D%0A", "\r\n")})

    async with running_server(Recorder(), gws.Config(http_handler=echo_name)) as port:
        response = await get(port, "/?a%0D%0ASet-Cookie:%20session=stolen")
        assert response.status == 500
        assert response.header("Set-Cookie") is None


async def test_framing_headers_from_the_application_are_replaced() -> None:
    def liar(request: gws.Request) -> gws.Response:
        return gws.Response(200, {"Content-Length": "999", "Transfer-Encoding": "chunked"},
                            b"abc")

    async with running_server(Recorder(), gws.Config(http_handler=liar)) as port:
        response = await get(port, "/")
        assert response.body == b"abc" and response.header("Content-Length") == "3"
        assert response.header("Transfer-Encoding") is None


# -- the upgrader's other paths -------------------------------------------------------


async def test_upgrade_raises_for_a_plain_request_answered_by_the_handler() -> None:
    client, server = trio.testing.memory_stream_pair()
    upgrader = gws.Upgrader(Recorder(), CONFIG)
    await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(gws.HandshakeError, match="not a WebSocket upgrade") as info:
        await upgrader.upgrade(server)
    assert info.value.status == 200 and info.value.body == b"ok\n"
    assert (await client.receive_some(1000)).startswith(b"HTTP/1.1 200 OK\r\n")
