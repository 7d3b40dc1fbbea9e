"""``serve --workers N`` with real processes: a supervisor (``python -m
trio_gws serve``) serving tests/workers_app.py, real clients, a real redis-server.

Every process binds 127.0.0.1; the supervisor is stopped by PID (its process group),
and any worker it left behind is killed by PID too. Loads are bounded in count and
time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import trio_gws as gws
from trio_gws import Backoff

from helpers import ws_connect
from hubclients import Client, join
from realproc import free_port, stop
from redisproc import redis_server

TESTS = Path(__file__).resolve().parent
TIMEOUT = 120


@dataclass
class Supervisor:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"\(pid (\d+)\) accepts", self.text())}

    async def wait_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        with trio.fail_after(timeout):
            while True:
                found = re.search(pattern, self.text())
                if found:
                    return found
                if self.process.poll() is not None:
                    raise AssertionError(f"supervisor exited ({self.process.returncode}) "
                                         f"before {pattern!r}:\n{self.text()}")
                await trio.sleep(0.05)


@contextmanager
def supervisor(tmp_path: Path, *, workers: int = 2, env: dict[str, str] | None = None,
               args: tuple[str, ...] = ()) -> Iterator[Supervisor]:
    port = free_port()
    log = tmp_path / "supervisor.log"
    argv = [sys.executable, "-m", "trio_gws", "serve", "workers_app:app", "--port", str(port),
            "--workers", str(workers), "--config", "workers_app:config", *args]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]), **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=TESTS,
                                   env=environment, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    running = Supervisor(process, port, log)
    try:
        deadline = time.monotonic() + 60
        while "serving workers_app:app" not in running.text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the supervisor did not start:\n{running.text()}", pytrace=False)
            time.sleep(0.05)
        yield running
    finally:
        stop(process, timeout=15)
        for pid in running.worker_pids():  # anything it left behind, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def one_per_worker(nursery: trio.Nursery, url: str, count: int = 2,
                         attempts: int = 6, batch: int = 10) -> list[Client]:
    """Connect until ``count`` clients reached ``count`` different workers.

    The workers share the supervisor's listening socket, so which one accepts is
    whichever the kernel wakes first; one connection at a time, the same idle worker
    can win dozens in a row (seen: 60 of 60). Batches of concurrent connections
    reach a worker that is still busy with the others."""
    found: dict[int, Client] = {}
    for _ in range(attempts):
        clients: list[Client] = []

        async def one() -> None:
            clients.append(await join(nursery, url))

        async with trio.open_nursery() as connecting:
            for _ in range(batch):
                connecting.start_soon(one)
        for client in clients:
            if client.pid in found or len(found) == count:
                await client.conn.aclose()
            else:
                found[client.pid] = client
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"{attempts} batches of {batch} connections reached only "
                         f"workers {sorted(found)}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- fan-out through Redis ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_two_workers_100_clients_every_message_once_in_one_order(
        tmp_path: Path, mode: str) -> None:
    with redis_server(tmp_path) as redis, supervisor(
            tmp_path, env={"GWS_TEST_REDIS": redis.url, "GWS_TEST_MODE": mode}) as sup, \
            trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            clients = [await join(nursery, f"{sup.url}?topic={'ab'[i % 2]}")
                       for i in range(100)]
            pids = {client.pid for client in clients}
            assert len(pids) == 2, f"100 clients reached only {pids}"
            # Publishers on both workers, for both topics.
            publishers: list[tuple[Client, str]] = []
            for topic_index, topic in enumerate("ab"):
                mine = [c for i, c in enumerate(clients) if i % 2 == topic_index]
                for pid in pids:
                    publishers += [(c, topic) for c in [c for c in mine if c.pid == pid][:2]]
            per_publisher = 25

            async def publish(index: int, client: Client, topic: str) -> None:
                for n in range(per_publisher):
                    await client.publish(topic, f"{index}:{n}")
                    await trio.sleep(0.002)

            async with trio.open_nursery() as sending:
                for index, (client, topic) in enumerate(publishers):
                    sending.start_soon(publish, index, client, topic)
            expected = {topic: sorted(f"{index}:{n}" for index, (_, t) in enumerate(publishers)
                                      if t == topic for n in range(per_publisher))
                        for topic in "ab"}
            for i, client in enumerate(clients):
                total = len(expected["ab"[i % 2]])
                await client.recorder.wait_for(
                    lambda c=client, t=total: len(c.recorder.data()) >= t)
            await trio.sleep(0.3)  # a duplicate would show now
            for topic_index, topic in enumerate("ab"):
                orders = [c.recorder.data() for i, c in enumerate(clients) if i % 2 == topic_index]
                assert sorted(orders[0]) == expected[topic], "every message exactly once"
                assert all(order == orders[0] for order in orders), "one order everywhere"
                for index, (_, t) in enumerate(publishers):
                    if t == topic:  # each publisher's own order is kept
                        mine = [d for d in orders[0] if d.startswith(f"{index}:")]
                        assert mine == [f"{index}:{n}" for n in range(per_publisher)]
            nursery.cancel_scope.cancel()


async def test_a_stopped_worker_never_stalls_the_other_and_reports_a_gap(tmp_path: Path) -> None:
    """5,000 messages/s to one topic; one worker is SIGSTOPped for 3 s. The other
    keeps delivering all along; the stopped one, on resuming, finds messages older
    than max_lag (1 s), drops its backlog and tells its members of the gap."""
    rate, before, stopped, after = 5000, 1.5, 3.0, 1.5
    with redis_server(tmp_path) as redis, supervisor(
            tmp_path, env={"GWS_TEST_REDIS": redis.url, "GWS_TEST_MAX_LAG": "1.5"}) as sup, \
            trio.fail_after(TIMEOUT):
        async with gws.open_hub(redis.url, backoff=Backoff(initial=0.05, maximum=0.5)) as hub, \
                trio.open_nursery() as nursery:
            running, frozen = await one_per_worker(nursery, sup.url)
            published = 0
            total = int(rate * (before + stopped + after))
            start = trio.current_time()

            async def publish() -> None:
                # Paced to `rate`; several tasks share the hub's pipelined connection.
                nonlocal published
                while published < total:
                    due = min(total, int((trio.current_time() - start) * rate))
                    if published >= due:
                        await trio.sleep(0.005)
                        continue
                    n = published
                    published += 1
                    await hub.publish("room", gws.Opcode.TEXT, f'{{"data": {n}}}')

            for _ in range(20):
                nursery.start_soon(publish)
            await trio.sleep(before)
            os.kill(frozen.pid, signal.SIGSTOP)
            frozen_at, published_before = trio.current_time(), published
            try:
                await trio.sleep(stopped)
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            thawed_at, published_during = trio.current_time(), published - published_before
            await frozen.recorder.wait_for(lambda: frozen.recorder.of("gap"))
            gap_index = next(i for i, (_, m) in enumerate(frozen.recorder.messages)
                             if m.get("type") == "gap")
            # And it is live again after the gap.
            await frozen.recorder.wait_for(lambda: len(frozen.recorder.messages) > gap_index + 50)
            while published < total:
                await trio.sleep(0.05)
            await trio.sleep(0.5)

            during = [at for at, m in running.recorder.messages
                      if "data" in m and frozen_at <= at <= thawed_at]
            stalls = [b - a for a, b in zip(during, during[1:])]
            print(f"published {published} in {trio.current_time() - start:.1f}s, "
                  f"{published_during} during the stop; the running worker delivered "
                  f"{len(during)} meanwhile, longest pause {max(stalls, default=0) * 1000:.0f} ms")
            # Not a speed test: whatever rate this machine reached, the running worker
            # delivered it while the other was stopped, without a pause.
            assert len(during) >= published_during / 2, "the running worker kept delivering"
            assert max(stalls) < 1.0, "the running worker never stalled"
            assert not running.recorder.of("gap")
            assert frozen.recorder.messages[gap_index][0] >= thawed_at
            assert "fell behind" in sup.text()
            nursery.cancel_scope.cancel()


# -- supervising --------------------------------------------------------------------


async def test_sigterm_drains_with_1001_within_close_timeout_then_exits_0(tmp_path: Path) -> None:
    with supervisor(tmp_path) as sup, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            clients = [await join(nursery, sup.url) for _ in range(6)]
            pids = sup.worker_pids()
            sup.process.send_signal(signal.SIGTERM)
            sent = trio.current_time()
            for client in clients:
                await client.recorder.ended.wait()
                assert client.recorder.closed is not None, client.recorder.error
                assert client.recorder.closed[0] == 1001
            while sup.process.poll() is None:
                await trio.sleep(0.05)
            took = trio.current_time() - sent
            assert sup.process.returncode == 0, sup.text()
            assert took < 3 + 5, f"drain took {took:.1f}s (close_timeout 3s)"
            assert not any(alive(pid) for pid in pids)
            assert "draining the workers" in sup.text()
            nursery.cancel_scope.cancel()


async def test_sighup_rolls_without_refusing_or_resetting_a_connection(tmp_path: Path) -> None:
    """A client connects every 10 ms through the whole roll: every attempt gets its
    hello; the old workers' clients get 1012; new workers accept before old ones
    leave; afterwards only new workers serve."""
    with supervisor(tmp_path) as sup, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            old_clients = [await join(nursery, sup.url) for _ in range(4)]
            # Two clients that never answer the close: the old workers linger for
            # close_timeout (3 s) after they stop accepting, which is when a listening
            # socket of their own would hold new connections that nobody accepts.
            silent = [(await ws_connect(sup.port))[0] for _ in range(2)]
            old_pids = sup.worker_pids()
            attempts: list[tuple[float, int]] = []
            failures: list[str] = []
            done = trio.Event()

            async def attempt() -> None:
                try:
                    with trio.fail_after(30):
                        async with trio.open_nursery() as mine:
                            client = await join(mine, sup.url)
                            attempts.append((trio.current_time(), client.pid))
                            await client.conn.aclose()
                except Exception as exc:  # refused, reset, timed out: all failures
                    failures.append(repr(exc))

            async def connect_every_10ms() -> None:
                async with trio.open_nursery() as tries:
                    for _ in range(6000):  # bounded: 60 s at most
                        if done.is_set():
                            break
                        tries.start_soon(attempt)
                        await trio.sleep(0.01)

            nursery.start_soon(connect_every_10ms)
            await trio.sleep(0.5)
            sup.process.send_signal(signal.SIGHUP)
            await sup.wait_log(r"roll done")
            rolled = trio.current_time()
            await trio.sleep(0.5)
            done.set()
            while len(attempts) + len(failures) < 50:
                await trio.sleep(0.05)
            for client in old_clients:
                await client.recorder.ended.wait()
                assert client.recorder.closed is not None and client.recorder.closed[0] == 1012
            for peer in silent:
                frames = [await peer.recv_frame() for _ in range(2)]  # hello, close
                assert int.from_bytes(frames[-1].payload[:2], "big") == 1012
                await peer.aclose()

            tried = len(attempts) + len(failures)
            assert failures == [], f"{len(failures)} of {tried}: {failures[:3]}"
            new_pids = sup.worker_pids() - old_pids
            assert len(new_pids) == 2
            assert {pid for at, pid in attempts if at > rolled + 0.1} <= new_pids
            log = sup.text()
            assert log.index("generation 2 accepts") < log.index("with 1012")
            print(f"{len(attempts)} connections during the roll, none refused or reset")
            nursery.cancel_scope.cancel()


async def test_a_worker_that_dies_is_restarted(tmp_path: Path) -> None:
    with supervisor(tmp_path) as sup, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            victim = await join(nursery, sup.url)
            before = sup.worker_pids()
            await victim.conn.write_string(json.dumps({"crash": 3}))
            found = await sup.wait_log(rf"worker (\S+) \(pid {victim.pid}\) died \(exit code 3\)"
                                       r".*restarting in")
            await sup.wait_log(rf"worker {re.escape(found.group(1))} \(pid (?!{victim.pid})\d+\) "
                               "accepts")
            new = sup.worker_pids() - before
            assert len(new) == 1 and not alive(victim.pid)
            (new_pid,) = new
            # The new worker serves (the kernel hands connections to idle workers).
            for _ in range(100):
                client = await join(nursery, sup.url)
                await client.conn.aclose()
                if client.pid == new_pid:
                    break
            else:
                raise AssertionError(f"no connection reached the restarted worker {new_pid}")
            nursery.cancel_scope.cancel()


async def test_app_kinds_and_a_unix_socket(tmp_path: Path) -> None:
    """The app may be a handler, a factory or an async context manager factory; a
    Unix socket bound by the supervisor is served like a port."""
    from trio_gws._worker import AppError, open_app

    handler = gws.EventHandler()
    async with open_app(handler) as got:
        assert got is handler
    async with open_app(gws.EventHandler) as got:
        assert type(got) is gws.EventHandler
    import workers_app
    async with open_app(workers_app.app) as got:
        assert isinstance(got, workers_app.Room)
    with pytest.raises(AppError, match="not an EventHandler"):
        async with open_app(lambda: 42):
            pass
    with pytest.raises(AppError, match="asynccontextmanager"):
        async def not_a_context() -> None:
            pass
        async with open_app(not_a_context):
            pass

    path = tmp_path / "gws.sock"
    with supervisor(tmp_path, workers=1, args=("--unix", str(path))) as sup, \
            trio.fail_after(TIMEOUT):
        stream = await trio.open_unix_socket(str(path))
        conn = await gws.connect("ws://localhost/?topic=u", stream=stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            message = await conn.receive()
            assert json.loads(message.text)["pid"] in sup.worker_pids()
            await conn.aclose()
    assert not path.exists()  # the supervisor removed its socket file


def _run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trio_gws", "serve", *args], cwd=TESTS,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(TESTS)})


def test_bad_app_or_config_fails_clearly() -> None:
    port = str(free_port())
    out = _run_cli("workers_app", "--port", port)
    assert out.returncode == 2 and "package.module:attribute" in out.stderr
    out = _run_cli("workers_app:app", "--port", port, "--config", "workers_app:Room")
    assert out.returncode == 2, out.stderr
    out = _run_cli("workers_app:app", "--port", port, "--config", "workers_app:nothing")
    assert out.returncode == 2 and "has no attribute 'nothing'" in out.stderr
    out = _run_cli("no_such_module:app", "--port", port)
    assert out.returncode == 1 and "cannot import 'no_such_module'" in out.stderr
    assert "did not start" in out.stderr
    out = _run_cli("workers_app:app", "--port", port, "--workers", "0")
    assert out.returncode == 2 and "--workers" in out.stderr
