"""``Broadcaster``: one message encoded once, queued to many connections.

A shared frame is correct only where it means the same thing to every receiver: the
plain frame, and a frame compressed without history for connections whose server
side has no context takeover. A connection *with* server context takeover must get
the message through its own compressor, or its next message refers to history the
peer does not have. These tests check that with an independent inflater over
memory streams, and with the independent ``websockets`` client over real sockets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect as ws_sync_connect

from trio_gws import Broadcaster, Config, Conn, Opcode
from trio_gws._frames import encode_frame
from trio_gws._deflate import DeflateParams

from helpers import (
    BINARY,
    CLOSE,
    TEXT,
    MessageReader,
    Peer,
    Recorder,
    make_conn,
    running_server,
)

TIMEOUT = 15


def words(seed: int, size: int) -> str:
    """``size`` characters of pseudo-random words: compressible, not self-repeating."""
    rnd = random.Random(seed)
    vocabulary = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
                  for _ in range(400)]
    out: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(vocabulary)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


COMMON = words(1, 1200)  # every normal message repeats it: history makes it cheap


def normal_message(i: int) -> str:
    return f"normal {i} {COMMON}"


def broadcast_message(i: int) -> str:
    return f"broadcast {i} {words(1000 + i, 1200)}"


TAKEOVER = DeflateParams(server_max_window_bits=12, client_max_window_bits=12)
NO_TAKEOVER = DeflateParams(server_no_context_takeover=True, server_max_window_bits=12,
                            client_max_window_bits=12)
NO_TAKEOVER_10 = DeflateParams(server_no_context_takeover=True, server_max_window_bits=10,
                               client_max_window_bits=12)


@pytest.fixture
def shared_frames(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Conn, bytes]]]:
    """Every (conn, frame) the Broadcaster hands over as an already encoded frame."""
    seen: list[tuple[Conn, bytes]] = []
    original = Conn._write_nowait_frame

    def spy(self: Conn, frame: bytes) -> None:
        seen.append((self, frame))
        original(self, frame)

    monkeypatch.setattr(Conn, "_write_nowait_frame", spy)
    yield seen


# -- over memory streams, decoded by the independent inflater -----------------------


async def test_every_kind_of_connection_decodes_every_message_in_order() -> None:
    kinds = {
        "plain": dict(deflate=None),
        "plain2": dict(deflate=None),
        "takeover": dict(deflate=TAKEOVER),
        "takeover2": dict(deflate=TAKEOVER),
        "no-takeover": dict(deflate=NO_TAKEOVER),
        "no-takeover2": dict(deflate=NO_TAKEOVER),
        "no-takeover-10": dict(deflate=NO_TAKEOVER_10),
        "client": dict(deflate=None, is_server=False),
        "client-deflate": dict(deflate=TAKEOVER, is_server=False),
    }
    rec = Recorder()
    pairs = {name: make_conn(rec, **kw)[:2] for name, kw in kinds.items()}
    conns = [conn for conn, _ in pairs.values()]
    expected: list[tuple[int, bytes]] = []
    got: dict[str, list[tuple[int, bytes]]] = {name: [] for name in kinds}

    async def read_all(name: str, peer: Peer) -> None:
        reader = MessageReader(peer)
        while True:
            opcode, data = await reader.next()
            if opcode == CLOSE:
                break
            got[name].append((opcode, data))
        await peer.send_close(1000)
        if peer.client:
            assert await peer.expect_eof() == b""  # the server side closes the TCP first
        await peer.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for name, (conn, peer) in pairs.items():
                nursery.start_soon(conn.listen)
                nursery.start_soon(read_all, name, peer)
            await rec.wait_kind("open", len(pairs))
            for i in range(12):
                if i % 4 == 0:
                    text = broadcast_message(i)
                    assert Broadcaster(Opcode.TEXT, text).broadcast_all(conns) == len(conns)
                elif i % 4 == 1:
                    text = normal_message(i)
                    for conn in conns:
                        await conn.write_message(Opcode.TEXT, text)
                elif i % 4 == 2:
                    text = normal_message(i)
                    for conn in conns:
                        conn.write_async(Opcode.TEXT, text)
                else:
                    text = f"short {i}"  # below compress_threshold: plain for everyone
                    Broadcaster(Opcode.TEXT, text).broadcast_all(conns)
                expected.append((TEXT, text.encode()))
                await trio.testing.wait_all_tasks_blocked()
            binary = bytes(range(256)) * 8
            Broadcaster(Opcode.BINARY, bytearray(binary)).broadcast_all(conns)
            expected.append((BINARY, binary))
            for conn in conns:
                await conn.write_close(1000)
    for name in kinds:
        assert got[name] == expected, name
    assert [e.kind for e in rec.endings()] == ["close"] * len(conns)


async def test_shared_frames_are_reused_only_where_correct(
    shared_frames: list[tuple[Conn, bytes]],
) -> None:
    rec = Recorder()
    plain = [make_conn(rec)[0] for _ in range(3)]
    no_takeover = [make_conn(rec, deflate=NO_TAKEOVER)[0] for _ in range(3)]
    narrow = [make_conn(rec, deflate=NO_TAKEOVER_10)[0] for _ in range(2)]
    takeover = [make_conn(rec, deflate=TAKEOVER)[0] for _ in range(2)]
    clients = [make_conn(rec, is_server=False)[0] for _ in range(2)]
    everyone = plain + no_takeover + narrow + takeover + clients

    big = Broadcaster(Opcode.TEXT, broadcast_message(1))
    assert big.broadcast_all(everyone) == len(everyone)
    frames = {id(conn): frame for conn, frame in shared_frames}
    # One plain frame object for every uncompressed server connection...
    assert len({id(frames[id(c)]) for c in plain}) == 1
    # ...one compressed frame object per window size for the no-takeover ones...
    assert len({id(frames[id(c)]) for c in no_takeover}) == 1
    assert len({id(frames[id(c)]) for c in narrow}) == 1
    assert frames[id(no_takeover[0])] is not frames[id(narrow[0])]
    assert frames[id(no_takeover[0])][0] & 0x40  # RSV1: compressed
    assert len(frames[id(no_takeover[0])]) < len(frames[id(plain[0])])
    # ...and takeover / client connections go through their own encoder.
    assert all(id(c) not in frames for c in takeover + clients)
    assert all(c.queued == 1 for c in everyone)

    # Below the threshold, even compressed connections share the plain frame.
    shared_frames.clear()
    small = Broadcaster(Opcode.BINARY, b"tiny")
    small.broadcast_all(everyone)
    seen = {id(conn): frame for conn, frame in shared_frames}
    assert len({id(seen[id(c)]) for c in plain + no_takeover + narrow + takeover}) == 1
    assert all(id(c) not in seen for c in clients)
    # A second broadcast of the same Broadcaster reuses what it encoded the first time.
    shared_frames.clear()
    big.broadcast_all(plain + no_takeover)
    again = {id(conn): frame for conn, frame in shared_frames}
    assert again[id(plain[0])] is frames[id(plain[0])]
    assert again[id(no_takeover[0])] is frames[id(no_takeover[0])]


async def test_sharing_the_frame_with_a_takeover_connection_would_corrupt_it() -> None:
    """Negative control: the data above really detects the corruption the Broadcaster
    avoids. Sending a history-less frame to a takeover connection desynchronises the
    next message compressed by that connection's own compressor."""
    rec = Recorder()
    conn, peer, _ = make_conn(rec, deflate=TAKEOVER)
    decoded: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await rec.wait_kind("open")
        reader = MessageReader(peer)
        await conn.write_message(Opcode.TEXT, normal_message(0))
        # What a naive broadcaster would do: a frame compressed without history.
        body, rsv = TAKEOVER.shared_encoder(conn.config).encode(
            broadcast_message(1).encode())
        conn._write_nowait_frame(encode_frame(Opcode.TEXT, body, rsv=rsv))
        await conn.write_message(Opcode.TEXT, normal_message(2))
        for _ in range(3):
            try:
                decoded.append((await reader.next())[1])
            except Exception:  # zlib may refuse the stream outright
                decoded.append(b"<undecodable>")
        nursery.cancel_scope.cancel()
    assert decoded[0] == normal_message(0).encode()
    assert decoded[1] == broadcast_message(1).encode()
    assert decoded[2] != normal_message(2).encode()


