"""permessage-deflate (RFC 7692 section 7.2): per-message compression and inflation.

Pure protocol core: bytes in, bytes out, only ``zlib``. A :class:`Compressor` and a
:class:`Decompressor` each serve one side of one connection for its lifetime; they
are made by the negotiated :class:`~trio_gws._deflate.DeflateParams`
(``encoder()`` / ``decoder()``), which is where the agreement on windows and context
takeover lives (``_deflate``).

Two zlib facts shape this module:

* zlib cannot *compress* raw deflate with an 8-bit (256-byte) window: 1.2.9+ refuses
  it, older releases quietly used 9 bits. When our side must stay within 256 bytes we
  compress with ``Z_RLE``, whose matches all have distance 1 by zlib's documented
  contract, so the output is valid for any window. It compresses less, which only
  test suites (the only peers known to ask for 8) will notice.
* zlib *inflates* with any window from 8 to 15 bits. We inflate with at least 9 bits:
  a larger window than the peer's is always safe, and it tolerates peers that agreed
  to 8 but compress with old zlib's 9.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._errors import MessageTooLargeError, ProtocolError
from ._frames import RSV1
from ._mask import Buffer

if TYPE_CHECKING:
    from ._deflate import DeflateParams

__all__ = ["INVALID_DATA_CLOSE_CODE", "Compressor", "Decompressor", "memory_level"]

#: Close code for a compressed payload that does not inflate. RFC 7692 only says "fail
#: the connection"; 1007 ("invalid frame payload data") fits a well-framed message
#: whose payload is not what its RSV1 bit declares, and matches what ws (Node) sends.
INVALID_DATA_CLOSE_CODE = 1007

# Every sync (or full) flush ends with this empty stored block; RFC 7692 7.2.1 has the
# sender strip it and the receiver put it back.
_TAIL = b"\x00\x00\xff\xff"

# An empty message compresses to the header byte of an empty stored block (7.2.3.6).
_EMPTY_MESSAGE = b"\x00"

_MAX_LENGTH = sys.maxsize  # zlib's max_length is a Py_ssize_t


def memory_level(window_bits: int) -> int:
    """zlib memLevel for a compression window: scaled down with small windows.

    Deflate state is about ``2**(wbits+2) + 2**(memLevel+9)`` bytes; the default
    memLevel 8 alone is 128 KiB, which would dwarf a 1 KiB window. Measured on JSON
    traffic, memLevel below ``wbits - 6`` costs ratio while more gains nothing.
    """
    return max(4, min(8, window_bits - 6))


def _new_deflater(window_bits: int, level: int) -> zlib._Compress:
    if window_bits <= 8:
        # Distance-1 matches only: valid whatever window the peer inflates with.
        return zlib.compressobj(level, zlib.DEFLATED, -9, memory_level(9), zlib.Z_RLE)
    return zlib.compressobj(level, zlib.DEFLATED, -window_bits, memory_level(window_bits))


class Compressor:
    """Compresses whole messages for one side of a connection.

    ``is_server`` picks the side: a server compresses under the ``server_*`` params.
    Without context takeover a *full* flush ends each message: it empties the history
    exactly as a fresh compressor would, without reallocating one per message.
    """

    __slots__ = ("window_bits", "no_context_takeover", "threshold", "_deflater",
                 "_flush_mode", "_level")

    def __init__(self, params: DeflateParams, *, is_server: bool, level: int,
                 threshold: int = 0) -> None:
        if is_server:
            bits, no_takeover = params.server_max_window_bits, params.server_no_context_takeover
        else:
            bits, no_takeover = params.client_max_window_bits, params.client_no_context_takeover
        self.window_bits = bits
        self.no_context_takeover = no_takeover
        self.threshold = threshold  # smaller messages are sent as they are
        self._level = level
        self._deflater = _new_deflater(bits, level)
        self._flush_mode = zlib.Z_FULL_FLUSH if no_takeover else zlib.Z_SYNC_FLUSH

    def encode(self, data: Buffer) -> tuple[Buffer, int]:
        """The ``MessageEncoder`` side: compressed with RSV1 from ``threshold`` on."""
        if len(data) < self.threshold:
            return data, 0
        return self.compress(data), RSV1

    def encode_fragment(self, data: Buffer, *, first: bool, last: bool
                        ) -> tuple[Buffer, int]:
        """A fragment of a streamed message, always compressed (its size is unknown
        when its first frame goes). Every fragment but the last ends with a sync
        flush, whose empty stored block stays in place, so the peer can inflate each
        fragment as it arrives; the last ends the message as ``compress`` does
        (RFC 7692 7.2.1: the message's data is the fragments' payloads joined)."""
        rsv = RSV1 if first else 0
        if first and last:
            return self.compress(data), rsv
        deflater = self._deflater
        out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        if not last:
            return out, rsv
        if self.no_context_takeover:
            # A flush with no new input may do nothing at all, reset included: start
            # the next message from a new compressor instead.
            self._deflater = _new_deflater(self.window_bits, self._level)
        # No new input since the last fragment's flush: zlib emits nothing, and the
        # last fragment is empty (that flush's empty block already ends the data).
        return (out[:-4] if out[-4:] == _TAIL else out), rsv

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """One whole message -> the payload to send with RSV1 (flush tail stripped)."""
        if not data:
            # zlib would emit nothing for a flush with no new input; 7.2.3.6 says 0x00.
            return _EMPTY_MESSAGE
        head = self._deflater.compress(data)
        tail = self._deflater.flush(self._flush_mode)
        if tail[-4:] != _TAIL:  # pragma: no cover - zlib guarantees it after new input
            raise RuntimeError("zlib flush did not end with an empty stored block")
        if not head:
            return tail[:-4]
        return b"".join((head, memoryview(tail)[:-4]))


class Decompressor:
    """Inflates the messages of one side of a connection, each capped at ``max_size``.

    Feed every frame payload of a compressed message, then call :meth:`finish`. After
    an exception the connection is to be failed and this object dropped.
    """

    __slots__ = (
        "window_bits",
        "no_context_takeover",
        "max_size",
        "_wbits",
        "_inflater",
        "_size",
        "_ended",
        "_after_end",
    )

    def __init__(self, params: DeflateParams, *, is_server: bool, max_size: int) -> None:
        if is_server:
            bits, no_takeover = params.client_max_window_bits, params.client_no_context_takeover
        else:
            bits, no_takeover = params.server_max_window_bits, params.server_no_context_takeover
        self.window_bits = bits
        self.no_context_takeover = no_takeover
        self.max_size = max_size
        self._wbits = -max(bits, 9)
        self._inflater = zlib.decompressobj(self._wbits)
        self._size = 0  # bytes inflated so far for the current message
        self._ended = False  # the deflate stream ended (BFINAL) inside this message
        self._after_end = 0  # bytes seen after that end

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Inflate more of the current message; raises before exceeding ``max_size``.

        zlib is asked for at most one byte past the budget, so a tiny frame that would
        inflate to gigabytes never gets the chance to allocate them.
        """
        if self._ended:
            self._check_after_end(data)
            return b""
        inflater = self._inflater
        try:
            out = inflater.decompress(data, min(self.max_size - self._size + 1, _MAX_LENGTH))
        except zlib.error as exc:
            raise ProtocolError(
                f"invalid compressed data: {exc}", INVALID_DATA_CLOSE_CODE
            ) from None
        self._size += len(out)
        if self._size > self.max_size:
            raise MessageTooLargeError(
                f"decompressed message exceeds the limit of {self.max_size} bytes"
            )
        if inflater.eof:
            self._ended = True
            self._check_after_end(inflater.unused_data)
        return out

    def finish(self) -> bytes:
        """End of message: flush it out and get ready for the next one."""
        out = b"" if self._ended else self.feed(_TAIL)
        self._next_message()
        return out

    def _next_message(self) -> None:
        if self._ended or self.no_context_takeover:
            # A peer that ended its deflate stream restarts with an empty window, as a
            # zlib sender using Z_FINISH must; and without takeover history is dropped.
            self._inflater = zlib.decompressobj(self._wbits)
            self._ended = False
            self._after_end = 0
        self._size = 0

    def feed_pieces(self, data: bytes | bytearray | memoryview, limit: int
                    ) -> Iterator[bytes]:
        """``feed``, in pieces of at most ``limit`` bytes (streaming): memory stays
        bounded however far the input inflates."""
        if self._ended:
            self._check_after_end(data)
            return
        inflater = self._inflater
        while True:
            try:
                out = inflater.decompress(data, min(limit, self.max_size - self._size + 1))
            except zlib.error as exc:
                raise ProtocolError(
                    f"invalid compressed data: {exc}", INVALID_DATA_CLOSE_CODE
                ) from None
            self._size += len(out)
            if self._size > self.max_size:
                raise MessageTooLargeError(
                    f"decompressed message exceeds the limit of {self.max_size} bytes"
                )
            if out:
                yield out
            if inflater.eof:
                self._ended = True
                self._check_after_end(inflater.unused_data)
                return
            data = inflater.unconsumed_tail
            # A full piece may leave output inside zlib even with no input left.
            if not data and len(out) < limit:
                return

    def finish_pieces(self, limit: int) -> Iterator[bytes]:
        """``finish``, in pieces of at most ``limit`` bytes (streaming)."""
        if not self._ended:
            yield from self.feed_pieces(_TAIL, limit)
        self._next_message()

    def _check_after_end(self, data: bytes | bytearray | memoryview) -> None:
        # RFC 7692 7.2.3.3: after a BFINAL block the sender may add one 0x00 octet so
        # that, with the 00 00 ff ff the receiver appends, an empty stored block follows.
        # Anything else after the end of the stream is not part of any valid message.
        if not data:
            return
        self._after_end += len(data)
        if self._after_end > 1 or bytes(data) != b"\x00":
            raise ProtocolError(
                "data after the end of the deflate stream", INVALID_DATA_CLOSE_CODE
            )
