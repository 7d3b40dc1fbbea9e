"""The streams hub: one Redis Stream per topic, so a process resumes where it stopped.

Publishing appends an entry (``XADD`` with ``MAXLEN ~ maxlen``, so a stream never
grows without bound) carrying a sequence number one above the stream's last entry's;
a small Lua script does both atomically. The subscriber task reads every topic with
members here with one ``XREAD BLOCK`` from the last id it delivered, so after an
outage (of Redis or of this process's connection) it continues from there and loses
nothing, as long as Redis kept the stream.

What it cannot resume is reported as a gap: entries trimmed before they were read
(this process fell further behind than ``maxlen``) show as a jump in the sequence;
a stream that was lost (Redis restarted without persistence, the key deleted) shows
as a stream that ends before our position, or a sequence that starts again.

``join`` reads the stream's last entry first: everything appended after ``join``
returns is delivered to the new member.
"""

from __future__ import annotations

import hashlib
from typing import Any

import trio

from ._errors import HubError, HubUnavailableError
from ._hub import logger
from ._hub_redis import RedisHub, seal, unseal
from ._redis import Pipeline, RedisConnection
from ._resp import ReplyError
from ._types import Opcode

#: How far back past entries that are not ours (another client XADDed them) the
#: sequence number is looked for; past that many, it starts again at 1 (a gap).
SCAN_BACK = 64

#: XADD with the next sequence number (the last entry of ours' ``s`` plus one: an
#: entry without a numeric ``s`` is another client's, never a reason to fail or to
#: start again) and a bound. The usual case reads one entry.
XADD_SCRIPT = """
local function seq_of(entry)
  local fields = entry[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 's' and string.match(fields[i + 1], '^%d+$') then
      return tonumber(fields[i + 1])
    end
  end
  return nil
end
local seq = nil
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  seq = seq_of(last[1])
  if seq == nil then
    for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[3])) do
      seq = seq_of(entry)
      if seq ~= nil then break end
    end
  end
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', (seq or 0) + 1,
                  'm', ARGV[2])
"""
XADD_SHA = hashlib.sha1(XADD_SCRIPT.encode("utf-8")).hexdigest()

#: Entries asked for per XREAD, and how long one waits for new ones (ms).
READ_COUNT = 512
BLOCK_MS = 2000
#: Where a topic is read from: (last id delivered, its sequence number).
Position = tuple[bytes, int]
START: Position = (b"0-0", 0)


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _fields(fields: list[bytes]) -> tuple[int, bytes] | None:
    """(sequence number, envelope) of an entry, or None when it is not ours."""
    if len(fields) == 4 and fields[0] == b"s" and fields[2] == b"m":
        seq, data = fields[1], fields[3]
    else:
        found = dict(zip(fields[::2], fields[1::2]))
        seq, data = found.get(b"s", b""), found.get(b"m", b"")
    if not seq.isdigit():
        return None
    return int(seq), data


def _head(reply: Any) -> Position | None:
    """The position to read a stream from, given its last entries (XREVRANGE, newest
    first): the newest entry's id, with the sequence number of the newest entry of
    ours (0 if none: the next one of ours is then 1, as XADD_SCRIPT numbers it)."""
    if not reply:
        return None
    for _, fields in reply:
        parsed = _fields(fields)
        if parsed is not None:
            return reply[0][0], parsed[0]
    return reply[0][0], 0


