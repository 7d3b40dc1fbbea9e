"""The pubsub hub: Redis PUBLISH / SUBSCRIBE, one channel per topic, on one connection.

Low latency, and lossy across an outage, which it reports: Redis keeps nothing for a
subscriber that is not connected. So after every reconnect the hub resubscribes to
each topic with members here and, once that topic's subscription is confirmed (before
any new message of it is delivered), awaits ``on_gap(topic, members)``.

A process that falls behind (a message older than ``max_lag`` when it is read: the
process was stopped, starved or flooded) drops its connection, and with it the
backlog in its socket and in Redis's output buffer, resubscribes at once and reports
a gap, rather than delivering stale messages from a buffer with no bound.

Commands and the subscription share one RESP3 connection (Redis 6 or newer): pushes
(messages, confirmations) arrive between replies, and the one task reading it hands
each reply to its caller and each push to the subscription. A process publishing to a
topic it is subscribed to gets its own message and the reply in one read, where two
connections cost two reads and two wake-ups per publish.

Subscriptions are counted per topic: the first member here sends SUBSCRIBE, the last
one to leave sends UNSUBSCRIBE. One task writes them (``leave`` is synchronous, so it
only wakes that task).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable
from functools import partial

import trio

from ._errors import HubError, HubUnavailableError
from ._hub import logger
from ._hub_redis import RedisHub, seal, unseal
from ._redis import Pipeline, RedisConnection
from ._resp import Arg, Push
from ._types import Opcode

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

#: Seconds between PINGs on an idle connection (a silent Redis is found by the
#: pipeline's timeout on the PING's answer).
HEALTH_INTERVAL = 10.0


class _Lagging(Exception):
    """This process fell behind: drop the backlog and resubscribe."""


class _Session:
    """One connection's view of the subscriptions."""

    __slots__ = ("connection", "outstanding", "pipeline", "subscribed")

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.pipeline: Pipeline | None = None
        #: The last command sent per topic: True SUBSCRIBE, False UNSUBSCRIBE.
        self.subscribed: dict[str, bool] = {}
        #: Commands sent per topic whose confirmation has not arrived yet.
        self.outstanding: dict[str, int] = {}


