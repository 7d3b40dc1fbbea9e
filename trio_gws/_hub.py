"""Hubs: topics of connections, with publish reaching every member.

``open_hub()`` is in-process: a publish is delivered at once to the members of this
process. ``open_hub("redis://...")`` reaches every process and host that uses the
same Redis (``_hub_redis``): a publish goes to Redis, and every process, the
publisher's included, delivers what its subscription receives, so a topic has one
order everywhere.

Delivery always goes through ``Broadcaster``: the message is encoded once and queued
to each member's bounded ``write_nowait`` queue, so a slow member is failed (1008)
by its own queue and never holds up the others or the hub.

Members are connections; a connection that ends is removed by the hub itself (it
asks the connection to tell it, ``Conn._on_end``), so the application never has to
call ``leave_all`` in ``on_close`` (it may: leaving twice is harmless).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal, Union

import trio

from ._broadcast import Broadcaster
from ._conn import Conn
from ._errors import ConnectionClosedError
from ._reconnect import Backoff
from ._types import Opcode, Payload, as_bytes, data_opcode

#: ``on_gap(topic, members)``: awaited when messages of ``topic`` may have been lost
#: for this process's ``members`` of it (pubsub after a reconnect or when it fell
#: behind, streams when the stream was trimmed or lost): send them a resync.
OnGap = Callable[[str, frozenset[Conn]], Awaitable[None]]

#: The longest topic name accepted (a Redis key or channel name is built from it).
MAX_TOPIC = 1024

logger = logging.getLogger("trio_gws.hub")


def check_topic(topic: object) -> str:
    """``topic`` if it is a usable topic name.

    Raises:
        TypeError: not a str.
        ValueError: empty or longer than ``MAX_TOPIC`` characters.
    """
    if not isinstance(topic, str):
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    if not topic or len(topic) > MAX_TOPIC:
        raise ValueError(f"a topic has 1 to {MAX_TOPIC} characters, got {len(topic)}")
    return topic


class Hub:
    """Topics of connections; ``publish`` reaches every member (see ``open_hub``).

    This process's members are kept here; what ``join`` waits for and where a
    publish goes is the subclass's business (``_ready``, ``_publish``).
    """

    def __init__(self) -> None:
        self._members: dict[str, set[Conn]] = {}
        self._topics_of: dict[Conn, set[str]] = {}
        self._closed = False

    # -- membership ------------------------------------------------------------------

    async def join(self, topic: str, conn: Conn) -> None:
        """Make ``conn`` a member of ``topic``; return once the subscription is live,
        so every message published after this returns reaches it.

        Joining twice is harmless. The connection leaves by itself when it ends.

        Raises:
            HubUnavailableError: the engine (Redis) cannot be reached: ``conn`` is not
                a member.
            ConnectionClosedError: ``conn`` has ended.
            TypeError, ValueError: ``topic`` is not a usable name.
            RuntimeError: the hub is closed.
        """
        check_topic(topic)
        self._check_open()
        if conn.closed:
            raise ConnectionClosedError(f"{conn!r} has ended: it cannot join {topic!r}")
        members = self._members.get(topic)
        if members is not None and conn in members:
            await self._ready(topic)
            return
        if members is None:
            members = self._members[topic] = set()
            self._topic_added(topic)
        members.add(conn)
        topics = self._topics_of.get(conn)
        if topics is None:
            topics = self._topics_of[conn] = set()
            conn._on_end(self.leave_all)
        topics.add(topic)
        try:
            await self._ready(topic)
        except BaseException:
            self.leave(topic, conn)
            raise

    def leave(self, topic: str, conn: Conn) -> None:
        """``conn`` is no longer a member of ``topic`` (nothing happens if it was not);
        the last member to leave ends this process's subscription of the topic."""
        members = self._members.get(topic)
        if members is None or conn not in members:
            return
        members.discard(conn)
        topics = self._topics_of.get(conn)
        if topics is not None:
            topics.discard(topic)
            if not topics:
                del self._topics_of[conn]
        if not members:
            del self._members[topic]
            self._topic_removed(topic)

    def leave_all(self, conn: Conn) -> None:
        """``conn`` leaves every topic (the hub does it itself when ``conn`` ends)."""
        for topic in list(self._topics_of.get(conn, ())):
            self.leave(topic, conn)

    def members(self, topic: str) -> frozenset[Conn]:
        """This process's members of ``topic``."""
        return frozenset(self._members.get(topic, ()))

    @property
    def topics(self) -> frozenset[str]:
        """The topics that have members in this process."""
        return frozenset(self._members)

    # -- publishing ------------------------------------------------------------------

    async def publish(self, topic: str, opcode: Opcode | int, payload: Payload) -> None:
        """Send a message to every member of ``topic``, in every process.

        Returns once the engine took it (Redis answered); members are served from
        their own bounded queues, so a slow one never holds this up.

        Raises:
            HubUnavailableError: Redis cannot be reached (nothing is buffered; a
                publish cut off by an outage may or may not have been delivered).
            HubError: Redis refused it.
            TypeError, ValueError: a bad topic, opcode or payload.
            RuntimeError: the hub is closed.
        """
        check_topic(topic)
        kind = data_opcode(opcode)
        data = as_bytes(payload)
        self._check_open()
        await self._publish(topic, kind, data if type(data) is bytes else bytes(data))

    def _deliver(self, topic: str, opcode: Opcode, payload: bytes) -> int:
        """Queue a message to this process's members of ``topic``; how many took it."""
        members = self._members.get(topic)
        if not members:
            return 0
        # Sync and non-blocking: nothing in it can end a connection (and so change
        # the set) before it returns.
        return Broadcaster(opcode, payload).broadcast_all(members)

    # -- what a kind of hub decides ------------------------------------------------------

    async def _ready(self, topic: str) -> None:
        await trio.lowlevel.checkpoint()

    async def _publish(self, topic: str, opcode: Opcode, payload: bytes) -> None:
        raise NotImplementedError

    def _topic_added(self, topic: str) -> None:
        """The first member of ``topic`` in this process joined."""

    def _topic_removed(self, topic: str) -> None:
        """The last member of ``topic`` in this process left."""

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the hub is closed (its open_hub block has ended)")

    def _close(self) -> None:
        self._closed = True
        self._members.clear()
        self._topics_of.clear()


