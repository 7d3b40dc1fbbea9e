"""The server under ``RLIMIT_NOFILE`` 256 receiving 1,000 connection attempts.

Each attempt connects and sends its upgrade request at once. The server accepts
until its descriptors run out; the rest wait in the listen backlog. Then:

* it logs that accept failed with EMFILE, and backs off (trio's accept loop sleeps
  100 ms between attempts) instead of spinning: the log lines are counted against
  the time spent, and the server's CPU time in that phase is measured;
* it keeps its existing connections served: a live client connected before the
  crowd gets every echo, each within a bound, throughout;
* it accepts again once descriptors are free: the test closes the crowd's
  connections as they get their 101, which frees descriptors for the ones still in
  the backlog, until every one of the 1,000 has had its 101;
* afterwards its descriptors and tasks are back at the baseline.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

import trio_gws as gws

from dying import request_bytes
from support import Echoed, server_process, settled, steady

pytestmark = pytest.mark.hostile

NOFILE = 256
ATTEMPTS = 1000
EXHAUSTED_FOR = 3.0  # seconds the server spends out of descriptors, crowd held
ECHO_BOUND = 2.0  # the live client's echo must come back within this, every time
ACCEPT_BACKOFF = 0.1  # trio.serve_listeners' sleep after EMFILE


@pytest.fixture(autouse=True)
def own_fd_limit() -> Iterator[None]:
    """This process opens the 1,000 attempts: lift its soft limit (often 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_accept_backs_off_when_out_of_descriptors(
        tmp_path: Path, figures: Callable[[str], None]) -> None:
    # Long: one server's life in phases (crowd, out of descriptors, freed, a fresh
    # connection, settle); split, the phases would only pass their state around.
    with server_process(tmp_path, "--nofile", NOFILE) as server:
        base = await trio.to_thread.run_sync(steady, server)
        handler = Echoed()
        async with gws.open_conn(f"ws://127.0.0.1:{server.port}/live", handler) as conn:

            echoes: list[float] = []

            async def echo_once(i: int) -> None:
                started = time.perf_counter()
                await conn.write_message(gws.Opcode.TEXT, f"live {i}")
                with trio.fail_after(ECHO_BOUND):
                    assert (await handler.received.receive()) == f"live {i}".encode()
                echoes.append(time.perf_counter() - started)

            got_101 = 0
            release = trio.Event()
            accepted_early = 0

            async def attempt() -> None:
                nonlocal got_101
                sock = trio.socket.socket()
                with sock:
                    await sock.connect(("127.0.0.1", server.port))
                    await sock.send(request_bytes())
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = await sock.recv(4096)
                        assert chunk, f"closed before the response: {data!r}"
                        data += chunk
                    assert data.startswith(b"HTTP/1.1 101 "), data[:80]
                    got_101 += 1
                    await release.wait()  # held open: the server's fd stays in use

            log_before = server.log_text().count("EMFILE")
            crowd_began = time.monotonic()
            async with trio.open_nursery() as crowd:
                for _ in range(ATTEMPTS):
                    crowd.start_soon(attempt)
                # Out of descriptors: the crowd holds what was accepted.
                await trio.sleep(1.0)
                cpu = server.cpu_seconds()
                began = time.monotonic()
                i = 0
                while time.monotonic() - began < EXHAUSTED_FOR:
                    await echo_once(i)
                    i += 1
                    await trio.sleep(0.05)
                exhausted = time.monotonic() - began
                cpu = server.cpu_seconds() - cpu
                accepted_early = got_101
                server_fds = server.fds()
                emfile_lines = server.log_text().count("EMFILE") - log_before
                logged_for = time.monotonic() - crowd_began
                # Free the descriptors: every held connection closes, and the ones
                # still in the backlog close as soon as they have their 101.
                release.set()
                with trio.fail_after(60):
                    while got_101 < ATTEMPTS:
                        await echo_once(i)
                        i += 1
                        await trio.sleep(0.05)
            # One more, fresh connection: accepted at once.
            with trio.fail_after(10):
                async with gws.open_conn(f"ws://127.0.0.1:{server.port}/after",
                                         gws.EventHandler()):
                    pass
        after = await trio.to_thread.run_sync(lambda: settled(server, base, timeout=30))

    figures(f"RLIMIT_NOFILE {NOFILE}: {accepted_early} of {ATTEMPTS} accepted at once "
            f"(server at {server_fds} fds), {emfile_lines} EMFILE log lines in "
            f"{logged_for:.1f} s (back-off {ACCEPT_BACKOFF} s), server CPU {cpu:.2f} s in "
            f"{exhausted:.1f} s out of fds; {len(echoes)} live echoes, slowest {max(echoes) * 1e3:.1f} ms; "
            f"all {got_101} got their 101 once fds were free; fds {base['fds']} -> "
            f"{after['fds']}, tasks {base['tasks']} -> {after['tasks']}")

    assert accepted_early < ATTEMPTS - 500, "the limit did not bite"
    assert server_fds >= NOFILE - 2, server_fds
    assert emfile_lines >= 1, "EMFILE was not logged"
    # Backed off: at most about one attempt per back-off period (x2 for slack).
    assert emfile_lines <= 2 * logged_for / ACCEPT_BACKOFF + 5, emfile_lines
    assert cpu < 0.5 * exhausted, f"the server spun: {cpu:.2f} s CPU in {exhausted:.1f} s"
    assert got_101 == ATTEMPTS
    assert after["live"] == 0 and after["fds"] == base["fds"], after
    assert after["tasks"] == base["tasks"], after
    assert after["opens"] == ATTEMPTS + 2, after  # the crowd, the live client, the last
    assert after["doubles"] == 0 and after["unopened"] == 0, after
