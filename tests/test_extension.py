"""The extension seam (trio_gws._extension): a connection knows an extension only by
its reserved bits and its codec. A toy extension that owns RSV2 (not RSV1) and
reverses every message proves the seam is not deflate in disguise."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
import trio

from trio_gws import Broadcaster, Config, Conn, Headers, Opcode, ProtocolError
from trio_gws._deflate import DeflateParams
from trio_gws._extension import PLAIN, accept_server_response, client_offer, negotiate_server
from trio_gws._frames import RSV1, RSV2
from trio_gws._mask import Buffer
from trio_gws._reader import FrameReader

from helpers import BINARY, TEXT, Recorder, build_frame, make_conn

RSV2_BIT = 0x2  # build_frame's 3-bit rsv argument


class ReverseCodec:
    """Encodes by reversing a whole message; decoding gathers the frames, then reverses."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def encode(self, data: Buffer) -> tuple[Buffer, int]:
        return bytes(data)[::-1], RSV2

    def feed(self, data: Buffer) -> bytes:
        self.parts.append(bytes(data))
        return b""

    def finish(self) -> bytes:
        whole, self.parts = b"".join(self.parts), []
        return whole[::-1]


class Reverse:
    """A per-message extension owning RSV2."""

    name = "x-reverse"
    rsv = RSV2

    def encoder(self, *, is_server: bool, config: Config) -> ReverseCodec:
        return ReverseCodec()

    def decoder(self, *, is_server: bool, config: Config) -> ReverseCodec:
        return ReverseCodec()

    def broadcast_key(self, config: Config, length: int) -> Hashable | None:
        return ("x-reverse",)

    def shared_encoder(self, config: Config) -> ReverseCodec:
        return ReverseCodec()


def reader_with_reverse(**kwargs: Any) -> FrameReader:
    return FrameReader(expect_masked=True, max_content_length=1 << 20,
                       extension_rsv=RSV2, decoder=ReverseCodec(), **kwargs)


def test_the_reader_accepts_exactly_the_extensions_bits() -> None:
    reader = reader_with_reverse()
    events = list(reader.receive(build_frame(TEXT, b"olleh", mask=True, rsv=RSV2_BIT)))
    assert [(e.opcode, e.data) for e in events] == [(Opcode.TEXT, b"hello")]
    plain = list(reader.receive(build_frame(BINARY, b"as is", mask=True)))
    assert plain[0].data == b"as is"
    with pytest.raises(ProtocolError, match="reserved bits 0b100") as info:
        list(reader_with_reverse().receive(build_frame(TEXT, b"x", mask=True, rsv=0x4)))
    assert info.value.close_code == 1002


def test_an_extension_bit_on_a_continuation_or_control_frame_fails() -> None:
    wire = (build_frame(TEXT, b"ab", mask=True, fin=False, rsv=RSV2_BIT)
            + build_frame(0x0, b"c", mask=True, rsv=RSV2_BIT))
    with pytest.raises(ProtocolError, match="continuation"):
        list(reader_with_reverse().receive(wire))
    with pytest.raises(ProtocolError, match="control"):
        list(reader_with_reverse().receive(build_frame(0x9, b"", mask=True, rsv=RSV2_BIT)))


def test_a_fragmented_marked_message_is_decoded_whole() -> None:
    wire = (build_frame(TEXT, b"dl", mask=True, fin=False, rsv=RSV2_BIT)
            + build_frame(0x9, b"p", mask=True)
            + build_frame(0x0, b"row", mask=True))
    events = list(reader_with_reverse().receive(wire))
    assert [type(e).__name__ for e in events] == ["Ping", "Message"]
    assert events[1].data == b"world"


def test_bits_and_decoder_go_together() -> None:
    with pytest.raises(ValueError):
        FrameReader(expect_masked=True, max_content_length=10, extension_rsv=RSV2)
    with pytest.raises(ValueError):
        FrameReader(expect_masked=True, max_content_length=10, decoder=ReverseCodec())
    with pytest.raises(ValueError):
        FrameReader(expect_masked=True, max_content_length=10, extension_rsv=0x01,
                    decoder=ReverseCodec())  # not a reserved bit


async def test_a_connection_uses_any_extension_through_the_seam() -> None:
    rec = Recorder(echo=True)
    conn, peer, _ = make_conn(rec, extension=Reverse())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        await peer.send(TEXT, b"!olleh", rsv=RSV2_BIT)
        echoed = await peer.recv_frame()
        # The message arrived decoded, and the echo went out encoded with RSV2.
        assert echoed.rsv == RSV2_BIT and echoed.payload == b"!olleh"
        assert rec.kinds() == ["open", "message"]
        assert rec.events[1].data.data == b"hello!"
        Broadcaster(Opcode.BINARY, b"abc").broadcast(conn)
        shared = await peer.recv_frame()
        assert shared.rsv == RSV2_BIT and shared.payload == b"cba"
        await peer.send_close(1000)
        await peer.recv_close()
    assert not conn.compressed and conn.deflate_params is None
    assert conn.extension.name == "x-reverse"  # type: ignore[union-attr]


def test_negotiation_is_the_only_place_an_extension_is_named() -> None:
    off, on = Config(), Config(compress_enabled=True)
    ext = Headers([("Sec-WebSocket-Extensions", "permessage-deflate")])
    assert client_offer(off) is None and negotiate_server(ext, off) is None
    offer = client_offer(on)
    assert offer is not None and offer.startswith("permessage-deflate")
    agreed = negotiate_server(Headers([("Sec-WebSocket-Extensions", offer)]), on)
    assert agreed is not None
    extension, answer = agreed
    assert extension.rsv == RSV1 and extension.name == "permessage-deflate"
    assert accept_server_response([answer], on, offered=True) == extension
    assert accept_server_response([], on, offered=True) is None


def test_an_answer_to_no_offer_is_refused() -> None:
    from trio_gws import HandshakeError

    with pytest.raises(HandshakeError, match="did not offer"):
        accept_server_response(["permessage-deflate"], Config(), offered=False)


def test_deflate_shares_frames_only_where_history_allows() -> None:
    config = Config(compress_enabled=True, compress_threshold=10)
    takeover = DeflateParams()
    no_takeover = DeflateParams(server_no_context_takeover=True, server_max_window_bits=10)
    assert takeover.broadcast_key(config, 5) == PLAIN  # below the threshold: plain
    assert takeover.broadcast_key(config, 50) is None  # its own compressor
    key = no_takeover.broadcast_key(config, 50)
    assert key is not None and key != PLAIN
    assert key != DeflateParams(server_no_context_takeover=True).broadcast_key(config, 50)


def test_deflate_encoder_keeps_small_messages_plain() -> None:
    config = Config(compress_enabled=True, compress_threshold=10)
    encoder = DeflateParams().encoder(is_server=True, config=config)
    assert encoder.encode(b"tiny") == (b"tiny", 0)
    body, rsv = encoder.encode(b"a" * 100)
    assert rsv == RSV1 and len(body) < 100


def test_conn_requires_nothing_deflate_specific() -> None:
    conn: Conn = make_conn(Recorder(), extension=Reverse())[0]  # type: ignore[arg-type]
    assert conn.extension is not None and conn.extension.rsv == RSV2
