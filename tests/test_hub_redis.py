"""The Redis hubs against a real redis-server (started here on 127.0.0.1, stopped by PID).

Two hubs in this process stand for two processes: each has its own connections to
Redis and its own WebSocket server with real clients. What is checked: delivery to
every member of every hub exactly once and in one order, SUBSCRIBE counted per topic,
``publish``/``join`` refusing while Redis is down, reconnection within the backoff
bound after Redis is killed and restarted, the gap report of each mode, and streams
losing nothing across the outage when Redis kept the stream.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import trio

import trio_gws as gws
from trio_gws import Backoff

from hubclients import Client, join
from realproc import require
from redisproc import RedisServer, redis_server

TIMEOUT = 60
BACKOFF = Backoff(initial=0.05, maximum=0.5, stable_after=0.2)
MODES = ["pubsub", "streams"]


class Joiner(gws.EventHandler):
    """Joins the topic of the query (``?topic=``) on its hub, then says hello."""

    def __init__(self, hub: gws.Hub) -> None:
        self.hub = hub

    async def on_open(self, conn: gws.Conn) -> None:
        topic = parse_qs(conn.request.query).get("topic", ["room"])[0]
        await self.hub.join(topic, conn)
        await conn.write_string(f'{{"type": "hello", "pid": {os.getpid()}}}')


class GapLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[gws.Conn]]] = []

    async def __call__(self, topic: str, members: frozenset[gws.Conn]) -> None:
        self.calls.append((topic, members))
        gws.Broadcaster(gws.Opcode.TEXT, f'{{"type": "gap", "topic": "{topic}"}}'
                        ).broadcast_all(members)


@asynccontextmanager
async def served(hub: gws.Hub) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(gws.serve, Joiner(hub), 0)
        yield server.port
        nursery.cancel_scope.cancel()


def redis_cli(server: RedisServer, *args: str) -> str:
    cli = require("redis-cli")
    return subprocess.run([cli, "-p", str(server.port), *args], check=True,
                          capture_output=True, text=True, timeout=10).stdout


def numsub(server: RedisServer, channel: str) -> int:
    lines = redis_cli(server, "PUBSUB", "NUMSUB", channel).split()
    return int(lines[1])


def json_data(n: int) -> str:
    return f'{{"data": {n}}}'


@pytest.mark.parametrize("mode", MODES)
async def test_two_hubs_deliver_everything_once_in_one_order(tmp_path: Path, mode: str) -> None:
    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, mode) as one, gws.open_hub(redis.url, mode) as two, \
                served(one) as port_one, served(two) as port_two, \
                trio.open_nursery() as nursery:
            clients = [await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
                       for port in (port_one, port_two, port_one, port_two, port_two)]
            if mode == "pubsub":
                # One SUBSCRIBE per hub and topic, however many members it has.
                assert numsub(redis, "trio-gws:t") == 2
            count = 60

            async def publish(hub: gws.Hub, first: int) -> None:
                for n in range(first, first + count):
                    await hub.publish("t", gws.Opcode.TEXT, json_data(n))

            async with trio.open_nursery() as publishers:
                publishers.start_soon(publish, one, 0)
                publishers.start_soon(publish, two, 1000)
            for client in clients:
                await client.recorder.wait_for(
                    lambda c=client: len(c.recorder.data()) >= 2 * count)
            await trio.sleep(0.2)  # anything extra would show now
            orders = [client.recorder.data() for client in clients]
            assert sorted(orders[0]) == [*range(count), *range(1000, 1000 + count)]
            assert all(order == orders[0] for order in orders), "one order everywhere"
            # Each publisher's messages in the order it published them.
            assert [n for n in orders[0] if n < 1000] == list(range(count))

            # One member of hub one leaves: its other member keeps the subscription.
            await clients[0].conn.aclose()
            while len(one.members("t")) != 1:
                await trio.sleep(0.02)
            await trio.sleep(0.3)
            if mode == "pubsub":
                assert numsub(redis, "trio-gws:t") == 2
            for client in clients[1:]:
                await client.conn.aclose()
            while one.topics or two.topics:
                await trio.sleep(0.02)
            if mode == "pubsub":
                with trio.fail_after(5):  # the last member out unsubscribed, promptly
                    while numsub(redis, "trio-gws:t"):
                        await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def _restart(redis: RedisServer, hubs: list[gws.Hub]) -> float:
    """Kill Redis, check that publishing and joining refuse, restart it: how long the
    hubs took to publish again after Redis was back."""
    redis.kill()
    for hub in hubs:
        while True:  # the hub notices the reset connection
            try:
                await hub.publish("t", gws.Opcode.TEXT, json_data(-1))
            except gws.HubUnavailableError:
                break
            await trio.sleep(0.01)
    await trio.sleep(0.3)
    redis.start()
    back = trio.current_time()
    for hub in hubs:
        while True:
            try:
                await hub.publish("probe", gws.Opcode.TEXT, json_data(-2))
                break
            except gws.HubUnavailableError:
                await trio.sleep(0.01)
    return trio.current_time() - back


async def test_pubsub_outage_refuses_then_reconnects_and_reports_the_gap(tmp_path: Path) -> None:
    gaps = GapLog()
    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, "pubsub", on_gap=gaps, backoff=BACKOFF) as hub, \
                served(hub) as port, trio.open_nursery() as nursery:
            a = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            b = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            await hub.publish("t", gws.Opcode.TEXT, json_data(1))
            await a.recorder.wait_for(lambda: a.recorder.data() == [1])

            redis.kill()
            with pytest.raises(gws.HubUnavailableError):
                while True:
                    await hub.publish("t", gws.Opcode.TEXT, json_data(-1))
                    await trio.sleep(0.01)
            # A join while Redis is away fails, and leaves nothing behind.
            late = await gws.connect(f"ws://127.0.0.1:{port}/?topic=late")
            nursery.start_soon(late.listen)
            while not late.closed:
                await trio.sleep(0.01)
            assert "late" not in hub.topics
            await trio.sleep(0.3)
            redis.start()
            back = trio.current_time()
            while True:
                try:
                    await hub.publish("t", gws.Opcode.TEXT, json_data(2))
                    break
                except gws.HubUnavailableError:
                    await trio.sleep(0.01)
            assert trio.current_time() - back < BACKOFF.maximum + 2.0
            # Resubscribed and the gap reported to both members; then delivery goes on.
            for client in (a, b):
                await client.recorder.wait_for(lambda c=client: c.recorder.of("gap"))
            assert trio.current_time() - back < BACKOFF.maximum + 2.0
            await hub.publish("t", gws.Opcode.TEXT, json_data(3))
            for client in (a, b):
                await client.recorder.wait_for(lambda c=client: 3 in c.recorder.data())
                assert -1 not in client.recorder.data()  # refused: never delivered
            assert [topic for topic, _ in gaps.calls] == ["t"]
            assert gaps.calls[0][1] == hub.members("t") and len(gaps.calls[0][1]) == 2
            assert hub.reconnects >= 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("on_gap", ["none", "raises"])
async def test_a_gap_without_a_working_on_gap_is_logged(tmp_path: Path, on_gap: str,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """No on_gap: the gap is a warning naming the topic and how many members may have
    missed messages. An on_gap that raises: its traceback is logged, and the hub goes
    on delivering."""
    async def broken_on_gap(topic: str, members: frozenset[gws.Conn]) -> None:
        raise RuntimeError("resync failed")

    caplog.set_level(logging.WARNING, logger="trio_gws.hub")
    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, "pubsub", backoff=BACKOFF,
                                on_gap=broken_on_gap if on_gap == "raises" else None
                                ) as hub, \
                served(hub) as port, trio.open_nursery() as nursery:
            a = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            redis.kill()
            await trio.sleep(0.3)
            redis.start()
            while not hub.gaps.get("t"):
                try:
                    await hub.publish("t", gws.Opcode.TEXT, json_data(1))
                except gws.HubUnavailableError:
                    pass
                await trio.sleep(0.01)
            await hub.publish("t", gws.Opcode.TEXT, json_data(2))
            await a.recorder.wait_for(lambda: 2 in a.recorder.data())
            nursery.cancel_scope.cancel()
    records = [r for r in caplog.records if r.name == "trio_gws.hub"]
    if on_gap == "none":
        [warning] = [r for r in records if "may have missed messages" in r.getMessage()]
        assert warning.levelno == logging.WARNING
        assert "1 member(s) of 't'" in warning.getMessage()
    else:
        [error] = [r for r in records if "on_gap raised" in r.getMessage()]
        assert error.exc_info is not None and "resync failed" in str(error.exc_info[1])


@pytest.mark.parametrize("mode", MODES)
async def test_what_another_client_writes_to_a_topic_is_skipped_and_logged(
        tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """A PUBLISH on a hub's channel, or an XADD to its stream, by something else
    (redis-cli here): members get nothing of it, a warning names the topic, and the
    hub's own messages keep flowing."""
    caplog.set_level(logging.WARNING, logger="trio_gws.hub")
    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, mode, backoff=BACKOFF) as hub, \
                served(hub) as port, trio.open_nursery() as nursery:
            a = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            await hub.publish("t", gws.Opcode.TEXT, json_data(1))
            await a.recorder.wait_for(lambda: a.recorder.data() == [1])
            if mode == "pubsub":
                redis_cli(redis, "PUBLISH", "trio-gws:t", "not an envelope")
                foreign = 1
            else:
                # one without our fields, one whose "s" is not a sequence number (it
                # once failed every later publish: the script did tonumber(...) + 1)
                redis_cli(redis, "XADD", "trio-gws:t", "*", "foreign", "entry")
                redis_cli(redis, "XADD", "trio-gws:t", "*", "s", "soon", "m", "x")
                foreign = 2
            # a member joining now starts after the foreign entries, at our sequence
            b = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            await hub.publish("t", gws.Opcode.TEXT, json_data(2))
            await a.recorder.wait_for(lambda: a.recorder.data() == [1, 2])
            await b.recorder.wait_for(lambda: b.recorder.data() == [2])
            nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.name == "trio_gws.hub"
                and "no trio-gws hub" in r.getMessage()]
    assert len(warnings) == foreign and all("'t'" in w.getMessage() for w in warnings)
    assert hub.gaps == {}  # not a loss: nothing of ours was missed