def test_broadcaster_accepts_only_data_opcodes() -> None:
    for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE, Opcode.CONTINUATION):
        with pytest.raises(ValueError):
            Broadcaster(opcode, b"x")
    assert Broadcaster(Opcode.TEXT, "\u20ac").payload == "\u20ac".encode()
    assert Broadcaster(2, memoryview(b"abc")).opcode is Opcode.BINARY


# -- real sockets, decoded by websockets ------------------------------------------

N_MESSAGES = 24

CLIENT_KINDS: dict[str, dict[str, Any]] = {
    "deflate": {"compression": "deflate"},
    "deflate-b": {"compression": "deflate"},
    "server-no-takeover": {
        "compression": None,
        "extensions": [ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                                      client_max_window_bits=True)],
    },
    "server-no-takeover-b": {
        "compression": None,
        "extensions": [ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                                      client_max_window_bits=True)],
    },
    "plain": {"compression": None},
}


def ws_client(port: int, name: str, count: int) -> list[str | bytes]:
    """A websockets client (runs in a worker thread): receive ``count`` messages."""
    with ws_sync_connect(f"ws://127.0.0.1:{port}/{name}", open_timeout=5, close_timeout=5,
                         max_size=None, **CLIENT_KINDS[name]) as ws:
        received = [ws.recv(timeout=10) for _ in range(count)]
        ws.send("done")
        return received


