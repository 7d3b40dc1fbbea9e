"""serve() and Upgrader over real loopback sockets, driven by hand-written clients.

Every bad input must get the right HTTP status or close code, be reported (on_error
or a logged handshake failure), and leave the server healthy: after each bad client
no task or file descriptor is left behind and a good client still gets an echo.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_gws import (
    Config,
    ConnectionClosedError,
    EventHandler,
    HandshakeError,
    InvalidTextError,
    Message,
    MessageTooLargeError,
    Opcode,
    ProtocolError,
    Rejection,
    Upgrader,
    WebSocketTimeoutError,
)

from helpers import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    Peer,
    Recorder,
    accept_for,
    build_frame,
    close_payload,
    count_fds,
    count_tasks,
    http_exchange,
    new_key,
    read_response,
    running_server,
    settle,
    upgrade_request,
    ws_connect,
)

TIMEOUT = 10  # seconds; generous bound for a whole test, never reached when passing


class Server:
    """A running server plus the checks every test repeats."""

    def __init__(self, port: int, handler: Recorder) -> None:
        self.port = port
        self.handler = handler
        self.tasks = count_tasks()
        self.fds = count_fds()

    async def assert_no_leaks(self) -> None:
        """Every connection task finished and every socket was closed."""
        assert await settle(lambda: count_tasks() == self.tasks), (count_tasks(), self.tasks)
        assert await settle(lambda: count_fds() <= self.fds), (count_fds(), self.fds)

    async def assert_healthy(self) -> None:
        """A well-behaved client still gets an echo; then nothing is left behind."""
        await self.assert_no_leaks()
        endings_before = len(self.handler.endings())
        peer, _ = await ws_connect(self.port)
        await peer.send_text("still alive?")
        frame = await peer.recv_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"still alive?")
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
        assert await peer.expect_eof() == b""
        await peer.aclose()
        await self.handler.wait_endings(endings_before + 1)
        await self.assert_no_leaks()


@asynccontextmanager
async def server(handler: Recorder | None = None, config: Config | None = None,
                 **kw: Any) -> AsyncIterator[Server]:
    handler = handler if handler is not None else Recorder(echo=True)
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config, **kw) as port:
            await trio.testing.wait_all_tasks_blocked()
            yield Server(port, handler)
        # leaving the block cancelled serve(): it must return (fail_after guards it)


async def close_cleanly(peer: Peer) -> None:
    """Read what the server still sends until its EOF, then close our end."""
    assert await peer.expect_eof() == b""
    await peer.aclose()


# -- the opening handshake ----------------------------------------------------------

BAD_REQUESTS = [
    ("POST", upgrade_request(method="POST"), 405, ("Allow", "GET")),
    ("malformed request line", b"GARBAGE\r\nHost: x\r\n\r\n", 400, None),
    ("two spaces in request line", upgrade_request(target=" /"), 400, None),
    ("authority-form target", upgrade_request(target="x:80"), 400, None),
    ("non-ASCII target", upgrade_request(target="/\xc5hat"), 400, None),
    ("control character in target", upgrade_request(target="/a\x01b"), 400, None),
    ("HTTP/1.0", upgrade_request(version="HTTP/1.0"), 505, None),
    ("missing Upgrade", upgrade_request(headers={"Upgrade": None}), 426,
     ("Upgrade", "websocket")),
    ("wrong Upgrade", upgrade_request(headers={"Upgrade": "h2c"}), 426, None),
    ("missing Connection", upgrade_request(headers={"Connection": None}), 400, None),
    ("Connection without upgrade", upgrade_request(headers={"Connection": "keep-alive"}),
     400, None),
    ("missing Host", upgrade_request(headers={"Host": None}), 400, None),
    ("missing Key", upgrade_request(headers={"Sec-WebSocket-Key": None}), 400, None),
    ("Key not base64", upgrade_request(key="not base64 at all!!"), 400, None),
    ("short Key", upgrade_request(key="c2hvcnQ="), 400, None),
    ("long Key", upgrade_request(key="AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 400, None),
    ("repeated Key", upgrade_request(extra=[("Sec-WebSocket-Key", new_key())]), 400, None),
    ("missing Version", upgrade_request(headers={"Sec-WebSocket-Version": None}), 426,
     ("Sec-WebSocket-Version", "13")),
    ("wrong Version", upgrade_request(headers={"Sec-WebSocket-Version": "8"}), 426,
     ("Sec-WebSocket-Version", "13")),
    ("request line too long", upgrade_request(target="/" + "a" * 9000), 414, None),
    ("unterminated long request line", b"GET /" + b"a" * 9000, 414, None),
    ("header fields too large", upgrade_request(extra=[("X-Big", "b" * 17000)]), 431, None),
    ("too many header fields",
     upgrade_request(extra=[(f"X-H{i}", "v") for i in range(101)]), 431, None),
    ("obsolete line folding",
     upgrade_request(extra=[("X-A", "a")]).replace(b"X-A: a", b"X-A: a\r\n b"), 400, None),
    ("bare LF", upgrade_request().replace(b"\r\nUpgrade", b"\nUpgrade"), 400, None),
    ("space before colon", upgrade_request(extra=[("X-A ", "a")]), 400, None),
    ("control character in value", upgrade_request(extra=[("X-A", "a\x01b")]), 400, None),
]


@pytest.mark.parametrize("name, request_bytes, status, header", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
async def test_bad_handshake_gets_http_error(
    name: str, request_bytes: bytes, status: int, header: tuple[str, str] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gws")
    async with server() as srv:
        response, peer = await http_exchange(srv.port, request_bytes)
        assert response.status == status, response
        if header is not None:
            assert header[1] in response.all(header[0]), response.headers
        connection = [t.strip().lower() for v in response.all("Connection")
                      for t in v.split(",")]
        assert "close" in connection
        assert response.body  # a clear message for humans
        assert response.header("Sec-WebSocket-Accept") is None
        await close_cleanly(peer)
        assert await settle(lambda: any("handshake failed" in r.getMessage()
                                        for r in caplog.records))
        assert srv.handler.events == []  # no Conn, so no events
        await srv.assert_healthy()


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_stalled_handshake_freed_by_handshake_timeout(
    sent: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gws")
    async with server(config=Config(handshake_timeout=0.3)) as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        peer = Peer(stream)
        if sent:
            await peer.send_raw(sent)
        response = await read_response(peer)  # arrives once the timeout runs out
        assert response.status == 408
        await close_cleanly(peer)
        assert await settle(lambda: any("handshake" in r.getMessage() and "0.3" in
                                        r.getMessage() for r in caplog.records))
        await srv.assert_healthy()


async def test_client_disconnects_during_handshake() -> None:
    async with server() as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHo")
        await stream.aclose()
        await srv.assert_healthy()


async def test_connection_header_list_and_case_insensitive_tokens() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port, headers={"Connection": "keep-alive, UPGRADE",
                                                      "Upgrade": "WebSocket"})
        await peer.send_text("ok")
        assert (await peer.recv_frame()).payload == b"ok"
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


async def test_request_path_query_and_headers_reach_the_conn() -> None:
    rec = Recorder()
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port, target="/chat/room?x=1&y=2",
                                   extra=[("X-Custom", "yes")])
        await rec.wait_kind("open")
        conn = rec.conns()[0]
        assert conn.request.method == "GET"
        assert conn.request.path == "/chat/room"
        assert conn.request.query == "x=1&y=2"
        assert conn.request.headers.get("x-custom") == "yes"
        assert conn.remote_address[0] == "127.0.0.1"
        assert conn.local_address[1] == srv.port
        assert conn.remote_address[1] == peer.stream.socket.getsockname()[1]
        assert conn.subprotocol is None and not conn.compressed
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


# -- subprotocols, extra headers, authorize ----------------------------------------


@pytest.mark.parametrize(
    "offered, chosen",
    [
        (["superchat, chat"], "chat"),  # our order of preference wins
        (["superchat"], "superchat"),
        (["other", "superchat"], "superchat"),  # offered on two header lines
        (["other"], None),
        ([], None),
    ],
)
async def test_subprotocol_selection(offered: list[str], chosen: str | None) -> None:
    rec = Recorder()
    config = Config(subprotocols=("chat", "superchat"))
    async with server(rec, config) as srv:
        peer, response = await ws_connect(
            srv.port, extra=[("Sec-WebSocket-Protocol", value) for value in offered])
        assert response.all("Sec-WebSocket-Protocol") == ([chosen] if chosen else [])
        await rec.wait_kind("open")
        assert rec.conns()[0].subprotocol == chosen
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


async def test_response_header_sent_with_the_101() -> None:
    config = Config(response_header=[("X-Served-By", "trio-gws"), ("Set-Cookie", "a=1"),
                                     ("Set-Cookie", "b=2")])
    async with server(config=config) as srv:
        peer, response = await ws_connect(srv.port)
        assert response.header("X-Served-By") == "trio-gws"
        assert response.all("Set-Cookie") == ["a=1", "b=2"]
        assert response.header("Upgrade").lower() == "websocket"
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


def make_authorize(verdict: Any, is_async: bool, seen: list[Any]):  # type: ignore[no-untyped-def]
    def decide(request, session):  # type: ignore[no-untyped-def]
        seen.append((request.path, request.query, request.headers.get("Authorization")))
        session["user"] = "alice"
        if isinstance(verdict, BaseException):
            raise verdict
        return verdict

    if not is_async:
        return decide

    async def decide_async(request, session):  # type: ignore[no-untyped-def]
        await trio.sleep(0)
        return decide(request, session)

    return decide_async


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("verdict", [True, None], ids=["True", "None"])
async def test_authorize_accepts(verdict: Any, is_async: bool) -> None:
    seen: list[Any] = []

    class SessionRecorder(Recorder):
        async def on_open(self, conn):  # type: ignore[no-untyped-def]
            await super().on_open(conn)
            self._record("session", conn, dict(conn.session))

    rec = SessionRecorder()
    config = Config(authorize=make_authorize(verdict, is_async, seen))
    async with server(rec, config) as srv:
        peer, _ = await ws_connect(srv.port, target="/room?token=abc",
                                   extra=[("Authorization", "Bearer t")])
        await rec.wait_kind("session")
        assert rec.of("session") == [{"user": "alice"}]
        assert seen == [("/room", "token=abc", "Bearer t")]
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_authorize_false_is_403(is_async: bool) -> None:
    seen: list[Any] = []
    rec = Recorder(echo=True)
    async with server(rec, Config(authorize=make_authorize(False, is_async, seen))) as srv:
        response, peer = await http_exchange(srv.port, upgrade_request())
        assert response.status == 403
        await close_cleanly(peer)
        assert rec.events == [] and len(seen) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_authorize_rejection_is_sent_exactly(is_async: bool) -> None:
    rejection = Rejection(401, {"WWW-Authenticate": 'Bearer realm="chat"'}, b"log in first")
    async with server(config=Config(authorize=make_authorize(rejection, is_async, []))) as srv:
        response, peer = await http_exchange(srv.port, upgrade_request())
        assert response.status == 401
        assert response.header("WWW-Authenticate") == 'Bearer realm="chat"'
        assert response.body == b"log in first"
        assert response.header("Content-Length") == str(len(b"log in first"))
        await close_cleanly(peer)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_authorize_exception_is_500_and_logged(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    boom = LookupError("auth backend down")
    config = Config(authorize=make_authorize(boom, is_async, []))
    rec = Recorder(echo=True)
    async with server(rec, config) as srv:
        response, peer = await http_exchange(srv.port, upgrade_request())
        assert response.status == 500
        assert b"auth backend down" not in response.body  # internals stay private
        await close_cleanly(peer)
        assert any(r.exc_info and r.exc_info[1] is boom for r in caplog.records)
        assert rec.events == []
        # The server survives a buggy authorize; a good one would still be needed to
        # connect, so only check that nothing leaked.
        await srv.assert_no_leaks()


# -- after the handshake -----------------------------------------------------------


async def test_bytes_sent_with_the_request_are_processed() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        early = (build_frame(TEXT, b"early bird") + build_frame(PING, b"p")
                 + build_frame(BINARY, b"\x01" * 70_000))
        peer, _ = await ws_connect(srv.port, after=early)
        first = await peer.recv_frame()
        assert (first.opcode, first.payload) == (TEXT, b"early bird")
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"p")
        big = await peer.recv_frame()
        assert (big.opcode, big.payload) == (BINARY, b"\x01" * 70_000)
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)
    assert [m.data[:10] for m in rec.of("message")] == [b"early bird", b"\x01" * 10]


async def test_close_frame_in_the_same_packet_as_the_request() -> None:
    rec = Recorder()
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port, after=build_frame(CLOSE, close_payload(4321)))
        assert (await peer.recv_close()).close_code == 4321
        await close_cleanly(peer)
        await rec.wait_endings()
    assert rec.kinds() == ["open", "close"]
    assert rec.of("close") == [(4321, b"")]


async def test_echo_sizes_and_server_frames_unmasked() -> None:
    async with server() as srv:
        peer, _ = await ws_connect(srv.port)
        for n in (0, 1, 125, 126, 65535, 65536, 300_000):
            payload = bytes([n % 256]) * n
            await peer.send(BINARY, payload)
            frame = await peer.recv_frame()
            assert not frame.masked and frame.fin
            assert (frame.opcode, frame.payload) == (BINARY, payload)
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)
        await srv.assert_healthy()


# -- protocol violations -----------------------------------------------------------

TOO_BIG = 1024

BAD_FRAMES: list[tuple[str, bytes, int]] = [
    ("unmasked", build_frame(TEXT, b"hi", mask=False), 1002),
    ("RSV1 without extension", build_frame(TEXT, b"hi", rsv=RSV1), 1002),
    ("RSV2", build_frame(BINARY, b"hi", rsv=RSV2), 1002),
    ("RSV3", build_frame(BINARY, b"hi", rsv=RSV3), 1002),
    ("RSV2 on ping", build_frame(PING, b"", rsv=RSV2), 1002),
    ("opcode 0x3", build_frame(0x3, b"hi"), 1002),
    ("opcode 0x7", build_frame(0x7, b""), 1002),
    ("opcode 0xB", build_frame(0xB, b""), 1002),
    ("opcode 0xF", build_frame(0xF, b"x"), 1002),
    ("fragmented ping", build_frame(PING, b"x", fin=False), 1002),
    ("fragmented close", build_frame(CLOSE, close_payload(1000), fin=False), 1002),
    ("ping of 126 bytes", build_frame(PING, b"x" * 126), 1002),
    ("close of 126 bytes", build_frame(CLOSE, close_payload(1000, b"r" * 124)), 1002),
    ("pong header claiming 126", build_frame(PONG, b"", length=126), 1002),
    ("continuation without a message", build_frame(CONT, b"x"), 1002),
    ("final continuation without a message", build_frame(CONT, b"x", fin=True), 1002),
    ("new message inside a fragmented one",
     build_frame(TEXT, b"a", fin=False) + build_frame(BINARY, b"b"), 1002),
    ("new text inside a fragmented one",
     build_frame(BINARY, b"a", fin=False) + build_frame(PING, b"ok")
     + build_frame(TEXT, b"b", fin=False), 1002),
    ("64-bit length with top bit set", build_frame(BINARY, length=1 << 63), 1002),
    ("64-bit length all ones", build_frame(BINARY, length=(1 << 64) - 1), 1002),
    ("message too large (header only)", build_frame(BINARY, length=1 << 40), 1009),
    ("message just too large (header only)", build_frame(TEXT, length=TOO_BIG + 1), 1009),
    ("fragments add up too large",
     build_frame(BINARY, b"a" * 600, fin=False) + build_frame(CONT, length=600), 1009),
    ("invalid UTF-8", build_frame(TEXT, b"abc\xff"), 1007),
    ("surrogate in UTF-8", build_frame(TEXT, b"\xed\xa0\x80"), 1007),
    ("overlong UTF-8", build_frame(TEXT, b"\xc0\xaf"), 1007),
    ("UTF-8 truncated at message end", build_frame(TEXT, b"\xe2\x82"), 1007),
    ("invalid UTF-8 across fragments",
     build_frame(TEXT, b"\xe2", fin=False) + build_frame(CONT, b"\x28\xa1"), 1007),
    ("invalid UTF-8 close reason", build_frame(CLOSE, close_payload(1000, b"\xff")), 1007),
    ("1-byte close payload", build_frame(CLOSE, b"\x03"), 1002),
] + [
    (f"close code {code}", build_frame(CLOSE, close_payload(code)), 1002)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
]


@pytest.mark.parametrize("name, wire, code", BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
async def test_protocol_violation_gets_close_code(name: str, wire: bytes, code: int) -> None:
    rec = Recorder(echo=True)
    async with server(rec, Config(max_content_length=TOO_BIG)) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_raw(wire)
        frame = await peer.recv_frame()
        while frame.opcode == PONG:  # a valid ping before the violation gets its pong
            frame = await peer.recv_frame()
        assert frame.opcode == CLOSE, frame
        assert not frame.masked
        assert frame.close_code == code, frame
        assert len(frame.payload) <= 125
        frame.close_reason.decode("utf-8")
        await close_cleanly(peer)  # the server half-closed after its close frame
        ending = (await rec.wait_endings())[0]
        assert ending.kind == "error"
        error = ending.data
        assert isinstance(error, ProtocolError), error
        assert error.close_code == code
        if code == 1009:
            assert isinstance(error, MessageTooLargeError)
        if code == 1007:
            assert isinstance(error, InvalidTextError)
        assert rec.of("message") == []
        await srv.assert_healthy()


async def test_oversized_message_refused_before_payload_is_buffered() -> None:
    """Only the header of a 1 TiB frame is sent; the 1009 must come back anyway."""
    rec = Recorder()
    rec.echo = True
    async with server(rec) as srv:  # default max_content_length (16 MiB)
        peer, _ = await ws_connect(srv.port)
        await peer.send_raw(build_frame(BINARY, length=1 << 40))
        with trio.fail_after(5):
            frame = await peer.recv_close()
        assert frame.close_code == 1009
        await close_cleanly(peer)
        assert isinstance((await rec.wait_endings())[0].data, MessageTooLargeError)
        await srv.assert_healthy()


async def test_minimal_length_not_required() -> None:
    """RFC 6455 does not require minimal length encoding from the peer: accept it."""
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_raw(build_frame(TEXT, b"short", length_bytes=8)
                            + build_frame(BINARY, b"x" * 10, length_bytes=2))
        assert (await peer.recv_frame()).payload == b"short"
        assert (await peer.recv_frame()).payload == b"x" * 10
        await peer.send_close(1000)
        await peer.recv_close()
        await close_cleanly(peer)


async def test_violation_after_valid_traffic_keeps_prior_events() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_raw(build_frame(TEXT, b"fine") + build_frame(TEXT, b"\xff"))
        assert (await peer.recv_frame()).payload == b"fine"
        assert (await peer.recv_close()).close_code == 1007
        await close_cleanly(peer)
        await rec.wait_endings()
    assert rec.kinds() == ["open", "message", "error"]


async def test_peer_vanishes_mid_frame() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_raw(build_frame(BINARY, b"x" * 5000)[:1000])
        await peer.aclose()
        ending = (await rec.wait_endings())[0]
        assert ending.kind == "error"
        assert isinstance(ending.data, ConnectionClosedError)
        await srv.assert_healthy()


async def test_peer_resets_the_connection() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_text("hi")
        await peer.recv_frame()
        sock = peer.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()  # RST instead of FIN
        ending = (await rec.wait_endings())[0]
        assert ending.kind == "error"
        assert isinstance(ending.data, ConnectionClosedError)
        await srv.assert_healthy()


async def test_peer_never_answers_our_close() -> None:
    class CloseOnRequest(Recorder):
        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            await super().on_message(conn, message)
            if message.data == b"close me":
                await conn.write_close(4000, "go away")
            else:
                await conn.write_message(message.opcode, message.data)

    rec = CloseOnRequest()
    async with server(rec, Config(close_timeout=0.3)) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_text("close me")
        frame = await peer.recv_close()
        assert (frame.close_code, frame.close_reason) == (4000, b"go away")
        # Say nothing; the server must give up after close_timeout and close.
        await close_cleanly(peer)
        ending = (await rec.wait_endings())[0]
        assert ending.kind == "error"
        assert isinstance(ending.data, WebSocketTimeoutError)
        await srv.assert_healthy()


async def test_handler_exception_closes_1011_and_server_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(Recorder):
        async def on_message(self, conn, message):  # type: ignore[no-untyped-def]
            await super().on_message(conn, message)
            if message.data == b"crash":
                raise ZeroDivisionError("oops")
            await conn.write_message(message.opcode, message.data)

    rec = Buggy()
    async with server(rec) as srv:
        peer, _ = await ws_connect(srv.port)
        await peer.send_text("crash")
        assert (await peer.recv_close()).close_code == 1011
        await close_cleanly(peer)
        ending = (await rec.wait_endings())[0]
        assert isinstance(ending.data, ZeroDivisionError)
        assert any(isinstance(r.exc_info[1], ZeroDivisionError) for r in caplog.records
                   if r.exc_info)
        await srv.assert_healthy()


async def test_many_clients_at_once() -> None:
    rec = Recorder(echo=True)
    async with server(rec) as srv:
        results: list[bytes] = []

        async def client(i: int) -> None:
            peer, _ = await ws_connect(srv.port)
            for j in range(5):
                await peer.send_text(f"{i}-{j}")
                results.append((await peer.recv_frame()).payload)
            await peer.send_close(1000)
            await peer.recv_close()
            await close_cleanly(peer)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(client, i)
        assert sorted(results) == sorted(f"{i}-{j}".encode() for i in range(20)
                                         for j in range(5))
        await rec.wait_endings(20)
        assert all(e.kind == "close" for e in rec.endings())
        await srv.assert_no_leaks()


# -- shutdown ----------------------------------------------------------------------


async def test_cancelling_serve_is_a_graceful_shutdown() -> None:
    """Open connections get 1001 and close_timeout to answer; handshakes are dropped."""
    rec = Recorder(echo=True)
    close_timeout = 0.5
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            seen: dict[str, Any] = {}
            async with running_server(rec, Config(close_timeout=close_timeout)) as port:
                polite, _ = await ws_connect(port)
                deaf, _ = await ws_connect(port)
                half = Peer(await trio.open_tcp_stream("127.0.0.1", port))
                await half.send_raw(b"GET / HTTP/1.1\r\n")  # stuck in its handshake
                await rec.wait_kind("open", 2)
                await trio.testing.wait_all_tasks_blocked()
                polite_conn, deaf_conn = rec.conns()

                async def answer(peer: Peer, name: str, reply: bool) -> None:
                    frame = await peer.recv_close()
                    seen[name] = (frame.close_code, frame.close_reason)
                    if reply:
                        await peer.send_close(frame.close_code)
                    seen[name + "-eof"] = await peer.expect_eof()
                    await peer.aclose()

                async def dropped() -> None:
                    seen["half"] = await half.expect_eof()
                    await half.aclose()

                outer.start_soon(answer, polite, "polite", True)
                outer.start_soon(answer, deaf, "deaf", False)
                outer.start_soon(dropped)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
            # serve() has returned: every connection task is gone.
            assert trio.current_time() - start < close_timeout + 2
            # A new client is refused: the listener is closed.
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
    assert seen["polite"][0] == 1001 and seen["deaf"][0] == 1001
    assert seen["polite-eof"] == seen["deaf-eof"] == seen["half"] == b""
    assert [e.kind for e in rec.endings(polite_conn)] == ["close"]
    assert rec.endings(polite_conn)[0].data[0] == 1001
    deaf_endings = rec.endings(deaf_conn)
    assert [e.kind for e in deaf_endings] == ["error"]
    assert isinstance(deaf_endings[0].data, (WebSocketTimeoutError, ConnectionClosedError))
    assert len(rec.endings()) == 2


# -- Upgrader on any stream --------------------------------------------------------


async def test_upgrader_on_a_memory_stream() -> None:
    rec = Recorder(echo=True)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = Peer(client_stream)
    key = new_key()
    await peer.send_raw(upgrade_request(key=key, target="/mem")
                        + build_frame(TEXT, b"buffered"))
    upgrader = Upgrader(rec, Config(subprotocols=("x",)))
    conn = await upgrader.upgrade(server_stream)
    assert conn.request.path == "/mem"
    assert conn.remote_address is None and conn.local_address is None
    response = await read_response(peer)
    assert response.status == 101
    assert response.header("Sec-WebSocket-Accept") == accept_for(key)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        assert (await peer.recv_frame()).payload == b"buffered"
        await peer.send(BINARY, b"\x00\x01")
        assert (await peer.recv_frame()).payload == b"\x00\x01"
        await peer.send_close(1000)
        assert (await peer.recv_close()).close_code == 1000
    assert rec.of("message") == [Message(Opcode.TEXT, b"buffered"),
                                 Message(Opcode.BINARY, b"\x00\x01")]
    assert rec.kinds()[-1] == "close"


async def test_upgrader_failure_on_a_memory_stream() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = Peer(client_stream)
    await peer.send_raw(upgrade_request(headers={"Sec-WebSocket-Version": "7"}))
    upgrader = Upgrader(EventHandler())

    async def client_side() -> None:
        response = await read_response(peer)
        assert response.status == 426
        assert response.header("Sec-WebSocket-Version") == "13"
        assert await peer.expect_eof() == b""
        await peer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        with pytest.raises(HandshakeError) as info:
            await upgrader.upgrade(server_stream)
    assert info.value.status == 426


async def test_upgrader_timeout_on_a_memory_stream(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = Peer(client_stream)
    upgrader = Upgrader(EventHandler(), Config(handshake_timeout=5))

    async def client_side() -> None:
        response = await read_response(peer)
        assert response.status == 408
        await peer.expect_eof()
        await peer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        start = trio.current_time()
        with pytest.raises(WebSocketTimeoutError):
            await upgrader.upgrade(server_stream)
        assert trio.current_time() - start >= 5
