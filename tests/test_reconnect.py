"""connect_forever against servers started here: down then back (a new on_open), 429
and 503 with Retry-After, giving up on what retrying cannot fix, backoff that resets
after a stable connection, and cancellation while dialling, connected or sleeping."""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trustme

import trio_gws as gws
from trio_gws import Backoff, Config
from trio_gws._reconnect import _wait_after, permanent, retry_after

import realproc
from helpers import Recorder, count_fds, settle
from httpstub import Stub, running

TIMEOUT = 20
QUICK = Backoff(initial=0.02, maximum=0.1)


@asynccontextmanager
async def forever(url: str, handler: gws.EventHandler | None = None,
                  **kw: object) -> AsyncIterator[gws.ReconnectingClient]:
    """Run connect_forever in a nursery for the block; cancel it at the end."""
    kw.setdefault("backoff", QUICK)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client = await nursery.start(partial(
                gws.connect_forever, url, handler if handler is not None else Recorder(),
                **kw))  # type: ignore[arg-type]
            yield client
            nursery.cancel_scope.cancel()


async def gives_up(url: str, **kw: object) -> BaseException:
    """connect_forever's own error (out of the nursery's exception group)."""
    kw.setdefault("backoff", QUICK)
    with pytest.raises(BaseExceptionGroup) as info:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(gws.connect_forever, url, Recorder(),
                                            **kw))  # type: ignore[arg-type]
    [error] = info.value.exceptions
    return error


async def test_server_down_for_a_while_then_back() -> None:
    port = realproc.free_port()
    client_events = Recorder()
    server_events = Recorder(echo=True)
    serve = partial(gws.serve, server_events, port, host="127.0.0.1")
    async with forever(f"ws://127.0.0.1:{port}/", client_events) as client:
        assert client.conn is None
        assert await settle(lambda: client.last_error is not None)
        assert isinstance(client.last_error, OSError)    # nothing listens yet
        async with trio.open_nursery() as servers:
            await servers.start(serve)
            first = await client.wait_connected()
            await first.write_string("one")
            await client_events.wait_kind("message")
            servers.cancel_scope.cancel()                # down: every client gets 1001
        await client_events.wait_endings(1)
        await settle(lambda: client.conn is None)
        assert client.conn is None
        async with trio.open_nursery() as servers:      # back, on the same port
            await servers.start(serve)
            second = await client.wait_connected()
            await second.write_string("two")
            await client_events.wait_kind("message", 2)
            servers.cancel_scope.cancel()
    assert second is not first
    assert client.connections == 2
    assert client_events.kinds()[:4] == ["open", "message", "close", "open"]
    assert client_events.conns() == [first, second]      # a new on_open, a new Conn
    assert client_events.of("close")[0][0] == 1001          # going away
    assert [m.text for m in client_events.of("message")] == ["one", "two"]


def refusal(status: int, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} No\r\n{extra}Content-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_is_honoured(status: int, form: str) -> None:
    stub = Stub()
    async with running(stub) as port:
        value = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2,
                                                                    usegmt=True)
        stub.responses["/"] = [refusal(status, f"Retry-After: {value}\r\n")]
        async with forever(f"ws://127.0.0.1:{port}/") as client:
            await client.wait_connected()
            first_error = client.last_error
    assert isinstance(first_error, gws.HandshakeError) and first_error.status == status
    assert len(stub.seen) == 2
    # the backoff alone would have waited at most 0.02 s
    assert stub.seen[1].time - stub.seen[0].time >= 1.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retried_statuses(status: int) -> None:
    stub = Stub()
    async with running(stub) as port:
        stub.responses["/"] = [refusal(status), refusal(status)]
        async with forever(f"ws://127.0.0.1:{port}/") as client:
            conn = await client.wait_connected()
            assert conn.request.target == "/"
    assert len(stub.seen) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 426])
async def test_gives_up_on_client_errors(status: int) -> None:
    stub = Stub(responses={"/": refusal(status)})
    async with running(stub) as port:
        error = await gives_up(f"ws://127.0.0.1:{port}/")
    assert isinstance(error, gws.HandshakeError)
    assert error.status == status
    assert len(stub.seen) == 1


async def test_gives_up_on_an_impossible_redirect() -> None:
    stub = Stub(responses={"/": refusal(302, "Location: ftp://127.0.0.1/\r\n")})
    async with running(stub) as port:
        error = await gives_up(f"ws://127.0.0.1:{port}/")
    assert "unsupported scheme" in str(error)
    assert len(stub.seen) == 1


async def test_gives_up_on_a_certificate_failure() -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    trusting_another = ssl.create_default_context()
    trustme.CA().configure_trust(trusting_another)
    stub = Stub()
    async with running(stub, ssl_context=server_context) as port:
        error = await gives_up(f"wss://127.0.0.1:{port}/", ssl_context=trusting_another)
    assert isinstance(error, trio.BrokenResourceError)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert stub.accepted == 1


