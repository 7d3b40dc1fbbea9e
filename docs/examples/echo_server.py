"""The tutorial's echo server: every message goes back to its sender.

Run it with ``python docs/examples/echo_server.py`` and connect to
ws://127.0.0.1:8765/ (``echo_client.py`` next to it does).
"""

from __future__ import annotations

from functools import partial

import trio

import trio_gws as gws


class Echo(gws.EventHandler):
    async def on_open(self, conn: gws.Conn) -> None:
        print("open  ", conn.remote_address, conn.request.target, flush=True)

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        # The same opcode (text or binary) and the same bytes, straight back.
        await conn.write_message(message.opcode, message.data)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        print("closed", conn.remote_address, code, reason, flush=True)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        print("failed", conn.remote_address, repr(error), flush=True)


async def main(
    port: int = 8765,
    *,
    task_status: trio.TaskStatus[gws.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = gws.Config(max_content_length=1024 * 1024)  # refuse messages over 1 MiB
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(gws.serve, Echo(), port, host="127.0.0.1", config=config))
        print(f"echo server on ws://127.0.0.1:{server.port}/", flush=True)
        task_status.started(server)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:  # Ctrl+C: every client got close 1001 already
        pass
