"""``EventHandler``: the one interface an application implements (gws's Event)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._types import Message

if TYPE_CHECKING:
    from ._conn import Conn
    from ._streams import MessageStream


class EventHandler:
    """Receives a connection's events in wire order; override what you need.

    Each callback is awaited before the next frame is read (unless
    ``Config.parallel_enabled``), so a handler that does slow work applies back-pressure
    to its peer. ``on_open`` comes first; every connection then ends with exactly one
    of ``on_close`` (a close handshake happened) or ``on_error`` (anything else). An
    exception raised by a callback is logged, reported to ``on_error`` and closes the
    connection with 1011; it never reaches the server.
    """

    async def on_open(self, conn: Conn) -> None:
        """The handshake is done; the connection is ready to write."""

    async def on_message(self, conn: Conn, message: Message) -> None:
        """A complete (reassembled, decompressed, validated) data message arrived."""

    async def on_stream(self, conn: Conn, stream: MessageStream) -> None:
        """A data message begins; read it as it arrives (``async for chunk in stream``).

        Override it to receive large messages without holding them whole: a handler
        that overrides it gets every data message here, and ``on_message`` is not
        called. It runs in a task of its own while the reader hands it the message's
        pieces (a message that arrived whole, one frame in one read, comes finished
        and runs where ``on_message`` would); the next message is read once it
        returns (with parallel handling, once the limit allows). Returning early
        drops the rest of the message.
        """
        await self.on_message(conn, Message(stream.opcode, await stream.read_all()))

    async def on_ping(self, conn: Conn, payload: bytes) -> None:
        """A ping arrived; the default answers with a pong echoing its payload."""
        if not conn.closing:
            await conn.write_pong(payload)

    async def on_pong(self, conn: Conn, payload: bytes) -> None:
        """A pong arrived (an answer to our ping, or an unsolicited heartbeat)."""

    async def on_close(self, conn: Conn, code: int, reason: bytes) -> None:
        """The close handshake finished; ``code``/``reason`` are the peer's close frame."""

    async def on_error(self, conn: Conn, error: Exception) -> None:
        """The connection ended without a close handshake; ``error`` says why."""
