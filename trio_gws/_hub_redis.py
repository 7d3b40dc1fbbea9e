"""What both Redis hubs share: connections that come back, the envelope, gaps.

Commands (PUBLISH, XADD...) go through a ``Pipeline``, so that many tasks publish
concurrently over one connection; the subscription is read by one subscriber task.
pubsub mode does both on one RESP3 connection (a publish's own message and its reply
then usually arrive in one read); streams mode needs a second connection for its
blocking XREAD. Connections live in the hub's nursery and reconnect by themselves with
bounded backoff (``Backoff``); while the command connection is down, ``publish``
raises ``HubUnavailableError`` at once instead of buffering.

Every message carries an envelope: its opcode (text or binary) and the publisher's
clock (pubsub mode measures its lag with it). The modes are ``_hub_pubsub`` and
``_hub_streams``.
"""

from __future__ import annotations

import logging
import math
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._errors import HubError, HubUnavailableError
from ._hub import Hub, Mode, OnGap, logger
from ._reconnect import Backoff
from ._redis import Pipeline, RedisConnection
from ._resp import Arg, RedisAddress, ReplyError
from ._types import Opcode

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

#: opcode (1 text, 2 binary) and the publisher's time.time(), before the payload.
ENVELOPE = struct.Struct("!Bd")
_OPCODES = {int(Opcode.TEXT): Opcode.TEXT, int(Opcode.BINARY): Opcode.BINARY}


def seal(opcode: Opcode, payload: bytes) -> bytes:
    return ENVELOPE.pack(opcode, time.time()) + payload


def unseal(data: bytes) -> tuple[Opcode, float, bytes] | None:
    """(opcode, published at, payload), or None for bytes that are not an envelope."""
    if len(data) < ENVELOPE.size:
        return None
    kind, published = ENVELOPE.unpack_from(data)
    opcode = _OPCODES.get(kind)
    if opcode is None:
        return None
    return opcode, published, data[ENVELOPE.size:]