class LocalHub(Hub):
    """The in-process hub: a publish is delivered at once, in publish order."""

    async def _publish(self, topic: str, opcode: Opcode, payload: bytes) -> None:
        self._deliver(topic, opcode, payload)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<LocalHub {len(self._members)} topics>"


Mode = Literal["pubsub", "streams"]
DEFAULT_BACKOFF = Backoff(initial=0.1, maximum=5.0, stable_after=10.0)


@asynccontextmanager
async def open_hub(
    url: str | None = None,
    mode: Mode = "pubsub",
    on_gap: OnGap | None = None,
    *,
    prefix: str = "trio-gws:",
    max_lag: Union[float, None] = 5.0,
    maxlen: int = 10_000,
    backoff: Backoff = DEFAULT_BACKOFF,
    timeout: float = 5.0,
) -> AsyncIterator[Hub]:
    """A hub of topics for the duration of the block.

    Args:
        url: None for an in-process hub; ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://...`` (TLS) or ``unix:///path/redis.sock[?db=N]`` to reach every
            process and host sharing that Redis (needs ``trio-gws[redis]``).
        mode: ``"pubsub"`` (Redis PUBLISH/SUBSCRIBE: low latency, lossy across an
            outage, reported through ``on_gap``) or ``"streams"`` (Redis Streams:
            a process resumes where it stopped; a trimmed or lost stream is a gap).
        on_gap: ``await on_gap(topic, members)`` when messages of ``topic`` may have
            been lost for this process's ``members``; None logs a warning instead.
        prefix: put before every topic to make the Redis channel or stream key.
        max_lag: pubsub: a message older than this (seconds, publisher's clock) means
            this process fell behind: it drops its backlog, resubscribes and reports a
            gap. None: no bound but Redis's own output buffer limit.
        maxlen: streams: entries kept per topic (``XADD MAXLEN ~``); a process further
            behind than that finds its entries trimmed, and reports a gap.
        backoff: waits between reconnection attempts (bounded by ``backoff.maximum``).
        timeout: bound on connecting to Redis and on each command's answer.

    Raises:
        HubUnavailableError: Redis cannot be reached when the hub opens.
        HubError: Redis refused the login or the database.
        ImportError: the ``redis`` extra is not installed.
        ValueError: a bad URL, mode or bound.
    """
    if url is None:
        if mode != "pubsub" or on_gap is not None:
            raise ValueError("the in-process hub (no URL) loses nothing and has no modes; "
                             "mode and on_gap are for a Redis hub")
        hub = LocalHub()
        try:
            yield hub
        finally:
            hub._close()
        return
    from ._hub_redis import open_redis_hub

    async with open_redis_hub(url, mode, on_gap, prefix=prefix, max_lag=max_lag,
                              maxlen=maxlen, backoff=backoff, timeout=timeout) as redis_hub:
        yield redis_hub
