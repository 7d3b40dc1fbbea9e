"""Pull mode: a connection made without a handler keeps its messages for
``conn.receive()`` and ``async for message in conn``.

The ``Inbox`` is the handler of such a connection. Its ``on_message`` waits while
``RECEIVE_BUFFER`` messages are already waiting for the application, so a consumer
that does not keep up slows the peer down (the reader stops reading, TCP pushes
back), exactly as a slow handler does; nothing grows without bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._errors import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from ._handler import EventHandler
from ._types import CloseCode, Message

if TYPE_CHECKING:
    from ._conn import Conn

#: Messages that may wait for ``receive()`` before the reader waits too.
RECEIVE_BUFFER = 8

#: Close codes that end iteration quietly (a normal end).
_NORMAL = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS})


class Inbox(EventHandler):
    """The handler of a pull-mode connection (see the module)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Message](RECEIVE_BUFFER)
        self._ending: ConnectionClosed | None = None

    async def on_message(self, conn: Conn, message: Message) -> None:
        try:
            await self._send.send(message)
        except trio.BrokenResourceError:
            pass  # nobody will ever receive it: the application closed its side

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        kind = ConnectionClosedOK if code in _NORMAL and conn._lifecycle.clean \
            else ConnectionClosedError
        self._end(kind(f"the peer closed the connection with {code}", code, reason))

    async def on_error(self, conn: Conn, error: Exception) -> None:
        code = conn._lifecycle.sent_code
        ending = ConnectionClosedError(f"the connection failed: {error}",
                                       code if code is not None else CloseCode.ABNORMAL)
        ending.__cause__ = error
        self._end(ending)

    def _end(self, ending: ConnectionClosed) -> None:
        self._ending = ending
        self._send.close()  # receive() gets what is buffered, then the ending

    async def receive(self) -> Message:
        """The next message; ``ConnectionClosed`` (OK or Error) once they are over."""
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            assert self._ending is not None
            raise self._ending from self._ending.__cause__

    def close(self) -> None:
        """The application will not receive any more."""
        self._receive.close()

    @property
    def buffered(self) -> int:
        return self._receive.statistics().current_buffer_used