class RedisHub(Hub):
    """A hub whose topics live in Redis; the mode's subclass subscribes and publishes."""

    mode: Mode

    def __init__(self, address: RedisAddress, *, on_gap: OnGap | None, prefix: str,
                 max_lag: float | None, maxlen: int, backoff: Backoff,
                 timeout: float) -> None:
        super().__init__()
        self.address = address
        self._on_gap = on_gap
        self._prefix = prefix
        self._prefix_bytes = prefix.encode("utf-8")
        self._max_lag = max_lag
        self._maxlen = maxlen
        self._backoff = backoff
        self._timeout = timeout
        self._pipeline: Pipeline | None = None
        #: Topics whose subscription is live in this process.
        self._live: set[str] = set()
        #: Set when a topic becomes live, or when its subscription fails.
        self._ready_events: dict[str, trio.Event] = {}
        self._key_topics: dict[bytes, str] = {}
        #: Gaps reported so far (for tests and monitoring), by topic.
        self.gaps: dict[str, int] = {}
        #: Times a connection to Redis was made again after it was lost.
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"<RedisHub {self.mode} {self.address} {len(self._members)} topics>"

    @property
    def available(self) -> bool:
        """True while the command connection is up (a publish can go through)."""
        return self._pipeline is not None and not self._pipeline.closed

    # -- names -----------------------------------------------------------------------

    def _key(self, topic: str) -> bytes:
        return self._prefix_bytes + topic.encode("utf-8")

    def _topic_of(self, key: bytes) -> str | None:
        """The topic of a channel or stream key that has members here, else None."""
        topic = self._key_topics.get(key)
        if topic is None and key.startswith(self._prefix_bytes):
            try:
                name = key[len(self._prefix_bytes):].decode("utf-8")
            except UnicodeDecodeError:
                return None
            if name in self._members:
                self._key_topics[key] = topic = name
        return topic

    def _topic_removed(self, topic: str) -> None:
        self._live.discard(topic)
        self._key_topics.pop(self._key(topic), None)

    # -- commands --------------------------------------------------------------------

    async def _call(self, *args: Arg) -> Any:
        """One command over the pipelined command connection; an error reply is
        returned as a ``ReplyError``.

        Raises:
            HubUnavailableError: the connection is down (or breaks meanwhile).
        """
        pipeline = self._pipeline
        if pipeline is None or pipeline.closed:
            raise HubUnavailableError(f"Redis at {self.address} is unreachable "
                                      "(the hub is reconnecting)")
        return await pipeline.call(*args)

    async def _command(self, *args: Arg) -> Any:
        """One command over the pipelined command connection.

        Raises:
            HubUnavailableError: the connection is down (or breaks meanwhile).
            HubError: Redis answered with an error.
        """
        reply = await self._call(*args)
        if isinstance(reply, ReplyError):
            raise HubError(f"Redis at {self.address} refused {args[0]!s}: {reply}")
        return reply

    async def _connect(self, role: str, *, resp3: bool = False) -> RedisConnection:
        """A new connection, retrying with backoff until Redis answers."""
        attempt = 0
        while True:
            try:
                return await RedisConnection.open(self.address, timeout=self._timeout,
                                                  name=f"trio-gws-{role}", resp3=resp3)
            except HubError as exc:
                delay = self._backoff.delay(attempt)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                logger.log(level, "hub %s connection: %s; retrying in %.2fs (attempt %d)",
                           role, exc, delay, attempt + 1)
                attempt += 1
                await trio.sleep(delay)

    async def _run_commands(self, pipeline: Pipeline) -> None:
        """Keep the command connection up for as long as the hub runs."""
        while True:
            self._pipeline = pipeline
            up_since = trio.current_time()
            try:
                await pipeline.run()
            except HubUnavailableError as exc:
                logger.warning("hub lost its command connection to Redis: %s; reconnecting",
                               exc)
            self._pipeline = None
            await self._pause_if_flapping(up_since)
            connection = await self._connect("commands")
            pipeline = Pipeline(connection, timeout=self._timeout)
            self.reconnects += 1
            logger.warning("hub command connection to Redis at %s is back", self.address)

    async def _pause_if_flapping(self, up_since: float) -> None:
        """A connection that broke soon after it was made waits before the next one
        (Redis may be refusing clients): no spinning."""
        if trio.current_time() - up_since < self._backoff.stable_after:
            await trio.sleep(self._backoff.delay(0))

    # -- subscriptions ---------------------------------------------------------------

    async def _ready(self, topic: str) -> None:
        if topic in self._live:
            await trio.lowlevel.checkpoint()
            return
        event = self._ready_events.get(topic)
        if event is None:
            event = self._ready_events[topic] = trio.Event()
            self._subscribe_soon(topic, event)
        await event.wait()
        if topic not in self._live:
            raise HubUnavailableError(f"could not subscribe to {topic!r}: Redis at "
                                      f"{self.address} is unreachable (reconnecting)")

    def _subscribe_soon(self, topic: str, event: trio.Event) -> None:
        """Start making ``topic`` live; set ``event`` when it is (or failed)."""
        raise NotImplementedError

    def _now_live(self, topic: str) -> None:
        if topic in self._members:
            self._live.add(topic)
        event = self._ready_events.pop(topic, None)
        if event is not None:
            event.set()

    def _fail_waiting(self) -> None:
        """The subscription is gone: nothing is live, joiners still waiting fail."""
        self._live.clear()
        events, self._ready_events = self._ready_events, {}
        for event in events.values():
            event.set()

    async def _gap(self, topic: str, why: str) -> None:
        """Tell the application that ``topic``'s members here may have missed messages."""
        members = self.members(topic)
        if not members:
            return
        self.gaps[topic] = self.gaps.get(topic, 0) + 1
        if self._on_gap is None:
            logger.warning("hub: %d member(s) of %r may have missed messages (%s); pass "
                           "on_gap to open_hub to resync them", len(members), topic, why)
            return
        try:
            await self._on_gap(topic, members)
        except Exception:
            logger.exception("on_gap raised for topic %r", topic)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """Connect (raising if Redis cannot be reached), report started, then run the
        connections until cancelled, reconnecting as needed."""
        raise NotImplementedError


@asynccontextmanager
async def open_redis_hub(url: str, mode: Mode, on_gap: OnGap | None, *, prefix: str,
                         max_lag: float | None, maxlen: int, backoff: Backoff,
                         timeout: float) -> AsyncIterator[RedisHub]:
    """The Redis hub of ``open_hub`` (see its arguments)."""
    address = RedisAddress(url)
    if max_lag is not None and not max_lag > 0:
        raise ValueError("max_lag must be positive (or None)")
    if maxlen < 1:
        raise ValueError("maxlen must be at least 1")
    if not 0 < timeout < math.inf:
        raise ValueError("timeout must be positive and finite")
    hub: RedisHub
    if mode == "pubsub":
        from ._hub_pubsub import PubSubHub
        hub = PubSubHub(address, on_gap=on_gap, prefix=prefix, max_lag=max_lag,
                        maxlen=maxlen, backoff=backoff, timeout=timeout)
    elif mode == "streams":
        from ._hub_streams import StreamsHub
        hub = StreamsHub(address, on_gap=on_gap, prefix=prefix, max_lag=max_lag,
                         maxlen=maxlen, backoff=backoff, timeout=timeout)
    else:
        raise ValueError(f"mode is 'pubsub' or 'streams', not {mode!r}")
    try:
        async with trio.open_nursery() as nursery:
            try:
                # Raises (HubUnavailableError...) when Redis cannot be reached now.
                await nursery.start(hub._serve)
                yield hub
            finally:
                hub._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The block's own exception (or the hub's), not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
