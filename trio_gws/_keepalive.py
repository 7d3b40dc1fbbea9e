"""Keepalive: ping every ``ping_interval``, fail with 1011 when no pong follows in time.

Runs in the connection's helper nursery while ``Config.ping_interval`` is set. The
reader sets ``conn._pong_seen`` when any pong arrives (an unsolicited one counts:
the peer is alive); the pong that answers our ping's payload also measures
``conn.latency``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from ._errors import ConnectionClosed, WebSocketTimeoutError

if TYPE_CHECKING:
    from ._conn import Conn


async def keepalive(conn: Conn) -> None:
    """Until the connection ends: ping, and fail it when the pong is late."""
    interval = conn.config.ping_interval
    assert interval is not None
    timeout = conn.config.ping_timeout or interval
    while True:
        await trio.sleep(interval)
        conn._pong_seen = pong_seen = trio.Event()
        payload = os.urandom(8)
        conn._new_ping(payload)  # its pong sets conn.latency
        # The timeout covers sending the ping too: a peer that stopped reading
        # leaves it stuck behind a full transport (or write queue) forever.
        try:
            with trio.move_on_after(timeout):
                try:
                    await conn.write_ping(payload)
                except ConnectionClosed:
                    return
                await pong_seen.wait()
        finally:
            conn._forget_ping(payload)
        if not pong_seen.is_set():
            conn._fail_soon(WebSocketTimeoutError(f"no pong within {timeout}s of a ping"))
            return
