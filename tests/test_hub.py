"""The in-process hub (``gws.open_hub()``): membership, delivery through each member's
own queue, members that end leaving by themselves, and the errors of bad input.

Connections run over memory streams with a test peer reading the frames; the Redis
hubs are tested against a real redis-server in test_hub_redis.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trio_gws as gws
from trio_gws import Config, Conn, EventHandler

from helpers import CLOSE, TEXT, BINARY, Peer, make_conn

TIMEOUT = 10


@asynccontextmanager
async def members(count: int, config: Config | None = None
                  ) -> AsyncIterator[list[tuple[Conn, Peer]]]:
    """``count`` listening server connections, each with a peer reading its frames."""
    async with trio.open_nursery() as nursery:
        pairs = []
        for _ in range(count):
            conn, peer, _ = make_conn(EventHandler(), config)
            await nursery.start(conn.listen)
            pairs.append((conn, peer))
        yield pairs
        nursery.cancel_scope.cancel()


async def test_publish_reaches_every_member_of_the_topic_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with gws.open_hub() as hub, members(3) as pairs:
            (a, pa), (b, pb), (c, pc) = pairs
            await hub.join("news", a)
            await hub.join("news", b)
            await hub.join("sport", c)
            assert hub.members("news") == {a, b} and hub.topics == {"news", "sport"}
            await hub.publish("news", gws.Opcode.TEXT, "extra")
            await hub.publish("sport", gws.Opcode.BINARY, b"\x00goal")
            for peer in (pa, pb):
                frame = await peer.recv_frame()
                assert (frame.opcode, frame.payload) == (TEXT, b"extra")
            frame = await pc.recv_frame()
            assert (frame.opcode, frame.payload) == (BINARY, b"\x00goal")
            # In publish order, for everyone.
            for i in range(20):
                await hub.publish("news", gws.Opcode.TEXT, str(i))
            for peer in (pa, pb):
                assert [(await peer.recv_frame()).payload for _ in range(20)] == [
                    str(i).encode() for i in range(20)]


async def test_leave_and_leave_all() -> None:
    with trio.fail_after(TIMEOUT):
        async with gws.open_hub() as hub, members(2) as pairs:
            (a, pa), (b, pb) = pairs
            for topic in ("x", "y"):
                await hub.join(topic, a)
                await hub.join(topic, b)
            await hub.join("x", a)  # twice: still one membership
            hub.leave("x", a)
            assert hub.members("x") == {b}
            hub.leave("x", a)  # not a member: nothing happens
            hub.leave_all(b)
            assert hub.members("x") == frozenset() and hub.topics == {"y"}
            await hub.publish("x", gws.Opcode.TEXT, "nobody")
            await hub.publish("y", gws.Opcode.TEXT, "a only")
            assert (await pa.recv_frame()).payload == b"a only"
            hub.leave_all(a)
            assert hub.topics == frozenset()


async def test_a_member_that_ends_leaves_by_itself() -> None:
    """No leave_all in on_close: the hub hears of the end from the connection."""
    with trio.fail_after(TIMEOUT):
        async with gws.open_hub() as hub, members(2) as pairs:
            (a, pa), (b, pb) = pairs
            await hub.join("room", a)
            await hub.join("room", b)
            await hub.join("other", a)
            await pa.send_close(1000)
            await pa.recv_close()
            await pa.expect_eof()
            while not a.closed:
                await trio.sleep(0.01)
            assert hub.members("room") == {b} and hub.topics == {"room"}
            # An ended connection cannot join again (it would never leave).
            with pytest.raises(gws.ConnectionClosedError):
                await hub.join("room", a)
            assert hub.members("room") == {b}


async def test_a_slow_member_is_failed_by_its_own_queue_and_the_rest_get_everything() -> None:
    """Delivery goes through Broadcaster: the member that does not read overflows its
    bounded queue and is closed with 1008; the others receive every message."""
    config = Config(write_queue_size=8, close_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with gws.open_hub() as hub, trio.open_nursery() as nursery:
            slow, slow_peer, _ = make_conn(EventHandler(), config, lockstep=True)
            fast, fast_peer, _ = make_conn(EventHandler(), config)
            await nursery.start(slow.listen)
            await nursery.start(fast.listen)
            await hub.join("t", slow)
            await hub.join("t", fast)
            received: list[bytes] = []

            async def read_fast() -> None:
                while len(received) < 50:
                    received.append((await fast_peer.recv_frame()).payload)

            nursery.start_soon(read_fast)
            for i in range(50):
                await hub.publish("t", gws.Opcode.TEXT, str(i))
                await trio.sleep(0)
            while len(received) < 50:
                await trio.sleep(0.01)
            assert received == [str(i).encode() for i in range(50)]
            frames = []
            while True:  # the slow member, read at last: its 1008 follows what fitted
                frame = await slow_peer.recv_frame()
                frames.append(frame)
                if frame.opcode == CLOSE:
                    break
            assert int.from_bytes(frames[-1].payload[:2], "big") == 1008
            assert len(frames) - 1 < 50
            while not slow.closed:
                await trio.sleep(0.01)
            assert hub.members("t") == {fast}
            nursery.cancel_scope.cancel()


async def test_bad_input_is_refused_clearly() -> None:
    async with gws.open_hub() as hub, members(1) as pairs:
        (a, _), = pairs
        with pytest.raises(TypeError, match="topic is a str"):
            await hub.join(b"bytes", a)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="1 to 1024"):
            await hub.join("", a)
        with pytest.raises(ValueError, match="1 to 1024"):
            await hub.publish("x" * 1025, gws.Opcode.TEXT, "")
        with pytest.raises(ValueError):
            await hub.publish("t", gws.Opcode.PING, b"")
        assert hub.topics == frozenset()
    with pytest.raises(RuntimeError, match="hub is closed"):
        await hub.publish("t", gws.Opcode.TEXT, "late")
    with pytest.raises(ValueError, match="in-process hub"):
        async with gws.open_hub(None, mode="streams"):
            pass


async def test_redis_url_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        async with gws.open_hub("http://127.0.0.1:6379"):
            pass
    with pytest.raises(ValueError, match="database must be a number"):
        async with gws.open_hub("redis://127.0.0.1:6379/zero"):
            pass
    with pytest.raises(ValueError, match="mode is 'pubsub' or 'streams'"):
        async with gws.open_hub("redis://127.0.0.1:1", mode="lists"):  # type: ignore[arg-type]
            pass
    # The password never shows in an error.
    with pytest.raises(ValueError) as caught:
        async with gws.open_hub("redis://user:s3cret@:6379/0"):
            pass
    assert "s3cret" not in str(caught.value)


def test_envelope_round_trip() -> None:
    from trio_gws._hub_redis import seal, unseal

    opcode, published, payload = unseal(seal(gws.Opcode.BINARY, b"\x00\xff")) or (0, 0, b"")
    assert (opcode, payload) == (gws.Opcode.BINARY, b"\x00\xff") and published > 0
    assert unseal(b"\x09" + b"\x00" * 8) is None  # not a data opcode
    assert unseal(b"short") is None


def test_stream_entries_that_are_not_ours_are_recognised() -> None:
    """An entry another tool XADDed to a hub's stream: fields in any order are read,
    one without a numeric sequence number is not ours (skipped, never a crash)."""
    from trio_gws._hub_streams import _fields, _head, _id

    assert _fields([b"s", b"7", b"m", b"env"]) == (7, b"env")
    assert _fields([b"m", b"env", b"x", b"1", b"s", b"8"]) == (8, b"env")
    assert _fields([b"m", b"env"]) is None
    assert _fields([b"s", b"-1", b"m", b"env"]) is None
    assert _fields([b"other", b"field"]) is None
    assert _head([]) is None
    assert _head([(b"5-1", [b"s", b"3", b"m", b"e"])]) == (b"5-1", 3)
    assert _head([(b"5-2", [b"foreign", b"entry"])]) == (b"5-2", 0)
    # the newest entry's id, the newest sequence number of ours behind it
    assert _head([(b"6-0", [b"s", b"x"]), (b"5-1", [b"s", b"3", b"m", b"e"])]) == (b"6-0", 3)
    assert _id(b"1700000000000-3") == (1700000000000, 3) and _id(b"12") == (12, 0)


@pytest.mark.parametrize(("bound", "value", "message"), [
    ("max_lag", 0, "max_lag must be positive"),
    ("max_lag", -1.0, "max_lag must be positive"),
    ("max_lag", float("nan"), "max_lag must be positive"),
    ("maxlen", 0, "maxlen must be at least 1"),
    ("timeout", 0, "timeout must be positive and finite"),
    ("timeout", float("inf"), "timeout must be positive and finite"),
])
async def test_a_redis_hub_s_bounds_are_checked_before_connecting(
        bound: str, value: float, message: str) -> None:
    # Port 1: nothing listens there; the bound is refused before any attempt.
    with pytest.raises(ValueError, match=message):
        bounds: dict[str, Any] = {bound: value}
        async with gws.open_hub("redis://127.0.0.1:1/0", **bounds):
            pass