@pytest.mark.parametrize("kept", [True, False], ids=["stream-kept", "stream-lost"])
async def test_streams_outage_loses_nothing_while_the_stream_is_kept(tmp_path: Path,
                                                                     kept: bool) -> None:
    """Redis killed mid-stream and restarted: with the stream kept (an append-only
    file) every acknowledged publish is delivered once, in order, and no gap is
    reported; with the stream lost (no persistence) the loss is reported."""
    gaps = GapLog()
    redis = RedisServer(tmp_path, persist=kept)
    redis.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with gws.open_hub(redis.url, "streams", on_gap=gaps, backoff=BACKOFF) as hub, \
                    served(hub) as port, trio.open_nursery() as nursery:
                member = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
                acknowledged: list[int] = []

                async def publish_until(last: int) -> None:
                    n = acknowledged[-1] + 1 if acknowledged else 0
                    while n <= last:
                        try:
                            await hub.publish("t", gws.Opcode.TEXT, json_data(n))
                        except gws.HubUnavailableError:
                            await trio.sleep(0.01)
                            continue
                        acknowledged.append(n)
                        n += 1

                await publish_until(99)
                took = await _restart(redis, [hub])
                assert took < BACKOFF.maximum + 2.0
                if not kept:
                    # Reported at the reconnect, before anything new is published.
                    with trio.fail_after(5):
                        await member.recorder.wait_for(lambda: member.recorder.of("gap"))
                await publish_until(199)
                await member.recorder.wait_for(lambda: 199 in member.recorder.data())
                data = member.recorder.data()
                if kept:
                    assert data == acknowledged == list(range(200))
                    assert gaps.calls == []
                else:
                    assert [topic for topic, _ in gaps.calls] == ["t"]
                    assert data[-100:] == list(range(100, 200))
                    # The gap is told before the first message of the new stream.
                    arrived = [m.get("type") or m["data"] for _, m in member.recorder.messages]
                    assert arrived.index("gap") < arrived.index(100)
                nursery.cancel_scope.cancel()
    finally:
        redis.stop()


