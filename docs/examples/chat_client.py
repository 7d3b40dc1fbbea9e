"""A client for the chat example: joins the room, says a few lines, prints the room.

Start the chat (``python examples/chat/server.py``), open http://127.0.0.1:8000/ in a
browser, then run ``python docs/examples/chat_client.py alice "hello from Python"``:
the browser shows alice joining, her lines, and her leaving.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any
from urllib.parse import quote

import trio

import trio_gws as gws

Event = dict[str, Any]


class ChatClient(gws.EventHandler):
    """Turns the room's JSON messages into events on a channel."""

    def __init__(self) -> None:
        self._send, self.events = trio.open_memory_channel[Event](math.inf)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        self._send.send_nowait(json.loads(message.text))

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self._send.close()  # ends the `async for` over the events

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self._send.close()


def show(event: Event) -> str:
    if event["type"] == "welcome":
        return f"welcome {event['name']}; in the room: {', '.join(event['users'])}"
    if event["type"] == "message":
        return f"<{event['name']}> {event['text']}"
    return f"{event['name']} {event['type']}s ({event['count']} here)"


async def say(url: str, name: str, lines: list[str]) -> list[Event]:
    """Join as ``name``, say each line, and leave once the room has sent them all
    back; returns every event seen."""
    client = ChatClient()
    seen: list[Event] = []
    async with gws.open_conn(f"{url}?name={quote(name)}", client) as conn:
        for line in lines:
            await conn.write_string(line)
        waiting = list(lines)
        me = None
        with trio.fail_after(10):
            async for event in client.events:
                seen.append(event)
                print(show(event), flush=True)
                if event["type"] == "welcome":
                    me = event["name"]  # the name as the server cleaned it up
                elif (event["type"] == "message" and event["name"] == me
                      and event["text"] == waiting[0]):
                    del waiting[0]
                    if not waiting:
                        break
    return seen


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: chat_client.py NAME LINE... (the chat runs on 127.0.0.1:8000)")
    trio.run(say, "ws://127.0.0.1:8000/chat", sys.argv[1], sys.argv[2:])
