"""Upgrader.upgrade_request: trio-gws inside another HTTP server (gws's UpgradeFromConn,
trio-websocket#1). The other server here is a small h11 one: it reads every request
head itself, answers plain requests, and hands upgrades to trio-gws."""

from __future__ import annotations

from functools import partial

import h11
import pytest
import trio
import trio.testing
from websockets.sync.client import connect as ws_sync_connect

import trio_gws as gws
from helpers import Recorder, http_exchange


class H11Server:
    """An HTTP/1.1 server built on h11 that delegates WebSocket upgrades to trio-gws."""

    def __init__(self, upgrader: gws.Upgrader) -> None:
        self.upgrader = upgrader
        self.conns: list[gws.Conn] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some(65536))
                continue
            break
        if not isinstance(event, h11.Request):
            await stream.aclose()
            return
        headers = gws.Headers((name.decode("latin-1"), value.decode("latin-1"))
                              for name, value in event.headers)
        request = gws.Request(event.method.decode("ascii"), event.target.decode("ascii"),
                              headers)
        if http.they_are_waiting_for_100_continue or b"websocket" not in (
                headers.get("Upgrade") or "").lower().encode():
            body = b"h11 answered " + event.target
            await stream.send_all(http.send(h11.Response(
                status_code=200, headers=[("Content-Length", str(len(body))),
                                          ("Connection", "close")])))
            await stream.send_all(http.send(h11.Data(data=body)))
            await stream.send_all(http.send(h11.EndOfMessage()))
            await stream.aclose()
            return
        # An upgrade: h11 pauses; whatever it read past the head is trailing_data.
        assert http.our_state is h11.SEND_RESPONSE
        leftover, _closed = http.trailing_data
        conn = await self.upgrader.upgrade_request(stream, request, leftover=bytes(leftover))
        self.conns.append(conn)
        await conn.listen()


async def test_an_h11_server_hands_upgrades_to_trio_gws() -> None:
    rec = Recorder(echo=True)
    app = H11Server(gws.Upgrader(rec, gws.Config(subprotocols=("chat",))))
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, app.serve, 0,
                                                 host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        plain, peer = await http_exchange(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        await peer.aclose()
        assert plain.status == 200 and plain.body == b"h11 answered /status"

        def client() -> list[str]:
            with ws_sync_connect(f"ws://127.0.0.1:{port}/socket?x=1",
                                 subprotocols=["chat"]) as ws:
                assert ws.subprotocol == "chat"
                got = []
                for text in ("one", "two"):
                    ws.send(text)
                    got.append(ws.recv(timeout=5))
                return got  # type: ignore[return-value]

        assert await trio.to_thread.run_sync(client) == ["one", "two"]
        await rec.wait_endings(1)
        assert app.conns[0].request.path == "/socket" and app.conns[0].request.query == "x=1"
        nursery.cancel_scope.cancel()


async def test_frames_already_read_by_the_other_server_are_not_lost() -> None:
    """The client sends its first frame with the request; the other server read both."""
    from helpers import Peer, accept_for, build_frame, new_key, read_response, upgrade_request

    rec = Recorder(echo=True)
    app = H11Server(gws.Upgrader(rec))
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, app.serve, 0,
                                                 host="127.0.0.1"))
        stream = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        peer = Peer(stream)
        key = new_key()
        await peer.send_raw(upgrade_request(key=key) + build_frame(0x1, b"early", mask=True))
        response = await read_response(peer)
        assert response.status == 101 and response.header("Sec-WebSocket-Accept") == \
            accept_for(key)
        assert (await peer.recv_frame()).payload == b"early"
        await peer.aclose()
        nursery.cancel_scope.cancel()


async def test_upgrade_request_refuses_what_upgrade_refuses() -> None:
    client, server = trio.testing.memory_stream_pair()
    request = gws.Request("GET", "/", gws.Headers([("Host", "x")]))  # no Upgrade
    with pytest.raises(gws.HandshakeError) as info:
        await gws.Upgrader(Recorder()).upgrade_request(server, request)
    assert info.value.status == 426
    assert (await client.receive_some(1000)).startswith(b"HTTP/1.1 426 ")
