"""The pubsub hub: Redis PUBLISH / SUBSCRIBE, one channel per topic.

Low latency, and lossy across an outage, which it reports: Redis keeps nothing for a
subscriber that is not connected. So after every reconnect the hub resubscribes to
each topic with members here and, once that topic's subscription is confirmed (before
any new message of it is delivered), awaits ``on_gap(topic, members)``.

A process that falls behind (a message older than ``max_lag`` when it is read: the
process was stopped, starved or flooded) drops its connection, and with it the
backlog in its socket and in Redis's output buffer, resubscribes at once and reports
a gap, rather than delivering stale messages from a buffer with no bound.

Subscriptions are counted per topic: the first member here sends SUBSCRIBE, the last
one to leave sends UNSUBSCRIBE. One task writes them (``leave`` is synchronous, so
it only wakes that task), one reads the connection: pushes, confirmations, pongs.
"""

from __future__ import annotations

import sys
import time

import trio

from ._errors import HubError, HubUnavailableError
from ._hub_redis import RedisHub, seal, unseal
from ._hub import logger
from ._redis import RedisConnection
from ._resp import Arg
from ._types import Opcode

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

#: Seconds between PINGs on an idle subscription (a dead peer is found in ~2x this).
HEALTH_INTERVAL = 10.0


class _Lagging(Exception):
    """This process fell behind: drop the backlog and resubscribe."""


class _Session:
    """One subscriber connection's view of the subscriptions."""

    __slots__ = ("connection", "outstanding", "subscribed")

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
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

    # -- the subscriber --------------------------------------------------------------

    async def _run(self, connection: RedisConnection,
                   task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            up_since = trio.current_time()
            lagging = False
            try:
                async with trio.open_nursery() as nursery:
                    session = self._session = _Session(connection)
                    nursery.start_soon(self._write_subscriptions, session)
                    if not started:
                        task_status.started()
                        started = True
                    await self._read(session)
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
                    logger.warning("hub lost its subscription to Redis: %s; reconnecting",
                                   error)
            finally:
                self._session = None
                self._fail_waiting()
                with trio.CancelScope(shield=True):
                    await connection.aclose()
            for topic in self._members:
                self._gaps.setdefault(topic, "fell behind" if lagging
                                      else "the subscription to Redis was lost")
            if not lagging:
                await self._pause_if_flapping(up_since)
            connection = await self._connect("subscriber")
            self.reconnects += 1
            logger.warning("hub subscription to Redis at %s is back; resubscribing %d "
                           "topic(s)", self.address, len(self._members))

    async def _write_subscriptions(self, session: _Session) -> None:
        """SUBSCRIBE what has members here, UNSUBSCRIBE what has none; PING when idle."""
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
            if idle.cancelled_caught:
                await connection.send(("PING",))

    async def _read(self, session: _Session) -> None:
        """Deliver messages, track confirmations, until the connection fails."""
        connection = session.connection
        max_lag = self._max_lag
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = trio.current_time() + 2 * HEALTH_INTERVAL + self._timeout
                reply = await connection.receive()
                while reply is not False:
                    if reply == b"PONG":  # PING while subscribed to nothing
                        reply = connection.receive_buffered()
                        continue
                    if not isinstance(reply, list) or len(reply) < 2:
                        raise HubUnavailableError(f"unexpected reply on the subscription: "
                                                  f"{reply!r}")
                    kind = reply[0]
                    if kind == b"message":
                        self._on_message(reply[1], reply[2], max_lag)
                    elif kind == b"subscribe" or kind == b"unsubscribe":
                        await self._confirmed(session, reply[1])
                    elif kind != b"pong":
                        raise HubUnavailableError(f"unexpected push on the subscription: "
                                                  f"{reply!r}")
                    reply = connection.receive_buffered()
        raise HubUnavailableError(f"Redis at {self.address} went silent on the "
                                  "subscription (no answer to PING)")

    def _on_message(self, channel: bytes, data: bytes, max_lag: float | None) -> None:
        topic = self._topic_of(channel)
        if topic is None:
            return  # left meanwhile (its UNSUBSCRIBE is on the way)
        sealed = unseal(data)
        if sealed is None:
            logger.warning("hub: dropped a message on %r that no trio-gws hub published",
                           topic)
            return
        opcode, published, payload = sealed
        if max_lag is not None:
            lag = time.time() - published
            if lag > max_lag:
                raise _Lagging(f"a message of {topic!r} was {lag:.2f}s old when read "
                               f"(max_lag {max_lag}s)")
        self._deliver(topic, opcode, payload)

    async def _confirmed(self, session: _Session, channel: bytes) -> None:
        """A SUBSCRIBE or UNSUBSCRIBE was done: once the last one sent for a topic is,
        its state is settled (a gap is reported before its next message)."""
        try:
            topic = channel[len(self._prefix_bytes):].decode("utf-8")
        except UnicodeDecodeError:
            raise HubError(f"confirmation for a channel that is not ours: {channel!r}")
        left = session.outstanding.get(topic, 0) - 1
        if left > 0:
            session.outstanding[topic] = left
            return
        session.outstanding.pop(topic, None)
        if not session.subscribed.get(topic):
            session.subscribed.pop(topic, None)
            return
        self._now_live(topic)
        why = self._gaps.pop(topic, None)
        if why is not None:
            await self._gap(topic, why)
