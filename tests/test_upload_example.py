"""examples/upload.py: a file streamed to the server, written to disk as it arrives,
answered with its SHA-256; the command line as a user runs it."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import realproc

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "upload.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("upload_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


upload = load()


async def test_a_file_is_stored_and_its_hash_checked(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20) + b"tail")  # 3 MiB, incompressible
    store = tmp_path / "store"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(upload.serve, store, "127.0.0.1", 0)
            answer = await upload.send(source, f"ws://127.0.0.1:{server.port}/upload")
            nursery.cancel_scope.cancel()
    stored = store / str(answer["name"])
    assert stored.read_bytes() == source.read_bytes()
    assert answer["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [p.name for p in store.iterdir()] == [stored.name]  # no partial file left


async def test_text_is_refused_and_an_interrupted_upload_leaves_nothing(
        tmp_path: Path) -> None:
    import trio_gws as gws

    store = tmp_path / "store"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(upload.serve, store, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{server.port}/upload"
            async with gws.open_conn(url) as conn:
                await conn.write_string("not a file")
                try:
                    await conn.receive()
                except gws.ConnectionClosedError as exc:
                    assert exc.code == 1003
            with pytest.raises(gws.ConnectionClosed):
                async with gws.open_conn(url) as conn:
                    async with conn.message_writer(gws.Opcode.BINARY) as writer:
                        await writer.write(b"half a file")
                        await trio.sleep(0.2)  # the server has started writing it
                        await conn._transport.stream.aclose()  # the client vanishes
            while list(store.iterdir()):  # the server notices, and removes the part
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


def test_the_command_line(tmp_path: Path) -> None:
    port = realproc.free_port()
    source = tmp_path / "f.txt"
    source.write_text("hello upload\n" * 10_000)
    env = {**os.environ, "PYTHONPATH": str(realproc.REPO)}
    with realproc.running([sys.executable, EXAMPLE, "serve", "--dir", tmp_path / "in",
                           "--port", str(port)], log=tmp_path / "server.log", port=port,
                          env=env):
        result = subprocess.run([sys.executable, str(EXAMPLE), "send", str(source),
                                 "--url", f"ws://127.0.0.1:{port}/upload"],
                                capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert f"sent {source.stat().st_size} bytes" in result.stdout and digest in result.stdout
