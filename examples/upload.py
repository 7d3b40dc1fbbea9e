"""Streamed uploads: a client sends a file of any size, the server writes it to disk as
it arrives and answers with its SHA-256. Neither side holds the file in memory.

    python examples/upload.py serve [--dir uploads] [--port 3001]
    python examples/upload.py send FILE [--url ws://127.0.0.1:3001/upload]

The client sends the file as one message in fragments (``conn.write_file``); the
server's ``on_stream`` reads it piece by piece, writing each piece to a temporary
file and hashing it, then renames the file and answers with a JSON object
``{"name": ..., "bytes": ..., "sha256": ...}``, which the client checks against its
own hash. ``max_content_length`` bounds an upload (1 GiB here); past it the
connection closes with 1009 before the rest is read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from functools import partial
from pathlib import Path

import trio

import trio_gws as gws

MAX_UPLOAD = 1 << 30
PIECE = 256 * 1024


class UploadHandler(gws.EventHandler):
    """Every binary message is a file: written to ``folder`` as it arrives."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def on_stream(self, conn: gws.Conn, stream: gws.MessageStream) -> None:
        if stream.opcode is not gws.Opcode.BINARY:
            await conn.write_close(1003, "send files as binary messages")
            return
        name = f"{uuid.uuid4().hex}.bin"
        partial_path = self.folder / f".{name}.part"
        digest = hashlib.sha256()
        size = 0
        async with await trio.open_file(partial_path, "wb") as file:
            try:
                async for piece in stream:
                    digest.update(piece)
                    size += len(piece)
                    await file.write(piece)
            except BaseException:
                partial_path.unlink(missing_ok=True)  # never keep half a file
                raise
        partial_path.rename(self.folder / name)
        await conn.write_message(gws.Opcode.TEXT, json.dumps(
            {"name": name, "bytes": size, "sha256": digest.hexdigest()}))


async def serve(folder: Path, host: str, port: int, *,
                task_status: trio.TaskStatus[gws.Server] = trio.TASK_STATUS_IGNORED) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = gws.Config(max_content_length=MAX_UPLOAD, compress_enabled=True)
    await gws.serve(UploadHandler(folder), port, host=host, config=config,
                    task_status=task_status)


async def send(path: Path, url: str) -> dict[str, object]:
    """Upload ``path``; the server's answer, after checking its hash against ours."""
    digest = hashlib.sha256()

    async def pieces() -> object:
        async with await trio.open_file(path, "rb") as file:
            while piece := await file.read(PIECE):
                digest.update(piece)
                yield piece

    config = gws.Config(compress_enabled=True)
    async with gws.open_conn(url, config=config) as conn:  # pull mode: no handler
        await conn.write_file(gws.Opcode.BINARY, pieces())
        answer = json.loads((await conn.receive()).text)
    if answer["sha256"] != digest.hexdigest():
        raise RuntimeError(f"the server stored something else: {answer}")
    return dict(answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="receive uploads")
    serving.add_argument("--dir", type=Path, default=Path("uploads"))
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=3001)
    sending = commands.add_parser("send", help="upload a file")
    sending.add_argument("file", type=Path)
    sending.add_argument("--url", default="ws://127.0.0.1:3001/upload")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            print(f"receiving uploads on ws://{args.host}:{args.port}/ into {args.dir}/",
                  flush=True)
            trio.run(partial(serve, args.dir, args.host, args.port))
        else:
            answer = trio.run(send, args.file, args.url)
            print(f"sent {answer['bytes']} bytes, stored as {answer['name']}, "
                  f"sha256 {answer['sha256']} (checked)")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
