"""A transport that fails on its k-th send or receive, for every k of a connection's
life: exactly one terminal event, no task and no descriptor left behind.

A connection's life here: the opening handshake, a short text, a 100 KB binary
message (several reads), a ping, their echoes and pong, the close handshake and the
end of the stream. First it runs on a healthy transport, which counts its I/O calls
(sends, receives and the half-close, together); then once for every k from 1 to
that count with the k-th call raising (``BrokenResourceError``,
``ClosedResourceError`` or an ``OSError``); the calls after it raise too, as a broken
transport keeps failing. Both sides: the failing transport under the server
(``Upgrader`` + ``listen``) and under the client (``connect(stream=...)``), with a
healthy trio-gws peer on the other end.

Over memory streams (plain, and TLS: a real ``trio.SSLStream`` over the failing
transport) on the autojump clock, so the close timeouts cost nothing; and over real
loopback TCP with TLS, where the process's open sockets are counted too.

Terminal event: a connection whose handshake completed gets exactly one
``on_close`` / ``on_error``; a handshake that did not complete raises one error from
``upgrade`` / ``connect`` and makes no events. Either way the failing transport was
closed, and the peer ended too.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_gws as gws

from helpers import Recorder, count_fds, count_tasks

pytestmark = pytest.mark.hostile

ERRORS: dict[str, Callable[[], BaseException]] = {
    "broken": lambda: trio.BrokenResourceError("injected: connection reset"),
    "closed": lambda: trio.ClosedResourceError("injected: closed under us"),
    "oserror": lambda: ConnectionResetError(errno.ECONNRESET, "injected reset"),
}
#: What a failed opening handshake may raise (documented on upgrade and connect:
#: in a wss:// connect the TLS layer passes its transport's errors through, which
#: connect_forever expects).
HANDSHAKE_ERRORS = (gws.HandshakeError, gws.WebSocketTimeoutError, OSError,
                    trio.BrokenResourceError, trio.ClosedResourceError)
BIG = bytes(range(256)) * 400  # 100 KB: several reads and sends
CONFIG = gws.Config(close_timeout=1.0, handshake_timeout=5.0)


class FailingStream(trio.abc.HalfCloseableStream):
    """Passes calls to ``inner`` and counts them; the ``fail_at``-th send, receive or
    half-close raises ``error()``, and so does every one after it."""

    def __init__(self, inner: trio.abc.Stream, fail_at: int | None,
                 error: Callable[[], BaseException]) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.error = error
        self.calls = 0
        self.failed = False
        self.closed = False

    def _tick(self) -> None:
        self.calls += 1
        if self.failed or self.calls == self.fail_at:
            self.failed = True
            raise self.error()

    async def send_all(self, data: Any) -> None:
        self._tick()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        self._tick()
        inner = self.inner
        assert isinstance(inner, trio.abc.HalfCloseableStream)
        await inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._tick()
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


class Contexts:
    def __init__(self) -> None:
        ca = trustme.CA()
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("gws.test").configure_cert(self.server)
        self.client = ssl.create_default_context()
        ca.configure_trust(self.client)


CONTEXTS = Contexts()


class Outcome:
    """How one side of one life ended."""

    def __init__(self) -> None:
        self.handshake_error: BaseException | None = None
        self.handler = Recorder(echo=True)

    def terminal_events(self) -> int:
        return len(self.handler.endings())

    def check(self, label: str) -> None:
        endings = self.terminal_events()
        opened = self.handler.kinds().count("open")
        if self.handshake_error is None:
            assert opened == 1 and endings == 1, (label, self.handler.events)
        else:
            assert isinstance(self.handshake_error, HANDSHAKE_ERRORS), (
                label, repr(self.handshake_error))
            assert opened == 0 and endings == 0, (label, self.handler.events)


async def server_side(stream: trio.abc.Stream, outcome: Outcome) -> None:
    try:
        conn = await gws.Upgrader(outcome.handler, CONFIG).upgrade(stream)
    except Exception as exc:
        outcome.handshake_error = exc
        return
    await conn.listen()


async def client_side(stream: trio.abc.Stream, outcome: Outcome, secure: bool) -> None:
    """The client's life: handshake, three messages and a ping, close."""
    handler = outcome.handler
    handler.echo = False
    url = "wss://gws.test/" if secure else "ws://gws.test/"
    try:
        conn = await gws.connect(url, handler, config=CONFIG, stream=stream, proxy=None,
                                 ssl_context=CONTEXTS.client)
    except Exception as exc:
        outcome.handshake_error = exc
        return

    async def step(kind: str, count: int) -> None:
        await handler.wait_for(lambda: len(handler.of(kind)) >= count
                               or bool(handler.endings()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        try:
            # One step at a time, each answered before the next: more distinct
            # points in the life at which a call can fail.
            await conn.write_string("hello")
            await step("message", 1)
            await conn.write_message(gws.Opcode.BINARY, BIG)
            await step("message", 2)
            await conn.write_ping(b"ping")
            await step("pong", 1)
            await conn.aclose()
        except gws.ConnectionClosed:
            pass  # the transport failed: listen() reports it
    # The stream under the client is the caller's: connect(stream=) hands it to Conn.


async def one_life(fail_at: int | None, error: str, *, side: str, tls: bool,
                   tcp: bool = False) -> tuple[int, Outcome, Outcome, FailingStream]:
    """One connection's life with the given failure; (I/O calls, server outcome,
    client outcome, the failing stream)."""
    if tcp:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            client_raw: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
            server_raw: trio.abc.Stream = await listeners[0].accept()
            nursery.cancel_scope.cancel()
        await listeners[0].aclose()
    else:
        server_raw, client_raw = trio.testing.memory_stream_pair()
    if side == "server":
        failing = server_raw = FailingStream(server_raw, fail_at, ERRORS[error])
    else:
        failing = client_raw = FailingStream(client_raw, fail_at, ERRORS[error])
    server_stream: trio.abc.Stream = server_raw
    if tls:
        server_stream = trio.SSLStream(server_raw, CONTEXTS.server, server_side=True,
                                       https_compatible=False)
    server, client = Outcome(), Outcome()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side, server_stream, server)
            nursery.start_soon(client_side, client_raw, client, tls)
    return failing.calls, server, client, failing


CASES = [(side, tls) for side in ("server", "client") for tls in (False, True)]


@pytest.mark.parametrize(("side", "tls"), CASES,
                         ids=[f"{side}-{'tls' if tls else 'plain'}" for side, tls in CASES])
@pytest.mark.parametrize("error", list(ERRORS))
async def test_kth_io_call_fails_over_memory(side: str, tls: bool, error: str,
                                             autojump_clock: Any,
                                             figures: Callable[[str], None]) -> None:
    tasks = count_tasks()
    calls, server, client, _ = await one_life(None, error, side=side, tls=tls)
    # The healthy life: both ends opened and closed cleanly.
    assert server.handler.kinds().count("open") == 1
    assert [e.kind for e in server.handler.endings()] == ["close"]
    assert [e.kind for e in client.handler.endings()] == ["close"]
    outcomes: dict[str, int] = {}
    for k in range(1, calls + 1):
        label = f"{side} {'tls' if tls else 'plain'} {error} k={k}/{calls}"
        _, server, client, failing = await one_life(k, error, side=side, tls=tls)
        assert failing.failed, label
        assert failing.closed, f"{label}: the failing stream was never closed"
        server.check(label)
        client.check(label)
        assert count_tasks() == tasks, label
        mine = server if side == "server" else client
        kind = ("handshake" if mine.handshake_error is not None
                else mine.handler.endings()[0].kind)
        outcomes[kind] = outcomes.get(kind, 0) + 1
    figures(f"{calls} I/O calls in a life; k=1..{calls} failing: {outcomes}")


@pytest.mark.parametrize("side", ["server", "client"])
async def test_kth_io_call_fails_over_tcp_with_tls(side: str,
                                                   figures: Callable[[str], None]) -> None:
    tasks = count_tasks()
    fds = count_fds()
    calls, *_ = await one_life(None, "broken", side=side, tls=True, tcp=True)
    assert count_fds() == fds
    names = list(ERRORS)
    outcomes: dict[str, int] = {}
    for k in range(1, calls + 1):
        error = names[k % len(names)]  # each kind of error, in turn
        label = f"{side} tcp+tls {error} k={k}/{calls}"
        _, server, client, failing = await one_life(k, error, side=side, tls=True, tcp=True)
        assert failing.closed, label
        server.check(label)
        client.check(label)
        assert count_tasks() == tasks, label
        assert count_fds() == fds, f"{label}: {count_fds() - fds} sockets left open"
        mine = server if side == "server" else client
        if not failing.failed:
            # Over TCP the number of reads varies from run to run: this life needed
            # fewer than k calls, and ended as the healthy one does.
            assert [e.kind for e in mine.handler.endings()] == ["close"], label
            outcomes["fewer calls"] = outcomes.get("fewer calls", 0) + 1
            continue
        kind = ("handshake" if mine.handshake_error is not None
                else mine.handler.endings()[0].kind)
        outcomes[kind] = outcomes.get(kind, 0) + 1
    figures(f"{calls} I/O calls in a life over TCP+TLS; k=1..{calls} failing: {outcomes}")
