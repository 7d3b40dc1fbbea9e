"""``Broadcaster``: one message, encoded once, queued to many connections.

A frame can be shared between connections only when it means the same thing to
every receiver. That holds for an uncompressed server frame, and for a frame encoded
by an extension whose ``broadcast_key()`` says so (see ``_extension``): for
permessage-deflate, a frame compressed *without history* sent to connections whose
server side has no context takeover (their peer resets its window after every
message anyway).

It does not hold for a connection with server context takeover: its peer appends
every compressed message to its window, and our compressor for that connection
must have seen the same bytes, or the next message it compresses refers to history
the peer does not have (the corruption gws users hit). Such connections get the
message through their own encoder, in order with their other writes, so the shared
encoding is used only where it is correct. Client connections mask every frame with
a fresh key, so they are encoded per connection too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ._conn import Conn
from ._errors import WebSocketError
from ._extension import PLAIN
from ._frames import encode_frame
from ._types import Opcode, Payload, as_bytes, data_opcode


class Broadcaster:
    """Queue one message to many connections without re-encoding it for each.

    Every ``broadcast`` goes through the connection's bounded ``write_nowait`` queue, so
    a slow or dead reader never holds up the others: it fills its own queue and is
    failed by the queue's policy (close 1008) while everyone else gets the message.
    """

    def __init__(self, opcode: Opcode | int, payload: Payload) -> None:
        self.opcode = data_opcode(opcode)
        self.payload = bytes(as_bytes(payload))
        self._frames: dict[Hashable, bytes] = {}

    def broadcast(self, conn: Conn) -> None:
        """Queue the message to ``conn``.

        Raises:
            WriteQueueFullError, ConnectionClosed: as ``conn.write_nowait``.
        """
        extension = conn.extension
        key: Hashable | None = PLAIN
        if not conn.is_server:
            key = None  # masked with a fresh key per frame
        elif extension is not None:
            key = extension.broadcast_key(conn.config, len(self.payload))
        if key is None:
            conn.write_nowait(self.opcode, self.payload)
            return
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = self._encode(conn, key)
        conn._write_nowait_frame(frame)

    def broadcast_all(self, conns: Iterable[Conn]) -> int:
        """Queue to every connection; return how many accepted it.

        A connection that cannot take it (closing, or its queue overflowed) is skipped;
        it learns why through its handler's ``on_error``, so the rest are not held up.
        """
        queued = 0
        for conn in conns:
            try:
                self.broadcast(conn)
            except WebSocketError:
                continue
            queued += 1
        return queued

    def _encode(self, conn: Conn, key: Hashable) -> bytes:
        """The frame shared by every connection with ``conn``'s broadcast key."""
        if key == PLAIN or conn.extension is None:
            return encode_frame(self.opcode, self.payload)
        body, rsv = conn.extension.shared_encoder(conn.config).encode(self.payload)
        return encode_frame(self.opcode, body, rsv=rsv)
