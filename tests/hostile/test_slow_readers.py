"""500 connections that never read while the server broadcasts; 20 that keep up.

The server (a real process) broadcasts ROUNDS messages of SIZE bytes to every
connection, one round every INTERVAL seconds: even rounds personalised (a payload
made for each recipient, queued with ``write_nowait``: per-connection memory),
odd rounds through one ``Broadcaster`` frame. ``write_buffer_limit`` is 64 KiB and
``write_queue_size`` is out of the way (100,000), so the byte bound is what stops a
reader that does not read. The server's sockets have a small send buffer
(SO_SNDBUF 16 KiB, set on the listener and inherited) and the slow readers a small
receive buffer, so the kernel absorbs little and the queues fill within a second.

* the server's RSS, sampled every 20 ms, stays under the base + 500 x
  write_buffer_limit, where the base is its RSS with every connection open before
  the broadcast plus 16 MiB for the broadcast's own working memory (without the
  byte bound, 500 queues of 120 x 4 KiB would be 240 MiB);
* every slow reader is failed with ``WriteQueueFullError`` (close code 1008);
* every fast reader gets every message, in order, whole, and closes cleanly.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dying import Raw, request_bytes
from helpers import CLOSE, build_frame, close_payload
from support import MiB, http_get, server_process, settled, steady

pytestmark = pytest.mark.hostile

SLOW = 500
FAST = 20
LIMIT = 64 * 1024
ROUNDS = 120
SIZE = 4096
INTERVAL = 0.04
HEADROOM = 16 * MiB
HEAD = struct.Struct("!QQ")


async def connect(port: int, rcvbuf: int | None = None) -> Raw:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    raw = Raw(sock, None)
    await raw.send(request_bytes())
    await raw.upgrade()
    return raw


async def test_slow_readers_are_dropped_and_fast_ones_lose_nothing(
        tmp_path: Path, figures: Callable[[str], None]) -> None:
    # Long: one server's life in phases (connect, broadcast while sampling RSS,
    # drain, settle); split, the phases would only pass their state around.
    with server_process(tmp_path, "--write-buffer-limit", LIMIT, "--write-queue-size",
                        100_000, "--sndbuf", 16384, "--close-timeout", 2) as server:
        base = await trio.to_thread.run_sync(steady, server)
        slow = [await connect(server.port, rcvbuf=4096) for _ in range(SLOW)]
        received: list[list[tuple[int, int, bytes]]] = [[] for _ in range(FAST)]
        closed: list[int | None] = [None] * FAST
        everyone_in = trio.Event()

        async def fast_reader(i: int, raw: Raw) -> None:
            while len(received[i]) < ROUNDS:
                opcode, payload = await raw.recv_frame()
                assert opcode == 0x2, (opcode, payload[:40])
                seq, recipient = HEAD.unpack_from(payload)
                received[i].append((seq, recipient, payload[HEAD.size:]))
            await raw.send(build_frame(CLOSE, close_payload(1000)))
            opcode, payload = await raw.recv_frame()
            assert opcode == CLOSE
            closed[i] = struct.unpack("!H", payload[:2])[0]
            raw.die(False)

        rss_samples: list[int] = []
        async with trio.open_nursery() as nursery:
            fast = [await connect(server.port) for _ in range(FAST)]
            for i, raw in enumerate(fast):
                nursery.start_soon(fast_reader, i, raw)
            everyone_in.set()
            await trio.sleep(0.5)
            rss_before = server.rss()
            bound = rss_before + HEADROOM + SLOW * LIMIT
            status, _ = await trio.to_thread.run_sync(
                http_get, server.port,
                f"/broadcast?rounds={ROUNDS}&size={SIZE}&interval={INTERVAL}")
            assert status == 202
            began = time.monotonic()
            with trio.fail_after(ROUNDS * INTERVAL + 60):
                while True:
                    rss_samples.append(server.rss())
                    if rss_samples[-1] > bound:  # fail now, before memory runs out
                        pytest.fail(f"server RSS {rss_samples[-1] / MiB:.1f} MiB after "
                                    f"{time.monotonic() - began:.1f} s: over the bound "
                                    f"{bound / MiB:.1f} MiB ({rss_before / MiB:.1f} MiB "
                                    f"before the broadcast)", pytrace=False)
                    if all(c is not None for c in closed) and time.monotonic() - began > 1:
                        stats = await trio.to_thread.run_sync(server.stats)
                        if not stats["broadcast"]["running"] and stats["errors"] >= SLOW:
                            break
                    await trio.sleep(0.02)
            elapsed = time.monotonic() - began
            nursery.cancel_scope.cancel()

        # What the slow readers find in their buffers now: messages, then (when the
        # server's close frame made it into the kernel buffers) close 1008.
        saw_1008 = 0

        async def drain(raw: Raw) -> None:
            nonlocal saw_1008
            try:
                while True:
                    opcode, payload = await raw.recv_frame()
                    if opcode == CLOSE:
                        saw_1008 += struct.unpack("!H", payload[:2])[0] == 1008
                        break
            except (EOFError, OSError):
                pass

        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:
                for raw in slow:
                    nursery.start_soon(drain, raw)
        for raw in slow:
            raw.die(False)
        after = await trio.to_thread.run_sync(lambda: settled(server, base, timeout=30))

    peak = max(rss_samples)
    figures(f"{SLOW} never-reading + {FAST} reading connections, {ROUNDS} rounds of "
            f"{SIZE} B every {INTERVAL} s, write_buffer_limit {LIMIT // 1024} KiB: server "
            f"RSS {rss_before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB (bound "
            f"{bound / MiB:.1f} = before + {HEADROOM // MiB} + {SLOW} x limit) over "
            f"{elapsed:.1f} s; errors {after['error_types']} codes {after['error_codes']}"
            f"; {saw_1008} slow readers found the 1008 close frame in their buffer; fast "
            f"readers got {sorted({len(r) for r in received})} messages, closed "
            f"{sorted({c for c in closed if c is not None})}")

    assert peak <= bound, f"RSS {peak / MiB:.1f} MiB over {bound / MiB:.1f} MiB"
    assert after["error_types"] == {"WriteQueueFullError": SLOW}, after
    assert after["error_codes"] == {"1008": SLOW}, after
    assert after["close_codes"] == {"1000": FAST}, after
    assert after["broadcast"]["refused"] == SLOW, after["broadcast"]
    for messages in received:
        assert [seq for seq, _, _ in messages] == list(range(ROUNDS))
        recipients = {r for seq, r, _ in messages if seq % 2 == 0}
        assert len(recipients) == 1 and 0 not in recipients  # its own, every time
        assert all(r == 0 for seq, r, _ in messages if seq % 2)  # the shared frame
        body = bytes(range(256)) * (SIZE // 256 + 1)
        assert all(data == body[:SIZE - HEAD.size] for _, _, data in messages)
    assert closed == [1000] * FAST
    assert after["live"] == 0 and after["fds"] == base["fds"], after
    assert after["tasks"] == base["tasks"], after
