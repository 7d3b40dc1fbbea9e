"""A scriptable HTTP server for the client tests: redirects, 429/503, then real upgrades.

``Stub`` reads each request head itself (so tests see exactly what the client sent),
answers the paths in ``responses`` with the raw bytes given (and keeps the connection
open until the client closes it: the client must not wait for it), and hands every
other request, head replayed, to a real ``gws.Upgrader``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Union

import trio

import trio_gws as gws

from helpers import Recorder


class Replay(trio.abc.Stream):
    """``inner``, with ``data`` received first (the head the stub already read)."""

    def __init__(self, inner: trio.abc.Stream, data: bytes) -> None:
        self.inner = inner
        self.data = data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.data:
            size = len(self.data) if max_bytes is None else max_bytes
            chunk, self.data = self.data[:size], self.data[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Seen:
    path: str
    headers: list[tuple[str, str]]
    time: float  # trio.current_time() when the head had arrived

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


Script = Callable[[trio.abc.Stream], Awaitable[None]]
Answer = Union[bytes, Script]


@dataclass
class Stub:
    handler: gws.EventHandler = field(default_factory=lambda: Recorder(echo=True))
    config: gws.Config | None = None
    #: path -> the raw response to send, or a script to run on the stream; or a list of
    #: those, used one per request (then upgrades once it is empty)
    responses: dict[str, Answer | list[Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    accepted: int = 0

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def serve_one(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        buf = b""
        try:
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
        except trio.BrokenResourceError:
            return
        lines = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = [(k.strip(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
        self.seen.append(Seen(path, headers, trio.current_time()))
        answer = self.responses.get(path)
        if isinstance(answer, list):
            answer = answer.pop(0) if answer else None
        if answer is None:
            try:
                conn = await gws.Upgrader(self.handler, self.config).upgrade(
                    Replay(stream, buf))
            except gws.WebSocketError:
                return  # the client went away or got it wrong: the test will say
            await conn.listen()
        elif isinstance(answer, bytes):
            try:
                await stream.send_all(answer)
                while await stream.receive_some(4096):  # until the client hangs up
                    pass
            except trio.BrokenResourceError:
                pass
        else:
            await answer(stream)


def redirect(status: int, location: str | None) -> bytes:
    """A redirect response that keeps the connection open (no body, no close)."""
    where = f"Location: {location}\r\n" if location is not None else ""
    return f"HTTP/1.1 {status} Redirect\r\n{where}Content-Length: 0\r\n\r\n".encode()


@asynccontextmanager
async def running(stub: Stub, *, ssl_context: ssl.SSLContext | None = None,
                  ) -> AsyncIterator[int]:
    """Serve ``stub`` on 127.0.0.1 (TLS when ``ssl_context``); yield the port."""
    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            serve = partial(trio.serve_tcp, stub.serve_one, 0, host="127.0.0.1")
        else:
            serve = partial(trio.serve_ssl_over_tcp, stub.serve_one, 0, ssl_context,
                            host="127.0.0.1", https_compatible=False)
        listeners = await nursery.start(serve)
        listener = listeners[0]
        sock = getattr(listener, "socket", None) or listener.transport_listener.socket
        yield sock.getsockname()[1]
        nursery.cancel_scope.cancel()
