"""Node's ws as a test peer: tests/node/peer.js, driven over JSON lines.

``node_peer("client", url)`` connects ws to our server, ``node_peer("server", port)``
runs a ws server on 127.0.0.1 for our client. The test sends commands (``send``,
``ping``, ``close``...) and reads ws's own account of the connection as events
(``open``, ``message``, ``ping``, ``pong``, ``close``...). The process runs in its own
process group and is stopped by its PID when the block ends, whatever happened.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio

import realproc

NODE_DIR = realproc.REPO / "tests" / "node"
PEER_JS = NODE_DIR / "peer.js"
EVENT_TIMEOUT = 20.0  # generous: two shared cores


def pattern(size: int) -> bytes:
    """The bytes peer.js sends for ``{"size": n}``: i % 251."""
    return bytes(i % 251 for i in range(size))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class NodePeer:
    """Commands to peer.js and the events it reports, in order."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.seen: list[dict[str, Any]] = []
        self._buffer = bytearray()
        self._scanned = 0

    async def command(self, cmd: str, **fields: Any) -> None:
        """Send one command (see peer.js): ``send`` (text= / b64= / size=, binary=,
        fin=), ``ping`` / ``pong`` (b64=), ``close`` (code=, reason=)."""
        assert self.process.stdin is not None
        line = json.dumps({"cmd": cmd, **fields}) + "\n"
        await self.process.stdin.send_all(line.encode())

    async def event(self) -> dict[str, Any]:
        """The next event; fails with ws's log when none comes in time."""
        assert self.process.stdout is not None
        with trio.move_on_after(EVENT_TIMEOUT):
            while (end := self._buffer.find(b"\n", self._scanned)) < 0:
                self._scanned = len(self._buffer)
                chunk = await self.process.stdout.receive_some(1 << 20)
                if not chunk:
                    self._fail(f"peer.js exited ({self.process.poll()}) without a next event")
                self._buffer += chunk
            event: dict[str, Any] = json.loads(self._buffer[:end])
            del self._buffer[:end + 1]
            self._scanned = 0
            self.seen.append(event)
            return event
        self._fail(f"no event from peer.js within {EVENT_TIMEOUT} s")

    async def expect(self, name: str) -> dict[str, Any]:
        """The next event, which must be ``name``."""
        event = await self.event()
        if event["ev"] != name:
            self._fail(f"expected {name!r}, got {self._short(event)}")
        return event

    def _short(self, event: dict[str, Any]) -> str:
        text = json.dumps(event)
        return text if len(text) < 300 else text[:300] + "..."

    def _fail(self, why: str) -> NoReturn:
        history = "\n".join(self._short(e) for e in self.seen[-10:])
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        pytest.fail(f"{why}\n--- last events ---\n{history}\n--- {self.log.name} ---\n{log}",
                    pytrace=False)


async def _stop(process: trio.Process, timeout: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it when still running after ``timeout``."""
    with trio.CancelScope(shield=True):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            with trio.move_on_after(timeout):
                await process.wait()
        await process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                await pipe.aclose()


@asynccontextmanager
async def node_peer(role: str, target: str | int, *, log: Path, deflate: bool,
                    echo: bool = False) -> AsyncIterator[NodePeer]:
    """Run peer.js as ``role`` ("client": ``target`` is a ws:// URL; "server": the
    port to listen on at 127.0.0.1, ``echo`` answering every message); permessage-
    deflate offered/accepted when ``deflate``. ws's stderr goes to ``log``."""
    node = realproc.require("node")
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        pytest.fail("Node's ws is not installed in tests/node/node_modules: run "
                    "`make components` (scripts/components/node.sh); a missing component "
                    "fails, never skips", pytrace=False)
    argv = [node, str(PEER_JS), role, str(target), "deflate" if deflate else "plain"]
    if echo:
        argv.append("echo")
    with open(log, "wb") as err:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            cwd=NODE_DIR, start_new_session=True)
    try:
        yield NodePeer(process, log)
    finally:
        await _stop(process)
