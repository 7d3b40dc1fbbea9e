"""Fuzz target: the frame reader (``FrameReader``), both sides, with and without deflate.

Input: ``[flags] [windows] [split count] [split sizes...] [stream...]``

* flags: bit 0 server side (frames must be masked), bit 1 check_text, bit 2
  permessage-deflate, bits 3/4 server/client_no_context_takeover, bits 5-7 pick
  max_content_length from ``MAX_SIZES``;
* windows: bits 0-2 server_max_window_bits - 8, bits 3-5 client_max_window_bits - 8;
* the split sizes cut the stream into the pieces fed to ``receive`` (0: an empty one;
  every other piece is a bytearray, as the connection may pass).

Invariants: only ``ProtocolError`` (or a subclass) escapes, with the close code it is
documented to carry; the events, the error and the reader's leftover state do not
depend on the chunking (whole, split, and byte by byte for short streams); no message
exceeds max_content_length; payloads are immutable bytes; after an error or a close
frame the reader ignores input; the reader agrees with the reference model of
``_oracle.py`` (same events, an error exactly where the model finds one, except
that the reader may fail earlier inside an incomplete frame); and its streaming mode
(``on_stream``) gives the same messages, joined from its pieces (never empty) or
whole, the same control events and the same error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from _harness import Input, bytewise, split
from _oracle import Outcome, reference

from trio_gws._deflate import DeflateParams
from trio_gws._deflate_codec import Decompressor
from trio_gws._errors import InvalidTextError, MessageTooLargeError, ProtocolError
from trio_gws._frames import (
    CloseReceived,
    Ping,
    Pong,
    StreamData,
    StreamEnd,
    StreamStart,
    StreamWhole,
)
from trio_gws._reader import FrameReader
from trio_gws._types import Message

MAX_SIZES = (1, 16, 125, 126, 1000, 4096, 65536, 16 * 1024 * 1024)
#: Close codes each error class may carry (ProtocolError itself: 1002, or 1007 for
#: compressed data that does not inflate).
_CODES: dict[type, frozenset[int]] = {
    ProtocolError: frozenset({1002, 1007}),
    MessageTooLargeError: frozenset({1009}),
    InvalidTextError: frozenset({1007}),
}
_BYTEWISE_LIMIT = 256  # byte-by-byte feeding of longer streams costs too many executions


@dataclass(frozen=True)
class Options:
    server: bool
    check_text: bool
    max_size: int
    deflate: DeflateParams | None


def new_reader(options: Options, streaming: bool = False) -> FrameReader:
    """The one place the targets build a FrameReader (and its Decompressor)."""
    decompressor = None
    if options.deflate is not None:
        decompressor = Decompressor(options.deflate, is_server=options.server,
                                    max_size=options.max_size)
    return FrameReader(
        expect_masked=options.server,
        max_content_length=options.max_size,
        check_text=options.check_text,
        extension_rsv=options.deflate.rsv if options.deflate is not None else 0,
        decoder=decompressor,
        stream_messages=streaming,
    )


def parse_options(source: Input) -> Options:
    flags = source.byte()
    windows = source.byte()
    deflate = None
    if flags & 4:
        deflate = DeflateParams(
            server_no_context_takeover=bool(flags & 8),
            client_no_context_takeover=bool(flags & 16),
            server_max_window_bits=8 + (windows & 7),
            client_max_window_bits=8 + ((windows >> 3) & 7),
        )
    return Options(bool(flags & 1), bool(flags & 2), MAX_SIZES[flags >> 5], deflate)


@dataclass
class Run:
    events: list[tuple[object, ...]]
    error: ProtocolError | None
    state: tuple[int, int]  # (buffered, frame_remaining) at the end, when no error


def _event(event: object, options: Options) -> tuple[object, ...]:
    if isinstance(event, Message):
        assert type(event.data) is bytes, type(event.data)
        assert len(event.data) <= options.max_size, (len(event.data), options.max_size)
        text = event._text
        if text is not None:
            assert text == event.data.decode("utf-8")
        return ("message", int(event.opcode), event.data)
    if isinstance(event, (Ping, Pong)):
        assert type(event.payload) is bytes
        return ("ping" if isinstance(event, Ping) else "pong", event.payload)
    assert isinstance(event, CloseReceived), event
    assert type(event.reason) is bytes
    return ("close", event.code, event.reason)


def feed(pieces: Iterable[bytes | bytearray], options: Options) -> Run:
    reader = new_reader(options)
    events = []
    error = None
    closed = False
    for piece in pieces:
        try:
            for event in reader.receive(piece):
                assert not closed, "event after the close frame"
                events.append(_event(event, options))
                closed = events[-1][0] == "close"
        except ProtocolError as exc:
            assert exc.close_code in _CODES[type(exc)], (type(exc), exc.close_code)
            error = exc
            break
    if error is not None or closed:
        # Once failed or closed, the reader takes nothing more.
        assert list(reader.receive(b"\x81\x00\x89\x00\x88\x00")) == []
        assert reader.buffered == 0
    in_frame = reader._frame_left if reader._in_frame else 0  # payload still to come
    return Run(events, error, (reader.buffered, in_frame))


def feed_streaming(pieces: Iterable[bytes | bytearray], options: Options) -> Run:
    """``feed`` in streaming mode: each message joined back from its pieces."""
    reader = new_reader(options, streaming=True)
    events: list[tuple[object, ...]] = []
    error = None
    opcode: int | None = None
    parts: list[bytes] = []
    for piece in pieces:
        try:
            for event in reader.receive(piece):
                if isinstance(event, StreamStart):
                    assert opcode is None, "a message began inside another"
                    opcode, parts = int(event.opcode), []
                elif isinstance(event, StreamWhole):  # a message whole in one read
                    assert opcode is None, "a message began inside another"
                    assert type(event.data) is bytes
                    assert len(event.data) <= options.max_size
                    events.append(("message", int(event.opcode), event.data))
                elif isinstance(event, (StreamData, StreamEnd)):
                    assert opcode is not None, "message data outside a message"
                    assert type(event.data) is bytes
                    if isinstance(event, StreamData):
                        assert event.data, "an empty piece"
                    parts.append(event.data)
                    if isinstance(event, StreamEnd):
                        data = b"".join(parts)
                        assert len(data) <= options.max_size
                        events.append(("message", opcode, data))
                        opcode = None
                else:
                    events.append(_event(event, options))
        except ProtocolError as exc:
            assert exc.close_code in _CODES[type(exc)], (type(exc), exc.close_code)
            error = exc
            break
    return Run(events, error, (reader.buffered, 0))


def _same_error(a: ProtocolError | None, b: ProtocolError | None, compressed: bool) -> bool:
    if a is None or b is None:
        return a is b
    if a.close_code == b.close_code:
        return True
    # Inside a compressed message, whether zlib meets the corruption or the size limit
    # first depends on where the chunks end; both are correct answers.
    return compressed and {a.close_code, b.close_code} <= {1007, 1009}


def _compare_with_model(whole: Run, model: Outcome) -> None:
    assert whole.events == model.events, (whole.events, model.events)
    if model.stopped == "error":
        assert whole.error is not None, f"reader accepted what the model refuses {model}"
        assert whole.error.close_code in model.codes, (whole.error, model.codes)
    elif model.stopped in ("end", "close"):
        assert whole.error is None, f"reader refused a valid stream: {whole.error!r}"
        if model.stopped == "end":
            assert whole.state == (0, 0), whole.state
    elif whole.error is None:
        # Stopped inside a frame: nothing may be lost or invented. A data frame whose
        # header is complete is being consumed (nothing buffered); else it waits whole.
        buffered, remaining = whole.state
        if remaining:
            assert model.partial_is_data and buffered == 0, (whole.state, model)
            assert remaining == model.partial_remaining, (whole.state, model)
        else:
            assert buffered == model.leftover, (whole.state, model)


def check(data: bytes) -> None:
    source = Input(data)
    options = parse_options(source)
    sizes = source.sizes()
    stream = source.rest()

    whole = feed([stream], options)
    model = reference(
        stream,
        server=options.server,
        max_size=options.max_size,
        check_text=options.check_text,
        inflate_bits=None if options.deflate is None else (
            options.deflate.client_max_window_bits if options.server
            else options.deflate.server_max_window_bits),
        inflate_no_takeover=options.deflate is not None and (
            options.deflate.client_no_context_takeover if options.server
            else options.deflate.server_no_context_takeover),
    )
    _compare_with_model(whole, model)

    # The connection hands over bytes or bytearray: every other piece is a bytearray.
    pieces: list[bytes | bytearray] = list(split(stream, sizes))
    pieces[1::2] = [bytearray(piece) for piece in pieces[1::2]]
    runs = [feed(pieces, options)]
    if len(stream) <= _BYTEWISE_LIMIT:
        runs.append(feed(bytewise(stream), options))
    for run in runs:
        assert run.events == whole.events, (run.events, whole.events)
        assert _same_error(run.error, whole.error, model.compressed), (run.error, whole.error)
        if whole.error is None:
            assert run.state == whole.state, (run.state, whole.state)

    streamed = feed_streaming(pieces, options)
    assert streamed.events == whole.events, (streamed.events, whole.events)
    assert _same_error(streamed.error, whole.error, model.compressed), (
        streamed.error, whole.error)
