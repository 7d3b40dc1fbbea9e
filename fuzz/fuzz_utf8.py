"""Fuzz target: the fail-fast incremental UTF-8 validator.

Input: ``[split count] [split sizes...] [text bytes...]``; the sizes cut the text into
the pieces fed to ``Utf8Validator.feed`` (0: an empty piece).

Invariants: the validator agrees with ``bytes.decode`` on the whole; it raises
``InvalidTextError`` on exactly the first piece after which the bytes seen can no
longer be the start of valid UTF-8 (never later, never earlier: checked by the
independent ``utf8_prefix_ok``), or at the final call when the text only ends
early; ``decode_text`` agrees with ``bytes.decode``.
"""

from __future__ import annotations

from _harness import Input, split
from _oracle import utf8_prefix_ok

from trio_gws._errors import InvalidTextError
from trio_gws._utf8 import Utf8Validator, decode_text


def check(data: bytes) -> None:
    source = Input(data)
    sizes = source.sizes()
    text = source.rest()
    try:
        decoded: str | None = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    try:
        assert decode_text(text) == decoded
    except InvalidTextError:
        assert decoded is None

    validator = Utf8Validator()
    seen = 0
    failed_at = None  # index of the piece that raised; len(pieces) for the final call
    pieces = split(text, sizes)
    for i, piece in enumerate(pieces):
        seen += len(piece)
        try:
            validator.feed(piece)
        except InvalidTextError:
            failed_at = i
            break
        assert utf8_prefix_ok(text[:seen]), f"missed an invalid prefix at piece {i}"
    if failed_at is None:
        try:
            validator.feed(b"", final=True)
        except InvalidTextError:
            failed_at = len(pieces)
    else:
        assert not utf8_prefix_ok(text[:seen]), f"piece {failed_at} failed a valid prefix"
    assert (failed_at is None) == (decoded is not None), (failed_at, decoded)