@pytest.mark.parametrize("url", ["http://example.test/", "ws://", "ws://a/#frag"])
async def test_bad_url_fails_before_starting(url: str) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError):
            await nursery.start(gws.connect_forever, url, Recorder())


async def test_bad_proxy_fails_before_starting() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="proxy"):
            await nursery.start(partial(gws.connect_forever, "ws://127.0.0.1:9/", Recorder(),
                                        proxy="ftp://proxy.test"))


async def test_backoff_resets_after_a_stable_connection(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    # with jitter 1 every wait is the ceiling: 0.1, 0.2, 0.4 after connections that end
    # at once, back to 0.1 after one that stayed up longer than stable_after
    backoff = Backoff(initial=0.1, maximum=10, factor=2, stable_after=1.5,
                      jitter=lambda: 1.0)
    opened = 0
    stable_closed = trio.Event()

    class Server(gws.EventHandler):
        async def on_open(self, conn: gws.Conn) -> None:
            nonlocal opened
            opened += 1
            if opened == 4:
                await trio.sleep(2.0)
            await conn.write_close(1000)
            if opened == 4:
                stable_closed.set()

    caplog.set_level(logging.INFO, logger="trio_gws")
    port = realproc.free_port()
    async with trio.open_nursery() as servers:
        await servers.start(partial(gws.serve, Server(), port, host="127.0.0.1"))
        async with forever(f"ws://127.0.0.1:{port}/", backoff=backoff) as client:
            await stable_closed.wait()
            await settle(lambda: client.connections >= 5)
        servers.cancel_scope.cancel()
    waits = [float(w) for w in re.findall(r"connection ended; reconnecting in ([0-9.]+)s",
                                          caplog.text)]
    assert waits[:4] == [0.1, 0.2, 0.4, 0.1]


# -- cancellation ----------------------------------------------------------------------


async def test_cancelled_while_dialling() -> None:
    async def stall(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    stub = Stub(responses={"/": stall})
    async with running(stub) as port:
        await trio.sleep(0.05)
        sockets = count_fds()
        async with forever(f"ws://127.0.0.1:{port}/") as client:
            assert await settle(lambda: stub.accepted == 1)
        # cancelled mid-handshake: the client's socket is closed, nothing is left over
        assert client.conn is None
        with pytest.raises(gws.ConnectionClosedError, match="has stopped"):
            await client.wait_connected()
        assert await settle(lambda: count_fds() <= sockets + 1)  # the stub's side


async def test_cancelled_while_connected_closes_with_1001() -> None:
    server_events = Recorder()
    client_events = Recorder()
    async with trio.open_nursery() as servers:
        port = realproc.free_port()
        await servers.start(partial(gws.serve, server_events, port, host="127.0.0.1"))
        async with forever(f"ws://127.0.0.1:{port}/", client_events) as client:
            await client.wait_connected()
            await server_events.wait_kind("open")
        with trio.fail_after(TIMEOUT):
            [ending] = await server_events.wait_endings(1)
        servers.cancel_scope.cancel()
    assert (ending.kind, ending.data) == ("close", (1001, b""))
    assert client_events.kinds() == ["open", "close"]    # the close handshake completed
    assert client.conn is None


async def test_cancelled_while_connected_to_a_peer_that_never_answers() -> None:
    # the server's handler blocks its reader: our close is never answered, and
    # close_timeout bounds the wait
    class Deaf(gws.EventHandler):
        async def on_open(self, conn: gws.Conn) -> None:
            await trio.sleep_forever()

    async with trio.open_nursery() as servers:
        port = realproc.free_port()
        config = Config(close_timeout=0.5)
        await servers.start(partial(gws.serve, Deaf(), port, host="127.0.0.1",
                                    config=config))
        async with forever(f"ws://127.0.0.1:{port}/", config=config) as client:
            await client.wait_connected()
            start = trio.current_time()
        assert trio.current_time() - start < TIMEOUT / 2
        servers.cancel_scope.cancel()


async def test_cancelled_while_sleeping() -> None:
    port = realproc.free_port()
    async with forever(f"ws://127.0.0.1:{port}/", backoff=Backoff(initial=1000,
                                                                   maximum=1000,
                                                                   jitter=lambda: 1.0)
                       ) as client:
        assert await settle(lambda: client.last_error is not None)
        start = trio.current_time()
    assert trio.current_time() - start < TIMEOUT / 2   # not the 1000 s sleep


async def test_waiter_elsewhere_learns_that_it_gave_up() -> None:
    stub = Stub(responses={"/": refusal(403)})
    results: list[BaseException] = []
    started: list[gws.ReconnectingClient] = []

    async def wait() -> None:
        await settle(lambda: bool(started))
        try:
            await started[0].wait_connected()
        except gws.ConnectionClosedError as exc:
            results.append(exc)

    async with running(stub) as port:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as waiters:
                waiters.start_soon(wait)
                with pytest.raises(BaseExceptionGroup):
                    async with trio.open_nursery() as nursery:
                        started.append(await nursery.start(partial(
                            gws.connect_forever, f"ws://127.0.0.1:{port}/", Recorder(),
                            backoff=QUICK)))
    [error] = results
    assert isinstance(error.__cause__, gws.HandshakeError)
    assert error.__cause__.status == 403


# -- the rules, pure -------------------------------------------------------------------


def test_backoff_ceiling() -> None:
    backoff = Backoff(initial=0.5, maximum=10, factor=3)
    assert [backoff.ceiling(n) for n in range(5)] == [0.5, 1.5, 4.5, 10, 10]
    assert backoff.ceiling(10**6) == 10          # no overflow
    assert Backoff(initial=2, maximum=5, factor=1).ceiling(50) == 2
    assert Backoff(initial=5, maximum=5).ceiling(0) == 5


def test_full_jitter() -> None:
    draws = iter([0.0, 0.5, 0.999])
    backoff = Backoff(initial=1, maximum=60, factor=2, jitter=lambda: next(draws))
    assert [backoff.delay(3) for _ in range(3)] == [0.0, 4.0, 7.992]
    delays = [Backoff(initial=1, maximum=8).delay(5) for _ in range(200)]
    assert all(0 <= d < 8 for d in delays) and len(set(delays)) > 100


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("kw", [
    dict(initial=0), dict(initial=2, maximum=1), dict(factor=0.5),
    dict(stable_after=-1), dict(max_retry_after=-1),
    # NaN and infinity: a wait of either parks the client for good, or fails later
    dict(initial=NAN), dict(maximum=NAN), dict(maximum=INF), dict(initial=INF, maximum=INF),
    dict(factor=NAN), dict(factor=INF), dict(stable_after=NAN), dict(stable_after=INF),
    dict(max_retry_after=NAN), dict(max_retry_after=INF)])
def test_bad_backoff(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kw)


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),                       # in the past
    ("Wednesday, 21-Oct-15 07:28:00 GMT", 10.0),                  # RFC 850 form
    ("Wed Oct 21 07:28:00 2015", None),                           # asctime: no zone given
    ("-5", None), ("1.5", None), ("soon", None), ("", None), ("٣", None),
])
def test_retry_after(value: str, expected: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:27:50 GMT").timestamp()
    assert retry_after([("Retry-After", value)], now) == expected
    assert retry_after([("X", "1")], now) is None


def test_retry_after_only_for_429_and_503() -> None:
    backoff = Backoff(initial=1, maximum=1, jitter=lambda: 0.5, max_retry_after=100)
    headers = [("Retry-After", "30")]
    assert _wait_after(gws.HandshakeError("x", status=429, headers=headers), 0, backoff) == 30
    assert _wait_after(gws.HandshakeError("x", status=503, headers=headers), 0, backoff) == 30
    assert _wait_after(gws.HandshakeError("x", status=502, headers=headers), 0, backoff) == 0.5
    assert _wait_after(gws.HandshakeError("x", status=503), 0, backoff) == 0.5
    huge = [("Retry-After", "86400")]
    assert _wait_after(gws.HandshakeError("x", status=503, headers=huge), 0, backoff) == 100
    small = [("Retry-After", "0")]   # never shorter than the backoff
    assert _wait_after(gws.HandshakeError("x", status=429, headers=small), 0, backoff) == 0.5


def _cert_error() -> trio.BrokenResourceError:
    try:
        try:
            raise ssl.SSLCertVerificationError("bad cert")
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError from exc
    except trio.BrokenResourceError as exc:
        return exc


@pytest.mark.parametrize(("error", "expected"), [
    (OSError("refused"), False),
    (ConnectionRefusedError(), False),
    (gws.WebSocketTimeoutError("slow"), False),
    (trio.BrokenResourceError(), False),
    (gws.HandshakeError("lost", status=0), False),
    (gws.HandshakeError("x", status=408), False),
    (gws.HandshakeError("x", status=429), False),
    (gws.HandshakeError("x", status=500), False),
    (gws.HandshakeError("x", status=503), False),
    (gws.ProxyError("x", status=0), False),
    (gws.ProxyError("x", status=502), False),
    (gws.HandshakeError("x", status=400), True),
    (gws.HandshakeError("x", status=401), True),
    (gws.HandshakeError("x", status=404), True),
    (gws.HandshakeError("bad accept", status=101), True),
    (gws.HandshakeError("loop", status=302), True),
    (gws.ProxyError("x", status=407), True),
    (gws.ProxyError("x", status=403), True),
    (_cert_error(), True),
    (gws.ProxyError("TLS with proxy", status=0), False),
    (ValueError("bad url"), True),
    (ImportError("python-socks"), True),
    (RuntimeError("a bug"), True),
])
def test_permanent(error: Exception, expected: bool) -> None:
    assert permanent(error) is expected


def test_certificate_failure_behind_a_proxy_error_is_permanent() -> None:
    try:
        raise gws.ProxyError("TLS handshake with proxy failed", status=0) from _cert_error()
    except gws.ProxyError as exc:
        assert permanent(exc)
