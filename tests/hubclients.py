"""WebSocket clients for the hub and worker tests: each one records, with the time
it arrived, every message it receives and how its connection ended."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio

import trio_gws as gws

#: Enough room for a burst of fan-out messages without the client's own limits
#: getting in the way (what is tested is the server side).
CLIENT_CONFIG = gws.Config(max_content_length=1024 * 1024, close_timeout=5)


class Recorder(gws.EventHandler):
    """A client's messages (JSON) with their arrival times, and its ending."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []
        # Kept as they arrive: a wait_for predicate runs per message, so it must not
        # scan everything received so far.
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        self._data: list[Any] = []
        self.closed: tuple[int, bytes] | None = None
        self.error: Exception | None = None
        self.ended = trio.Event()
        self._changed = trio.Event()

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        event = json.loads(message.text)
        self.messages.append((trio.current_time(), event))
        if isinstance(event, dict):
            if "type" in event:
                self._by_type.setdefault(event["type"], []).append(event)
            if "data" in event:
                self._data.append(event["data"])
        self._changed.set()
        self._changed = trio.Event()

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self.closed = (code, reason)
        self.ended.set()
        self._changed.set()

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self.error = error
        self.ended.set()
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self._by_type.get(kind, [])

    def data(self) -> list[Any]:
        """What was published to this client, in arrival order."""
        return self._data

    async def wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self._changed.wait()


@dataclass
class Client:
    conn: gws.Conn
    recorder: Recorder
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    async def publish(self, topic: str, data: Any) -> None:
        await self.conn.write_string(json.dumps({"publish": topic, "data": data}))


async def join(nursery: trio.Nursery, url: str, *, hello: bool = True) -> Client:
    """Connect, run the connection in ``nursery``, wait for the server's hello."""
    recorder = Recorder()
    conn = await gws.connect(url, recorder, config=CLIENT_CONFIG)
    nursery.start_soon(conn.listen)
    client = Client(conn, recorder)
    if hello:
        await recorder.wait_for(lambda: recorder.of("hello") or recorder.ended.is_set())
        assert recorder.of("hello"), f"no hello from {url}: {recorder.closed or recorder.error}"
        client.pid = int(recorder.of("hello")[0]["pid"])
    return client