class StreamsHub(RedisHub):
    mode = "streams"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._positions: dict[str, Position] = {}
        self._wake = trio.Event()
        self._reader_id: int | None = None  # CLIENT ID of the XREAD connection

    async def _publish(self, topic: str, opcode: Opcode, payload: bytes) -> None:
        envelope = seal(opcode, payload)
        key = self._key(topic)
        args = (1, key, self._maxlen, envelope, SCAN_BACK)
        reply = await self._call("EVALSHA", XADD_SHA, *args)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # A Redis that has not seen the script yet (or restarted): EVAL loads it.
            reply = await self._call("EVAL", XADD_SCRIPT, *args)
        if isinstance(reply, ReplyError):
            raise HubError(f"Redis at {self.address} refused to append to {topic!r}: "
                           f"{reply}")

    # -- joining ---------------------------------------------------------------------

    async def _ready(self, topic: str) -> None:
        """Live once the stream's current end is known: read from there."""
        if topic in self._live:
            await trio.lowlevel.checkpoint()
            return
        event = self._ready_events.get(topic)
        if event is None:
            event = self._ready_events[topic] = trio.Event()
            try:
                head = await self._stream_head(topic)
                if topic in self._members:
                    self._positions[topic] = head or START
                    self._now_live(topic)
                    await self._unblock()
            finally:
                if self._ready_events.get(topic) is event:
                    del self._ready_events[topic]
                event.set()
        else:
            await event.wait()
        if topic not in self._live:
            raise HubUnavailableError(f"could not subscribe to {topic!r}: Redis at "
                                      f"{self.address} is unreachable (reconnecting)")

    async def _stream_head(self, topic: str) -> Position | None:
        """Where a new member starts reading: the stream's end, and the sequence number
        of its last entry of ours, looked for past other clients' entries as
        XADD_SCRIPT does (one entry read in the usual case)."""
        key = self._key(topic)
        reply = await self._command("XREVRANGE", key, "+", "-", "COUNT", 1)
        if reply and _fields(reply[0][1]) is None:
            reply = await self._command("XREVRANGE", key, "+", "-", "COUNT", SCAN_BACK)
        return _head(reply)

    async def _unblock(self) -> None:
        """Make the subscriber's XREAD return now, so it reads the new topic too."""
        self._wake.set()
        reader = self._reader_id
        if reader is None:
            return
        try:
            await self._command("CLIENT", "UNBLOCK", reader)
        except HubError as exc:
            # Not allowed (ACLs): the new topic is read when the XREAD times out.
            logger.debug("hub: CLIENT UNBLOCK refused (%s); new topics wait up to %d ms",
                         exc, BLOCK_MS)

    def _topic_removed(self, topic: str) -> None:
        super()._topic_removed(topic)
        self._positions.pop(topic, None)

    # -- the subscriber --------------------------------------------------------------

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """Two connections: pipelined commands, and the blocking XREAD."""
        timeout = self._timeout
        commands = await RedisConnection.open(self.address, timeout=timeout,
                                              name="trio-gws-commands")
        try:
            reader = await RedisConnection.open(self.address, timeout=timeout,
                                                name="trio-gws-subscriber")
        except BaseException:
            await commands.aclose()
            raise
        # Usable at once: the reader's first steps may need commands already.
        pipeline = self._pipeline = Pipeline(commands, timeout=timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_commands, pipeline)
            await self._run(reader, task_status)

    async def _run(self, connection: RedisConnection,
                   task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            up_since = trio.current_time()
            try:
                await connection.send(("CLIENT", "ID"))
                reader_id = await connection.receive()
                if started:
                    await self._find_lost_streams(connection)
                self._reader_id = reader_id if isinstance(reader_id, int) else None
                if not started:
                    task_status.started()
                    started = True
                await self._read(connection)
            except HubUnavailableError as exc:
                logger.warning("hub lost its stream reader's connection to Redis: %s; "
                               "reconnecting", exc)
            except HubError as exc:
                logger.error("hub stream reader: %s; reconnecting", exc)
            finally:
                self._reader_id = None
                with trio.CancelScope(shield=True):
                    await connection.aclose()
            await self._pause_if_flapping(up_since)
            connection = await self._connect("subscriber")
            self.reconnects += 1
            logger.warning("hub stream reader is connected to Redis at %s again; "
                           "resuming %d topic(s)", self.address, len(self._positions))

    async def _find_lost_streams(self, connection: RedisConnection) -> None:
        """After a reconnect: a stream that now ends before our position was lost."""
        topics = list(self._positions)
        if not topics:
            return
        await connection.send(*[("XREVRANGE", self._key(topic), "+", "-", "COUNT", 1)
                                for topic in topics])
        heads = [await connection.receive() for _ in topics]
        for topic, reply in zip(topics, heads):
            position = self._positions.get(topic)
            if position is None or isinstance(reply, ReplyError):
                continue
            head = _head(reply)
            if head is None and position == START:
                continue  # nothing was ever published: nothing lost
            if head is None or _id(head[0]) < _id(position[0]):
                self._positions[topic] = START  # all of the new stream is after the loss
                await self._gap(topic, "its stream was lost (Redis restarted without "
                                "it, or the key was deleted)")

    async def _read(self, connection: RedisConnection) -> None:
        """XREAD every topic from its position and deliver, until the connection fails."""
        while True:
            self._wake = wake = trio.Event()
            positions = self._positions
            if not positions:
                await wake.wait()
                continue
            topics = list(positions)
            await connection.send(("XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS,
                                   "STREAMS", *[self._key(topic) for topic in topics],
                                   *[positions[topic][0] for topic in topics]))
            with trio.move_on_after(BLOCK_MS / 1000 + self._timeout):
                reply = await connection.receive()
                if reply is None:
                    continue  # nothing new (or unblocked for a new topic)
                if isinstance(reply, ReplyError):
                    raise HubError(f"Redis at {self.address} refused XREAD: {reply}")
                for key, entries in reply:
                    topic = self._topic_of(key)
                    if topic is not None and topic in positions:
                        await self._entries(topic, entries)
                continue
            raise HubUnavailableError(f"Redis at {self.address} did not answer XREAD "
                                      f"within {BLOCK_MS / 1000 + self._timeout}s")

    async def _entries(self, topic: str, entries: list[Any]) -> None:
        """Deliver a topic's new entries in order; a jump in sequence is a gap."""
        last_id, last_seq = self._positions[topic]
        for entry_id, fields in entries:
            parsed = _fields(fields) if fields else None
            sealed = unseal(parsed[1]) if parsed else None
            if parsed is None or sealed is None:
                logger.warning("hub: skipped an entry of %r that no trio-gws hub wrote",
                               topic)
                last_id = entry_id
                continue
            seq = parsed[0]
            if seq != last_seq + 1:
                self._positions[topic] = (entry_id, seq)
                why = (f"{seq - last_seq - 1} entries were trimmed before they were read"
                       if seq > last_seq else "its stream started again (lost)")
                await self._gap(topic, why)
                if topic not in self._positions:
                    return  # everyone left during on_gap
            last_id, last_seq = entry_id, seq
            self._positions[topic] = (last_id, last_seq)
            self._deliver(topic, sealed[0], sealed[2])
        self._positions[topic] = (last_id, last_seq)
