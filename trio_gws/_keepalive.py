"""Round trips: ``Conn.ping()``'s waiting pings, and the keepalive that pings every
``ping_interval`` and fails the connection with 1011 when no pong follows in time.

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
from ._loan import recall_reads

if TYPE_CHECKING:
    from ._conn import Conn


class Ping:
    """A ping waiting for its pong (``rtt`` stays None if the connection ends first)."""

    __slots__ = ("sent_at", "done", "rtt")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.done = trio.Event()
        self.rtt: float | None = None


def new_ping(conn: Conn, data: bytes) -> Ping:
    if conn._pings is None:
        conn._pings = {}
    if data in conn._pings:
        raise ValueError(f"a ping with payload {data!r} is already waiting for its pong")
    ping = conn._pings[data] = Ping(trio.current_time())
    recall_reads(conn)  # its pong must be read, whatever a streamed message's handler does
    return ping


def forget_ping(conn: Conn, data: bytes) -> None:
    if conn._pings is not None:
        conn._pings.pop(data, None)


def answered(conn: Conn, payload: bytes) -> None:
    """A pong arrived: its ping, and every ping sent before it, are answered."""
    assert conn._pings is not None
    ping = conn._pings.get(payload)
    if ping is None:
        return  # unsolicited, or not one of ours
    now = trio.current_time()
    conn.latency = now - ping.sent_at
    for other in conn._pings.values():
        if other.sent_at <= ping.sent_at and other.rtt is None:
            other.rtt = now - other.sent_at
            other.done.set()




async def keepalive(conn: Conn) -> None:
    """Until the connection ends: ping, and fail it when the pong is late."""
    interval = conn.config.ping_interval
    assert interval is not None
    timeout = conn.config.ping_timeout or interval
    while True:
        await trio.sleep(interval)
        conn._pong_seen = pong_seen = trio.Event()
        payload = os.urandom(8)
        new_ping(conn, payload)  # its pong sets conn.latency
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
            forget_ping(conn, payload)
        if not pong_seen.is_set():
            conn._fail_soon(WebSocketTimeoutError(f"no pong within {timeout}s of a ping"))
            return