def _publish_from_another_loop(url: str, mode: str, topic: str, count: int) -> None:
    """Publish ``count`` messages through a hub of a second Trio run (a thread)."""
    async def publish() -> None:
        # maxlen is the publisher's: it trims when it appends.
        async with gws.open_hub(url, mode, maxlen=10) as hub:  # type: ignore[arg-type]
            for n in range(count):
                await hub.publish(topic, gws.Opcode.TEXT, json_data(n))
    trio.run(publish)


@pytest.mark.parametrize("mode", MODES)
async def test_a_process_that_falls_behind_reports_a_gap(tmp_path: Path, mode: str) -> None:
    """This process stalls (its Trio loop is blocked) while another publishes: pubsub
    finds messages older than max_lag, streams finds its entries trimmed (maxlen);
    either way a gap is reported instead of a backlog without bound, and delivery
    goes on afterwards."""
    gaps = GapLog()
    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, mode, on_gap=gaps, max_lag=0.5, maxlen=10,
                                backoff=BACKOFF) as hub, \
                served(hub) as port, trio.open_nursery() as nursery:
            member = await join(nursery, f"ws://127.0.0.1:{port}/?topic=t")
            thread = threading.Thread(target=_publish_from_another_loop,
                                      args=(redis.url, mode, "t", 1000))
            started = time.monotonic()
            thread.start()
            thread.join()  # blocks this loop: the hub cannot read meanwhile
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
            await member.recorder.wait_for(lambda: member.recorder.of("gap"))
            assert [topic for topic, _ in gaps.calls] == ["t"]
            # Still live after the gap.
            while True:
                await hub.publish("t", gws.Opcode.TEXT, json_data(5000))
                with trio.move_on_after(0.5):
                    await member.recorder.wait_for(lambda: 5000 in member.recorder.data())
                    break
            received = [n for n in member.recorder.data() if n < 1000]
            assert len(received) < 1000  # what was lost is what the gap reported
            assert received == sorted(received)
            nursery.cancel_scope.cancel()


