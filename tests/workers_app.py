"""The application the worker tests serve: ``python -m trio_gws serve workers_app:app``.

Every connection joins the topic named in its query (``/?topic=a``, default ``room``)
and is greeted with ``{"type": "hello", "pid": ...}`` once it is a member (so a
client knows which worker it reached, and that its subscription is live). A client
message ``{"publish": topic, "data": ...}`` publishes ``{"data": ...}`` to ``topic``
through the hub; ``{"crash": code}`` ends the worker at once (``os._exit``). A gap is told to
the members as ``{"type": "gap", "topic": ..., "pid": ...}``.

The hub is in-process, or Redis when ``GWS_TEST_REDIS`` is set (``GWS_TEST_MODE``:
pubsub or streams; ``GWS_TEST_MAX_LAG``; ``GWS_TEST_MAXLEN``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import trio_gws as gws
from trio_gws import Backoff


class Room(gws.EventHandler):
    def __init__(self, hub: gws.Hub) -> None:
        self.hub = hub

    async def on_open(self, conn: gws.Conn) -> None:
        topic = parse_qs(conn.request.query).get("topic", ["room"])[0]
        await self.hub.join(topic, conn)
        await conn.write_string(json.dumps({"type": "hello", "pid": os.getpid()}))

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        command = json.loads(message.text)
        if "crash" in command:
            os._exit(int(command["crash"]))
        await self.hub.publish(command["publish"], gws.Opcode.TEXT,
                               json.dumps({"data": command["data"]}))


async def on_gap(topic: str, members: frozenset[gws.Conn]) -> None:
    event = json.dumps({"type": "gap", "topic": topic, "pid": os.getpid()})
    gws.Broadcaster(gws.Opcode.TEXT, event).broadcast_all(members)


@contextlib.asynccontextmanager
async def app() -> AsyncIterator[Room]:
    url = os.environ.get("GWS_TEST_REDIS")
    if not url:
        async with gws.open_hub() as hub:
            yield Room(hub)
        return
    mode = os.environ.get("GWS_TEST_MODE", "pubsub")
    async with gws.open_hub(url, mode=mode, on_gap=on_gap,  # type: ignore[arg-type]
                            max_lag=float(os.environ.get("GWS_TEST_MAX_LAG", "5")),
                            maxlen=int(os.environ.get("GWS_TEST_MAXLEN", "10000")),
                            backoff=Backoff(initial=0.05, maximum=0.5)) as hub:
        yield Room(hub)


#: --config workers_app:config
config = gws.Config(close_timeout=3, write_queue_size=100_000,
                    write_buffer_limit=64 * 1024 * 1024)