@pytest.mark.parametrize("forced", [False, True], ids=["takeover-allowed", "no-takeover-forced"])
async def test_websockets_clients_decode_broadcasts_interleaved_with_messages(
    forced: bool, shared_frames: list[tuple[Conn, bytes]]
) -> None:
    config = Config(compress_enabled=True, compress_threshold=512,
                    server_context_takeover=not forced)
    rec = Recorder()
    results: dict[str, list[str | bytes]] = {}
    expected: list[str | bytes] = []

    async def run(port: int, name: str) -> None:
        results[name] = await trio.to_thread.run_sync(ws_client, port, name, N_MESSAGES)

    with trio.fail_after(TIMEOUT):
        async with running_server(rec, config) as port:
            async with trio.open_nursery() as nursery:
                for name in CLIENT_KINDS:
                    nursery.start_soon(run, port, name)
                await rec.wait_kind("open", len(CLIENT_KINDS))
                conns = {conn.request.path[1:]: conn for conn in rec.conns()}
                everyone = list(conns.values())
                for i in range(N_MESSAGES):
                    if i % 3 == 0:
                        message: str | bytes = broadcast_message(i)
                        Broadcaster(Opcode.TEXT, message).broadcast_all(everyone)
                    elif i % 3 == 1:
                        message = normal_message(i)
                        for conn in everyone:
                            await conn.write_message(Opcode.TEXT, message)
                    elif i % 6 == 2:
                        message = normal_message(i).encode()
                        for conn in everyone:
                            conn.write_async(Opcode.BINARY, message)
                    else:
                        message = f"short {i}"
                        Broadcaster(Opcode.TEXT, message).broadcast_all(everyone)
                    expected.append(message)
                    if i % 4 == 3:
                        await trio.sleep(0.01)  # let some queues drain, keep others busy
                await rec.wait_kind("message", len(CLIENT_KINDS))
            await rec.wait_endings(len(CLIENT_KINDS))

    for name in CLIENT_KINDS:
        assert results[name] == expected, name
    assert [e.kind for e in rec.endings()] == ["close"] * len(CLIENT_KINDS)
    # What was negotiated is what the test means to cover.
    takeover = {name: (c.deflate_params is not None
                       and not c.deflate_params.server_no_context_takeover)
                for name, c in conns.items()}
    assert conns["plain"].deflate_params is None
    assert takeover["deflate"] is (not forced)
    assert not takeover["server-no-takeover"]
    # The compressed broadcast frame was shared, as one object, by the no-takeover ones.
    no_takeover = [c for name, c in conns.items() if c.deflate_params is not None
                   and c.deflate_params.server_no_context_takeover]
    assert len(no_takeover) == (4 if forced else 2)
    users: dict[int, set[Conn]] = {}
    for conn, frame in shared_frames:
        if frame[0] & 0x40:  # RSV1: a compressed shared frame
            users.setdefault(id(frame), set()).add(conn)
    assert len(users) == len(range(0, N_MESSAGES, 3))  # one per broadcast, not per conn
    assert all(conns_of_frame == set(no_takeover) for conns_of_frame in users.values())
