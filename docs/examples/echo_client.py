"""The tutorial's client: sends two messages to the echo server, prints the echoes.

Start ``echo_server.py`` first, then run ``python docs/examples/echo_client.py``.
"""

from __future__ import annotations

import sys

import trio

import trio_gws as gws


class Replies(gws.EventHandler):
    """Collects what the server sends until ``expected`` messages have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.messages: list[gws.Message] = []
        self.all_arrived = trio.Event()

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        self.messages.append(message)
        if len(self.messages) == self.expected:
            self.all_arrived.set()

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        print("closed with", code, flush=True)


URL = "ws://127.0.0.1:8765/"


async def main(url: str = URL) -> list[gws.Message]:
    replies = Replies(expected=2)
    async with gws.open_conn(url, replies) as conn:
        await conn.write_string("hello, trio-gws")
        await conn.write_message(gws.Opcode.BINARY, bytes(range(8)))
        with trio.fail_after(5):  # never wait for ever on the network
            await replies.all_arrived.wait()
    # Leaving the block closed the connection with 1000 and waited for the answer.
    for message in replies.messages:
        print("echo:", message.text if message.is_text else message.data, flush=True)
    return replies.messages


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else URL)
