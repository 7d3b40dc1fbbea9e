"""permessage-deflate: a server that offers it, a client that asks for it, and what
they agreed on. Run ``python docs/examples/deflate_echo.py``."""

from __future__ import annotations

import json
from functools import partial

import trio

import trio_gws as gws

# Both sides turn compression on with the same switch. The windows bound the memory
# each compressed connection keeps (12 bits: at most about 65 KiB per connection;
# see "Memory per connection" in docs/compression.md).
SERVER = gws.Config(compress_enabled=True, server_max_window_bits=12,
                    client_max_window_bits=12)
CLIENT = gws.Config(compress_enabled=True)


class Echo(gws.EventHandler):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)


class Reply(gws.EventHandler):
    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[gws.Message](1)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await self.send.send(message)


async def echo_once(url: str, config: gws.Config, payload: str) -> tuple[bool, str]:
    """Connect with ``config``, echo ``payload``; (was it compressed, the echo)."""
    reply = Reply()
    async with gws.open_conn(url, reply, config=config) as conn:
        print(f"compressed={conn.compressed} agreed={conn.deflate_params}", flush=True)
        await conn.write_string(payload)
        with trio.fail_after(5):
            echoed = (await reply.receive.receive()).text
        return conn.compressed, echoed


async def main() -> list[bool]:
    # JSON compresses well: this message is about 40 KiB before compression.
    payload = json.dumps([{"id": n, "status": "ok", "tags": ["a", "b"]} for n in range(800)])
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve, Echo(), 0, host="127.0.0.1",
                                             config=SERVER))
        url = f"ws://127.0.0.1:{server.port}/"
        compressed = []
        # A client that asks for compression gets it; one that does not (the default
        # Config) talks to the same server uncompressed.
        for config in (CLIENT, gws.Config()):
            used, echoed = await echo_once(url, config, payload)
            assert echoed == payload
            compressed.append(used)
        nursery.cancel_scope.cancel()
    return compressed


if __name__ == "__main__":
    trio.run(main)
