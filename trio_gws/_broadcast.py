"""``Broadcaster``: one message, encoded once, queued to many connections.

A frame can be shared between connections only when it means the same thing to
every receiver. That holds for an uncompressed server frame, and for a frame
compressed *without history* sent to a connection whose server side has no context
takeover (its peer resets its window after every message anyway).

It does not hold for a connection with server context takeover: its peer appends
every compressed message to its window, and our compressor for that connection
must have seen the same bytes, or the next message it compresses refers to history
the peer does not have (the corruption gws users hit). Such connections get the
message through their own compressor, in order with their other writes, so the
shared encoding is used only where it is correct. Client connections mask every
frame with a fresh key, so they are encoded per connection too.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._conn import Conn
from ._deflate import Compressor, DeflateParams
from ._errors import WebSocketError
from ._frames import encode_frame
from ._types import Opcode, Payload, as_bytes, data_opcode


class Broadcaster:
    """Queue one message to many connections without re-encoding it for each.

    Every ``broadcast`` goes through the connection's bounded ``write_async`` queue, so
    a slow or dead reader never holds up the others: it fills its own queue and is
    failed by the queue's policy (close 1008) while everyone else gets the message.
    """

    def __init__(self, opcode: Opcode | int, payload: Payload) -> None:
        self.opcode = data_opcode(opcode)
        self.payload = bytes(as_bytes(payload))
        self._plain: bytes | None = None
        self._compressed: dict[tuple[int, int], bytes] = {}

    def broadcast(self, conn: Conn) -> None:
        """Queue the message to ``conn``; raises what ``conn.write_async`` raises."""
        params = conn.deflate_params
        if not conn.is_server or (
            params is not None
            and not params.server_no_context_takeover
            and len(self.payload) >= conn.config.compress_threshold
        ):
            conn.write_async(self.opcode, self.payload)
        elif params is not None and len(self.payload) >= conn.config.compress_threshold:
            conn._write_async_frame(self._compressed_frame(params, conn.config.compress_level))
        else:
            conn._write_async_frame(self._plain_frame())

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

    def _plain_frame(self) -> bytes:
        if self._plain is None:
            self._plain = encode_frame(self.opcode, self.payload)
        return self._plain

    def _compressed_frame(self, params: DeflateParams, level: int) -> bytes:
        key = (params.server_max_window_bits, level)
        frame = self._compressed.get(key)
        if frame is None:
            fresh = DeflateParams(server_no_context_takeover=True,
                                  server_max_window_bits=params.server_max_window_bits)
            body = Compressor(fresh, is_server=True, level=level).compress(self.payload)
            frame = self._compressed[key] = encode_frame(self.opcode, body, rsv1=True)
        return frame
