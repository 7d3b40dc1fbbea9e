"""Fail-fast incremental UTF-8 validation.

A text message may arrive in many fragments and each fragment in many reads. The
peer must be failed as soon as the bytes seen so far cannot be the prefix of valid
UTF-8 (Autobahn 6.4.*), not only when the message ends. CPython's incremental
decoder already rejects most impossible prefixes at once; the one prefix it keeps
buffering is a surrogate lead (ED A0..BF), which can never complete, so it is
checked by hand.
"""

from __future__ import annotations

import codecs

from ._errors import InvalidTextError

_Decoder = codecs.getincrementaldecoder("utf-8")


class Utf8Validator:
    """Validates a byte stream piece by piece; ``feed`` raises InvalidTextError."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _Decoder("strict")

    def feed(self, data: bytes | memoryview, final: bool = False) -> None:
        decoder = self._decoder
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InvalidTextError(f"invalid UTF-8 in text: {exc.reason}") from None
        if not final:
            pending = decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise InvalidTextError("invalid UTF-8 in text: surrogate code point")

    def reset(self) -> None:
        self._decoder.reset()


def decode_text(data: bytes) -> str:
    """Decode a complete text payload, mapping failure to InvalidTextError (1007)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTextError(f"invalid UTF-8 in text: {exc.reason}") from None