class PubSubHub(RedisHub):
    mode = "pubsub"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._session: _Session | None = None
        self._wake = trio.Event()
        #: Topics whose members must be told of a gap once they are subscribed again.
        self._gaps: dict[str, str] = {}

    async def _publish(self, topic: str, opcode: Opcode, payload: bytes) -> None:
        await self._command("PUBLISH", self._key(topic), seal(opcode, payload))

    # -- subscriptions ---------------------------------------------------------------

    def _subscribe_soon(self, topic: str, event: trio.Event) -> None:
        if self._session is None:
            event.set()  # not live: the joiner is told Redis is unreachable
            self._ready_events.pop(topic, None)
            return
        self._wake.set()

    def _topic_removed(self, topic: str) -> None:
        super()._topic_removed(topic)
        self._gaps.pop(topic, None)
        self._wake.set()

    # -- the connection --------------------------------------------------------------

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        connection = await RedisConnection.open(self.address, timeout=self._timeout,
                                                name="trio-gws-pubsub", resp3=True)
        started = False
        while True:
            up_since = trio.current_time()
            lagging = False
            try:
                async with trio.open_nursery() as nursery:
                    session = self._session = _Session(connection)
                    pipeline = session.pipeline = self._pipeline = Pipeline(
                        connection, timeout=self._timeout,
                        on_push=partial(self._on_push, session))
                    nursery.start_soon(self._write_subscriptions, session)
                    if not started:
                        task_status.started()
                        started = True
                    await pipeline.run()  # until the connection fails
            except BaseExceptionGroup as group:
                expected, rest = group.split((_Lagging, HubUnavailableError))
                if rest is not None or expected is None:
                    raise
                error = expected.exceptions[0]
                lagging = isinstance(error, _Lagging)
                if lagging:
                    logger.warning("hub fell behind: %s; dropping the backlog and "
                                   "resubscribing", error)
                else:
                    logger.warning("hub lost its connection to Redis: %s; reconnecting",
                                   error)
            finally:
                self._session = None
                self._pipeline = None
                self._fail_waiting()
                with trio.CancelScope(shield=True):
                    await connection.aclose()
            for topic in self._members:
                self._gaps.setdefault(topic, "fell behind" if lagging
                                      else "the connection to Redis was lost")
            if not lagging:
                await self._pause_if_flapping(up_since)
            connection = await self._connect("pubsub", resp3=True)
            self.reconnects += 1
            logger.warning("hub is connected to Redis at %s again; resubscribing %d "
                           "topic(s)", self.address, len(self._members))

    async def _write_subscriptions(self, session: _Session) -> None:
        """SUBSCRIBE what has members here, UNSUBSCRIBE what has none; PING when idle.
        (Their confirmations are pushes, without a reply: nothing waits for them here.)"""
        connection = session.connection
        while True:
            self._wake = wake = trio.Event()
            commands: list[tuple[Arg, ...]] = []
            wanted = self._members
            add = [topic for topic in wanted if not session.subscribed.get(topic)]
            drop = [topic for topic, on in session.subscribed.items()
                    if on and topic not in wanted]
            for topics, command, on in ((add, "SUBSCRIBE", True),
                                        (drop, "UNSUBSCRIBE", False)):
                if topics:
                    commands.append((command, *[self._key(topic) for topic in topics]))
                    for topic in topics:
                        session.subscribed[topic] = on
                        session.outstanding[topic] = session.outstanding.get(topic, 0) + 1
            if commands:
                await connection.send(*commands)
            with trio.move_on_after(HEALTH_INTERVAL) as idle:
                await wake.wait()
            if idle.cancelled_caught and session.pipeline is not None:
                await session.pipeline.call("PING")  # a silent Redis times out here

    def _on_push(self, session: _Session, push: Push) -> Awaitable[None] | None:
        """A message or a confirmation, in the order Redis sent it."""
        kind = push[0]
        if kind == b"message":
            self._on_message(push[1], push[2])
            return None
        if kind == b"subscribe" or kind == b"unsubscribe":
            return self._confirmed(session, push[1])
        return None  # other pushes (client tracking...) are not ours

    def _on_message(self, channel: bytes, data: bytes) -> None:
        topic = self._topic_of(channel)
        if topic is None:
            return  # left meanwhile (its UNSUBSCRIBE is on the way)
        sealed = unseal(data)
        if sealed is None:
            logger.warning("hub: dropped a message on %r that no trio-gws hub published",
                           topic)
            return
        opcode, published, payload = sealed
        max_lag = self._max_lag
        if max_lag is not None:
            lag = time.time() - published
            if lag > max_lag:
                raise _Lagging(f"a message of {topic!r} was {lag:.2f}s old when read "
                               f"(max_lag {max_lag}s)")
        self._deliver(topic, opcode, payload)

    def _confirmed(self, session: _Session, channel: bytes) -> Awaitable[None] | None:
        """A SUBSCRIBE or UNSUBSCRIBE was done: once the last one sent for a topic is,
        its state is settled (a gap is reported before its next message)."""
        try:
            topic = channel[len(self._prefix_bytes):].decode("utf-8")
        except UnicodeDecodeError:
            raise HubError(f"confirmation for a channel that is not ours: {channel!r}")
        left = session.outstanding.get(topic, 0) - 1
        if left > 0:
            session.outstanding[topic] = left
            return None
        session.outstanding.pop(topic, None)
        if not session.subscribed.get(topic):
            session.subscribed.pop(topic, None)
            return None
        self._now_live(topic)
        why = self._gaps.pop(topic, None)
        if why is not None:
            return self._gap(topic, why)
        return None
