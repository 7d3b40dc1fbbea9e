"""The compiled short path of the frame reader (``_speedups.scan_frames``): the same
messages and the same errors as the pure-Python reader, byte for byte."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_gws._reader as reader_module
from trio_gws import InvalidTextError, Message, Opcode, ProtocolError
from trio_gws import _mask
from trio_gws._reader import FrameReader

from helpers import BINARY, CLOSE, CONT, PING, TEXT, build_frame, close_payload

try:
    from trio_gws._speedups import scan_frames as scan_c
except ImportError:
    scan_c = None

REQUIRE_SPEEDUPS = os.environ.get("TRIO_GWS_REQUIRE_SPEEDUPS", "") not in ("", "0")
FORCED_OFF = os.environ.get("TRIO_GWS_NO_SPEEDUPS", "") not in ("", "0")
NOT_BUILT = "trio_gws._speedups is not built (no C compiler at install time?)"


def require_c() -> Any:
    if scan_c is None:
        if REQUIRE_SPEEDUPS:
            pytest.fail(f"TRIO_GWS_REQUIRE_SPEEDUPS is set but {NOT_BUILT}")
        pytest.skip(NOT_BUILT)
    return scan_c


def test_the_reader_uses_it_exactly_when_the_masking_is_compiled() -> None:
    assert (_mask.scan_frames is not None) == (_mask.SPEEDUPS and scan_c is not None)
    if FORCED_OFF:
        assert _mask.scan_frames is None  # TRIO_GWS_NO_SPEEDUPS turns both off


def scan(buf: bytes, masked: bool = True, limit: int = 1 << 20,
         check: bool = True) -> tuple[list[Message], int]:
    result: tuple[list[Message], int] = require_c()(
        buf, 0, masked, limit, check, Message, Opcode.TEXT, Opcode.BINARY)
    return result


def test_whole_frames_become_messages_and_it_stops_at_anything_else() -> None:
    stream = (build_frame(TEXT, b"hello") + build_frame(BINARY, b"\x00\xff" * 200)
              + build_frame(PING, b"p") + build_frame(TEXT, b"after"))
    messages, pos = scan(stream)
    assert messages == [Message(Opcode.TEXT, b"hello"),
                        Message(Opcode.BINARY, b"\x00\xff" * 200)]
    assert stream[pos:].startswith(build_frame(PING, b"p")[:2])
    assert all(type(m.data) is bytes for m in messages)


@pytest.mark.parametrize("frame", [
    build_frame(TEXT, b"x", fin=False),                 # a fragment
    build_frame(CONT, b"x"),                            # a continuation
    build_frame(TEXT, b"x", rsv=4),                     # a reserved bit
    build_frame(TEXT, b"x", mask=False),                # unmasked from a client
    build_frame(TEXT, b"x" * 300)[:100],                # incomplete
    build_frame(BINARY, b"x" * 2000),                   # over the limit below
    build_frame(TEXT, b"\xed\xa0\x80"),                 # a surrogate
    build_frame(CLOSE, close_payload(1000)),
])
def test_what_it_leaves_to_the_python_reader(frame: bytes) -> None:
    assert scan(frame, limit=1000) == ([], 0)


def test_unmasked_frames_on_the_client_side_and_text_unchecked() -> None:
    frame = build_frame(TEXT, b"\xff\xfe", mask=False)
    assert scan(frame, masked=False) == ([], 0)  # invalid text: left alone
    messages, pos = scan(frame, masked=False, check=False)
    assert messages == [Message(Opcode.TEXT, b"\xff\xfe")] and pos == len(frame)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=40).map(lambda t: t.encode("utf-8")))
def test_utf8_check_agrees_with_python(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    messages, _ = scan(build_frame(TEXT, payload))
    assert (messages == [Message(Opcode.TEXT, payload)]) is valid


def events(data: list[bytes], compiled_path: bool) -> list[object]:
    saved = reader_module.scan_frames
    reader_module.scan_frames = require_c() if compiled_path else None
    try:
        reader = FrameReader(expect_masked=True, max_content_length=5000)
        out: list[object] = []
        try:
            for piece in data:
                out.extend((type(e).__name__, getattr(e, "opcode", None),
                            getattr(e, "data", None), getattr(e, "payload", None),
                            getattr(e, "code", None)) for e in reader.receive(piece))
        except ProtocolError as exc:
            out.append((type(exc), exc.close_code))
        return out
    finally:
        reader_module.scan_frames = saved


frames = st.one_of(
    st.tuples(st.sampled_from([TEXT, BINARY]), st.binary(max_size=300), st.booleans()),
    st.tuples(st.just(TEXT), st.text(max_size=100).map(str.encode), st.just(True)),
    st.tuples(st.just(PING), st.binary(max_size=20), st.just(True)),
    st.tuples(st.just(BINARY), st.binary(min_size=5001, max_size=5001), st.just(True)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=8), st.lists(st.integers(1, 400), max_size=6))
def test_same_events_as_the_pure_python_reader(spec: list[tuple[int, bytes, bool]],
                                               cuts: list[int]) -> None:
    # Fragmented messages too: a frame with fin=False is continued by the next data
    # frame, as the spec's order says (the reader must refuse what is out of order).
    wire = b"".join(build_frame(op, payload, fin=fin) for op, payload, fin in spec)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(wire[at:at + cut])
        at += cut
    pieces.append(wire[at:])
    assert events(pieces, True) == events(pieces, False)


# -- large messages filled in place (new_payload / unmask_into) ------------------------


def large_events(pieces: list[bytes], compiled_path: bool, expect_masked: bool = True
                 ) -> list[object]:
    names = ("new_payload", "unmask_into", "scan_frames")
    saved = {n: getattr(reader_module, n) for n in names}
    if compiled_path:
        from trio_gws import _speedups  # the compiled path, whatever the environment
        require_c()
        for n in names:
            setattr(reader_module, n, getattr(_speedups, n))
    else:
        for n in names:
            setattr(reader_module, n, None)
    try:
        reader = FrameReader(expect_masked=expect_masked, max_content_length=1 << 20)
        out: list[object] = []
        try:
            for piece in pieces:
                out.extend((type(e).__name__, getattr(e, "opcode", None),
                            getattr(e, "data", None)) for e in reader.receive(piece))
        except ProtocolError as exc:
            out.append((type(exc), exc.close_code))
        return out
    finally:
        for n, f in saved.items():
            setattr(reader_module, n, f)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([BINARY, TEXT]), st.integers(64 * 1024, 300 * 1024),
       st.lists(st.integers(1, 90 * 1024), min_size=1, max_size=8), st.booleans(),
       st.integers(-1, 2))
def test_large_messages_filled_in_place_match_the_python_reader(
        opcode: int, size: int, cuts: list[int], masked: bool, bad_at: int) -> None:
    payload = bytearray(b"0123456789abcdef" * (size // 16 + 1))[:size]
    if bad_at >= 0:  # invalid UTF-8 somewhere (a text message must fail at that piece)
        payload[size * bad_at // 3] = 0xFF
    wire = (build_frame(opcode, bytes(payload), mask=masked)
            + build_frame(BINARY, b"after", mask=masked))
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(wire[at:at + cut])
        at += cut
    pieces.append(wire[at:])
    compiled_events = large_events(pieces, True, masked)
    assert compiled_events == large_events(pieces, False, masked)
    if opcode == BINARY or bad_at < 0:
        assert compiled_events[0] == ("Message", Opcode(opcode), bytes(payload))


@pytest.mark.parametrize("compiled_path", [True, False])
def test_invalid_text_in_a_large_message_fails_at_its_piece(compiled_path: bool) -> None:
    payload = b"a" * 100_000 + b"\xff" + b"b" * 100_000
    wire = build_frame(TEXT, payload)
    # the piece with the bad byte fails the message; the rest never came
    assert large_events([wire[:50_000], wire[50_000:110_000]], compiled_path) == [
        (InvalidTextError, 1007)]


def test_a_large_message_is_filled_in_place() -> None:
    from trio_gws import _speedups
    require_c()
    saved = (reader_module.new_payload, reader_module.unmask_into)
    reader_module.new_payload, reader_module.unmask_into = (_speedups.new_payload,
                                                           _speedups.unmask_into)
    try:
        wire = build_frame(BINARY, b"z" * 100_000)
        reader = FrameReader(expect_masked=True, max_content_length=1 << 20)
        assert list(reader.receive(wire[:30_000])) == []
        direct = reader._direct
        assert direct is not None and len(direct) == 100_000
        [message] = list(reader.receive(wire[30_000:]))
        assert message.data is direct and message.data == b"z" * 100_000
        assert reader._direct is None
    finally:
        reader_module.new_payload, reader_module.unmask_into = saved
