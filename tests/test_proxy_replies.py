"""Proxies that misbehave, played by raw servers (no real proxy gives these on demand):
a 502 with a late body, a 407 to credentials, replies cut short, over-long, endless or
malformed, bytes before the tunnel is used, stalls (HTTP and SOCKS), no proxy at all,
and bad proxy URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

import trio_gws as gws
from trio_gws import Config

import realproc
from helpers import Recorder, reset

TIMEOUT = 20
PROXY_VARIABLES = ("ws_proxy", "WS_PROXY", "wss_proxy", "WSS_PROXY", "http_proxy",
                   "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- proxies that misbehave (raw servers) --------------------------------------------


ProxyScript = Callable[[trio.SocketStream, bytes], Awaitable[None]]


@asynccontextmanager
async def raw_proxy(script: ProxyScript) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that reads one request head and runs ``script(stream, head)``."""
    heads: list[bytes] = []

    async def serve_one(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(4096)
            if not data:
                return
            buf += data
        heads.append(buf)
        await script(stream, buf)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, serve_one, 0,
                                                 host="127.0.0.1"))
        yield listener.socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


def answer(reply: bytes, *, then_close: bool = True) -> ProxyScript:
    async def script(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(reply)
        if not then_close:
            await trio.sleep_forever()
    return script


async def proxy_error(port: int, *, timeout: float = TIMEOUT, url: str = "ws://127.0.0.1:9/",
                      proxy: str | None = None) -> gws.ProxyError:
    config = Config(handshake_timeout=timeout)
    with pytest.raises(gws.ProxyError) as info:
        await gws.connect(url, Recorder(), config=config,
                          proxy=proxy or f"http://127.0.0.1:{port}")
    return info.value


async def test_502_from_proxy() -> None:
    async def bad_gateway(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\n\r\n")
        await trio.sleep(0.2)  # the body comes later, and the connection stays open
        await stream.send_all(b"upstream ko")
        await trio.sleep_forever()

    async with raw_proxy(bad_gateway) as (port, heads):
        error = await proxy_error(port)
    assert error.status == 502
    assert error.body == b"upstream ko"  # read by Content-Length, not by waiting for close
    assert heads[0].startswith(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")


async def test_close_delimited_body_in_a_later_segment() -> None:
    # tinyproxy's way: HTTP/1.0, Connection: close, no Content-Length, the body after
    async def refuse(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(b"HTTP/1.0 407 Proxy Authentication Required\r\n"
                              b"Connection: close\r\n\r\n")
        await trio.sleep(0.2)
        await stream.send_all(b"<h1>Proxy Authentication Required</h1>")
        await stream.aclose()

    async with raw_proxy(refuse) as (port, _):
        error = await proxy_error(port)
    assert error.status == 407
    assert error.body == b"<h1>Proxy Authentication Required</h1>"


@pytest.mark.parametrize("connection", [b"Connection: close\r\n", b""])
async def test_body_without_end_is_not_waited_for(connection: bytes) -> None:
    # a close-delimited body that never closes is read for PROXY_BODY_GRACE only, and
    # without Connection: close or a length nothing more is read at all
    async def refuse(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\n" + connection + b"\r\nfirst")
        await trio.sleep(0.5)
        await stream.send_all(b" second")
        await trio.sleep_forever()

    async with raw_proxy(refuse) as (port, _):
        start = trio.current_time()
        error = await proxy_error(port, timeout=30)
        waited = trio.current_time() - start
    assert error.status == 403
    if connection:
        assert error.body == b"first second"
        assert 1.0 <= waited < 10  # the grace, far from the 30 s handshake timeout
    else:
        assert error.body == b"first"  # " second" came 0.5 s later: not waited for
        assert waited < 0.5


async def test_407_with_credentials() -> None:
    reply = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with raw_proxy(answer(reply)) as (port, heads):
        error = await proxy_error(port, proxy=f"http://bob:pa%3Ass@127.0.0.1:{port}")
    assert error.status == 407
    assert "refused the credentials of 'bob'" in str(error)
    # bob:pa:ss in base64
    assert b"Proxy-Authorization: Basic Ym9iOnBhOnNz\r\n" in heads[0]


@pytest.mark.parametrize(("reply", "expected"), [
    (b"", "closed the connection before answering"),
    (b"HTTP/1.1 200 Conn", "closed the connection in the middle of its reply"),
    (b"HTTP/1.1 200 OK\r\nVia: tiny", "closed the connection in the middle of its reply"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", "too large"),
    (b"HTTP/1.1 200 " + b"a" * 10000, "too large"),
    (b"HTTP/1.1 OK\r\n\r\n", "malformed reply"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed reply"),
    (b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n", "malformed reply"),
    (b"HTTP/1.1 200 OK\r\n\r\nsurprise", "sent 8 bytes after its 200 reply"),
])
async def test_misbehaving_proxy(reply: bytes, expected: str) -> None:
    async with raw_proxy(answer(reply)) as (port, _):
        error = await proxy_error(port)
    assert expected in str(error)
    assert error.status == (200 if b"surprise" in reply else 0)


async def test_over_long_reply_that_never_ends() -> None:
    # a proxy streaming header bytes forever is cut off by the head limit
    async def endless(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\n")
        while True:
            await stream.send_all(b"X-More: " + b"m" * 1000 + b"\r\n")

    async with raw_proxy(endless) as (port, _):
        error = await proxy_error(port)
    assert "too large" in str(error)


async def test_stalled_proxy_bounded_by_handshake_timeout() -> None:
    async def stall(stream: trio.SocketStream, head: bytes) -> None:
        await trio.sleep_forever()

    async with raw_proxy(stall) as (port, _):
        with pytest.raises(gws.WebSocketTimeoutError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect("ws://127.0.0.1:9/", Recorder(),
                                  config=Config(handshake_timeout=1.0),
                                  proxy=f"http://127.0.0.1:{port}")
    assert f"waiting for proxy http://127.0.0.1:{port} to open a tunnel" in str(info.value)


async def test_stalled_socks_proxy_bounded_by_handshake_timeout() -> None:
    async def stall(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, stall, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with pytest.raises(gws.WebSocketTimeoutError, match="SOCKS exchange"):
            with trio.fail_after(TIMEOUT):
                await gws.connect("ws://127.0.0.1:9/", Recorder(),
                                  config=Config(handshake_timeout=1.0),
                                  proxy=f"socks5://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()


async def test_unreachable_proxy() -> None:
    port = realproc.free_port()
    error = await proxy_error(port)
    assert error.status == 0
    assert f"cannot reach proxy http://127.0.0.1:{port}" in str(error)
    assert isinstance(error.__cause__, OSError)


async def test_unreachable_socks_proxy() -> None:
    port = realproc.free_port()
    error = await proxy_error(port, proxy=f"socks5://127.0.0.1:{port}")
    assert error.status == 0
    assert f"cannot reach proxy socks5://127.0.0.1:{port}" in str(error)


async def test_http_proxy_that_resets_mid_exchange() -> None:
    async def script(stream: trio.SocketStream, head: bytes) -> None:
        reset(stream)

    async with raw_proxy(script) as (port, heads):
        error = await proxy_error(port)
    assert heads and heads[0].startswith(b"CONNECT 127.0.0.1:9 ")
    assert f"connection to proxy http://127.0.0.1:{port} lost" in str(error)


async def test_socks_proxy_that_resets_mid_exchange() -> None:
    async def greet_then_reset(stream: trio.SocketStream) -> None:
        greeting = await stream.receive_some(64)
        assert greeting[:1] == b"\x05"  # SOCKS5
        reset(stream)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, greet_then_reset, 0,
                                                 host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        error = await proxy_error(port, proxy=f"socks5://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
    assert f"connection to proxy socks5://127.0.0.1:{port} lost" in str(error)


@pytest.mark.parametrize("bad", ["ftp://proxy:21", "http://", "http://proxy:99999",
                                 "socks6://proxy"])
async def test_bad_proxy_url(bad: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        await gws.connect("ws://127.0.0.1:9/", Recorder(), proxy=bad)


async def test_bad_proxy_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "gopher://proxy:70")
    with pytest.raises(ValueError, match="environment"):
        await gws.connect("ws://example.invalid:9/", Recorder())