async def test_unreachable_redis_fails_open_hub_clearly(tmp_path: Path) -> None:
    from realproc import free_port

    with pytest.raises(gws.HubUnavailableError, match="cannot reach Redis"):
        async with gws.open_hub(f"redis://127.0.0.1:{free_port()}/0", timeout=2):
            pass
    with redis_server(tmp_path) as redis:
        # A key of another type: the error names the topic and Redis's answer.
        redis_cli(redis, "SET", "trio-gws:taken", "x")
        async with gws.open_hub(redis.url, "streams") as hub:
            with pytest.raises(gws.HubError, match="WRONGTYPE"):
                await hub.publish("taken", gws.Opcode.TEXT, "x")
        redis_cli(redis, "CONFIG", "SET", "requirepass", "right")
        for mode in MODES:  # pubsub logs in with HELLO 3 AUTH, streams with AUTH
            with pytest.raises(gws.HubError, match="refused AUTH"):
                async with gws.open_hub(f"redis://:wrong@127.0.0.1:{redis.port}/0", mode):
                    pass
            async with gws.open_hub(f"redis://:right@127.0.0.1:{redis.port}/0",
                                    mode) as hub:
                await hub.publish("t", gws.Opcode.TEXT, "logged in")


async def test_a_unix_socket_an_acl_user_and_a_database(tmp_path: Path) -> None:
    """unix:// with its query (db, user, password), and redis:// with an ACL user in
    the URL: each logs in as that user (HELLO 3 AUTH for pubsub, AUTH user password
    for streams), selects the database, and works there."""
    sock = tmp_path / "redis.sock"
    acl = ["--unixsocket", str(sock), "--unixsocketperm", "700",
           "--user", "alice", "on", ">pa55", "~*", "&*", "+@all"]
    with redis_server(tmp_path, extra=acl) as redis:
        for mode in MODES:
            for url in (f"unix://{sock}?db=3&user=alice&password=pa55",
                        f"redis://alice:pa55@127.0.0.1:{redis.port}/3"):
                async with gws.open_hub(url, mode) as hub:
                    await hub.publish("t", gws.Opcode.TEXT, "hi")
            with pytest.raises(gws.HubError, match="refused AUTH") as refused:
                async with gws.open_hub(f"unix://{sock}?user=alice&password=wrong", mode):
                    pass
            assert "wrong" not in str(refused.value)
        # the streams hub appended both messages to db 3's stream, none to db 0's
        assert redis_cli(redis, "-n", "3", "XLEN", "trio-gws:t").strip() == "2"
        assert redis_cli(redis, "-n", "0", "EXISTS", "trio-gws:t").strip() == "0"


def test_missing_extra_names_it() -> None:
    code = ("import sys; sys.modules['hiredis'] = None\n"
            "import trio, trio_gws as gws\n"
            "async def main():\n"
            "    async with gws.open_hub('redis://127.0.0.1:1'): pass\n"
            "try:\n    trio.run(main)\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "pip install 'trio-gws[redis]'" in out.stdout, out


async def test_a_redis_that_stops_answering_fails_publish_within_the_timeout(
        tmp_path: Path) -> None:
    """Redis stopped (SIGSTOP), not gone: a publish is not left waiting forever, it
    fails after ``timeout``; once Redis runs again the hub is back."""
    import signal

    with redis_server(tmp_path) as redis, trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, timeout=1.0, backoff=BACKOFF) as hub:
            await hub.publish("t", gws.Opcode.TEXT, "before")
            assert redis.process is not None
            redis.process.send_signal(signal.SIGSTOP)
            try:
                started = trio.current_time()
                with pytest.raises(gws.HubUnavailableError, match="within 1.0s"):
                    await hub.publish("t", gws.Opcode.TEXT, "stuck")
                assert trio.current_time() - started < 1.0 + 1.0
            finally:
                redis.process.send_signal(signal.SIGCONT)
            while True:
                try:
                    await hub.publish("t", gws.Opcode.TEXT, "after")
                    break
                except gws.HubUnavailableError:
                    await trio.sleep(0.02)
