"""serve() with an ssl_context: echo over TLS, and clients that get TLS wrong."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trustme
from websockets.sync.client import connect as ws_sync_connect

from trio_gws import Config

from helpers import (
    BINARY,
    TEXT,
    Peer,
    Recorder,
    count_fds,
    count_tasks,
    read_response,
    running_server,
    settle,
    upgrade_request,
    ws_connect,
)

TIMEOUT = 10


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@asynccontextmanager
async def tls_server(server_context: ssl.SSLContext, handler: Recorder | None = None,
                     config: Config | None = None) -> AsyncIterator[int]:
    handler = handler if handler is not None else Recorder(echo=True)
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config, ssl_context=server_context) as port:
            yield port


async def tls_stream(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    return trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")


async def tls_echo(port: int, ctx: ssl.SSLContext, payloads: list[bytes]) -> None:
    """A trio TLS client: handshake, echo every payload, close handshake."""
    peer, response = await ws_connect(port, stream=await tls_stream(port, ctx))
    assert response.status == 101
    for payload in payloads:
        opcode = BINARY if payload[:1] == b"\x00" else TEXT
        await peer.send(opcode, payload)
        frame = await peer.recv_frame()
        assert (frame.opcode, frame.payload) == (opcode, payload)
    await peer.send_close(1000, b"done")
    assert (await peer.recv_close()).close_code == 1000
    assert await peer.expect_eof() == b""
    await peer.aclose()


class Baseline:
    def __init__(self) -> None:
        self.tasks = count_tasks()
        self.fds = count_fds()

    async def check(self) -> None:
        assert await settle(lambda: count_tasks() == self.tasks), (count_tasks(), self.tasks)
        assert await settle(lambda: count_fds() <= self.fds), (count_fds(), self.fds)


async def test_echo_over_tls(server_context: ssl.SSLContext,
                             client_context: ssl.SSLContext) -> None:
    rec = Recorder(echo=True)
    async with tls_server(server_context, rec) as port:
        await tls_echo(port, client_context,
                       [b"hello", b"\x00" + b"b" * 100_000, "\u00e9t\u00e9".encode()])
        await rec.wait_endings()
        conn = rec.conns()[0]
        assert conn.remote_address[0] == "127.0.0.1"  # found under the SSLStream
        assert conn.local_address[1] == port
    assert rec.of("close") == [(1000, b"done")]


async def test_echo_over_tls_with_websockets_client(server_context: ssl.SSLContext,
                                                    client_context: ssl.SSLContext) -> None:
    rec = Recorder(echo=True)
    async with tls_server(server_context, rec) as port:

        def client() -> list[object]:
            got: list[object] = []
            with ws_sync_connect(f"wss://127.0.0.1:{port}/tls", ssl=client_context,
                                 open_timeout=5, close_timeout=5, max_size=None) as ws:
                for item in ("text over tls", b"\x01\x02" * 40_000):
                    ws.send(item)
                    got.append(ws.recv(timeout=5))
            return got

        got = await trio.to_thread.run_sync(client)
        assert got == ["text over tls", b"\x01\x02" * 40_000]
        await rec.wait_endings()
    assert rec.kinds()[-1] == "close"
    assert rec.of("close")[0][0] == 1000


async def test_plain_tcp_to_tls_port_is_dropped(server_context: ssl.SSLContext,
                                                client_context: ssl.SSLContext,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gws")
    rec = Recorder(echo=True)
    async with tls_server(server_context, rec) as port:
        await trio.testing.wait_all_tasks_blocked()
        baseline = Baseline()
        plain = Peer(await trio.open_tcp_stream("127.0.0.1", port))
        try:
            await plain.send_raw(upgrade_request())
        except trio.BrokenResourceError:
            pass  # the server may already have reset the connection
        # No HTTP response in clear text: just the end of the connection.
        rest = await plain.expect_eof()
        assert not rest.startswith(b"HTTP/")
        await plain.aclose()
        await baseline.check()
        assert await settle(lambda: any("handshake" in r.getMessage()
                                        for r in caplog.records))
        assert rec.events == []
        await tls_echo(port, client_context, [b"after plain client"])


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00"], ids=["nothing", "partial"])
async def test_stalled_tls_handshake_freed_by_handshake_timeout(
    sent: bytes, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    rec = Recorder(echo=True)
    async with tls_server(server_context, rec, Config(handshake_timeout=0.3)) as port:
        await trio.testing.wait_all_tasks_blocked()
        baseline = Baseline()
        staller = Peer(await trio.open_tcp_stream("127.0.0.1", port))
        if sent:
            await staller.send_raw(sent)
        with trio.fail_after(5):
            await staller.expect_eof()  # the server gave up on us
        await staller.aclose()
        await baseline.check()
        await tls_echo(port, client_context, [b"after staller"])


async def test_stalled_http_handshake_over_tls_gets_408(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with tls_server(server_context, config=Config(handshake_timeout=0.3)) as port:
        peer = Peer(await tls_stream(port, client_context))
        await peer.send_raw(b"GET / HTTP/1.1\r\n")  # TLS done, HTTP never finished
        response = await read_response(peer)
        assert response.status == 408
        await peer.expect_eof()
        await peer.aclose()
        await tls_echo(port, client_context, [b"after 408"])


async def test_wrong_ca_fails_on_the_client(server_context: ssl.SSLContext,
                                            client_context: ssl.SSLContext) -> None:
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    rec = Recorder(echo=True)
    async with tls_server(server_context, rec) as port:
        await trio.testing.wait_all_tasks_blocked()
        baseline = Baseline()
        stream = await tls_stream(port, other)
        with pytest.raises(trio.BrokenResourceError) as info:
            await stream.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await trio.aclose_forcefully(stream)
        await baseline.check()
        assert rec.events == []
        await tls_echo(port, client_context, [b"after wrong CA"])


async def test_wrong_hostname_fails_on_the_client(server_context: ssl.SSLContext,
                                                  client_context: ssl.SSLContext) -> None:
    async with tls_server(server_context) as port:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, client_context, server_hostname="example.org")
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
        await trio.aclose_forcefully(stream)
        await tls_echo(port, client_context, [b"after wrong host"])


# -- who closes first after a failure, over TLS (no half-close there) ---------------


async def test_tls_server_closes_first_after_failing_a_connection(
        server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """RFC 6455 7.1.1: the server closes the TCP connection first. Plain TCP sends
    FIN after the close frame; TLS cannot, so the server waits for the client's answer
    and closes once the client is quiet, without waiting for the client to close."""
    async with tls_server(server_context) as port:
        peer, _ = await ws_connect(port, stream=await tls_stream(port, client_context))
        await peer.send(TEXT, b"x", rsv=0x2)  # a reserved bit: 1002
        assert (await peer.recv_close()).close_code == 1002
        await peer.send_close(1002)
        with trio.fail_after(3):  # far less than close_timeout (5 s)
            assert await peer.expect_eof() == b""  # the server closed: we read EOF
        await peer.aclose()


async def test_tls_server_closes_at_once_after_an_invalid_close_frame(
        server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """The peer's close frame, even an invalid one, was its last word: the server
    answers and closes without waiting for anything more."""
    async with tls_server(server_context) as port:
        peer, _ = await ws_connect(port, stream=await tls_stream(port, client_context))
        await peer.send(0x8, b"\x03")  # a 1-byte close payload: 1002
        with trio.fail_after(3):
            assert (await peer.recv_close()).close_code == 1002
            assert await peer.expect_eof() == b""
        await peer.aclose()


async def test_tls_server_closes_at_once_after_an_oversized_close_frame(
        server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """Autobahn 7.3.6: a close frame whose payload is too long for a control frame."""
    async with tls_server(server_context) as port:
        peer, _ = await ws_connect(port, stream=await tls_stream(port, client_context))
        await peer.send(0x8, b"\x03\xe8" + b"a" * 124)
        with trio.fail_after(3):
            assert (await peer.recv_close()).close_code == 1002
            assert await peer.expect_eof() == b""
        await peer.aclose()
