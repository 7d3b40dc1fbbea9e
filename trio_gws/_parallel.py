"""Parallel handling: ``on_message`` in up to ``parallel_limit`` tasks per connection.

Made only for connections with ``Config.parallel_enabled`` (most have none, and pay
nothing for it). Messages start in wire order; the reader waits while the limit is
reached, which keeps back-pressure. Tasks run in the connection's helper nursery, so
none outlives it; a handler that raises fails the connection (1011).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._errors import ConnectionClosed, HandlerError, WebSocketError
from ._types import Message

if TYPE_CHECKING:
    from ._streams import MessageStream


class ParallelHandlers:
    """The in-flight ``on_message`` tasks of one connection."""

    __slots__ = ("_limiter", "_in_flight", "_idle", "_run", "_fail")

    def __init__(self, limit: int, run: Callable[[Any], Awaitable[None]],
                 fail: Callable[[WebSocketError], None]) -> None:
        self._limiter = trio.CapacityLimiter(limit)
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._run = run  # awaits on_message the way the connection calls handlers
        self._fail = fail  # fails the connection

    async def start(self, message: Message | MessageStream, nursery: trio.Nursery) -> None:
        """Run ``on_message`` (``on_stream`` for a stream) in its own task once the
        limiter has room."""
        token = object()
        await self._limiter.acquire_on_behalf_of(token)
        if not self._in_flight:
            self._idle = trio.Event()
        self._in_flight += 1
        nursery.start_soon(self._task, message, token)

    async def _task(self, message: Message | MessageStream, token: object) -> None:
        try:
            await self._run(message)
        except HandlerError as exc:
            self._fail(exc)
        except ConnectionClosed:
            pass  # the connection is ending; listen() reports why
        finally:
            self._limiter.release_on_behalf_of(token)
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def finish(self, timeout: float) -> None:
        """Give the handlers of messages that arrived before the close (or before the
        peer's error) ``timeout`` to answer before our close frame; whatever is still
        running after it is cancelled with the connection's nursery."""
        if self._in_flight:
            with trio.move_on_after(timeout):
                await self._idle.wait()
