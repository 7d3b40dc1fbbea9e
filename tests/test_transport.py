"""The transport seam (trio_gws._transport): the direct socket path raises exactly what
trio.SocketStream raises, on real sockets."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trio_gws._transport import (
    Transport,
    half_close,
    socket_of,
    stream_addresses,
    translate_socket_error,
)

from helpers import reset


def stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), \
        trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A real TCP connection on 127.0.0.1 (a reset needs TCP, not a socketpair)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    assert isinstance(server, trio.SocketStream)
    return client, server


async def outcome(call: object) -> type[BaseException] | None:
    try:
        await call  # type: ignore[misc]
    except BaseException as exc:
        return type(exc)
    return None


async def test_plain_socket_streams_take_the_fast_path() -> None:
    a, b = stream_pair()
    transport = Transport(a)
    assert transport.fast_receive == a.socket.recv
    await transport.send_all(b"hello")
    assert await b.receive_some(10) == b"hello"
    await b.send_all(b"back")
    assert await transport.receive_some(10) == b"back"


async def test_other_streams_go_through_the_stream() -> None:
    a, b = trio.testing.memory_stream_pair()
    transport = Transport(a)
    assert transport.fast_receive == a.receive_some
    await transport.send_all(b"hi")
    assert await b.receive_some(10) == b"hi"


@pytest.mark.parametrize("direct", [True, False], ids=["transport", "socketstream"])
async def test_a_closed_socket_is_a_closed_resource(direct: bool) -> None:
    a, b = stream_pair()
    transport = Transport(a)
    a.socket.close()
    if direct:
        assert await outcome(transport.send_all(b"x")) is trio.ClosedResourceError
        assert await outcome(transport.receive_some(10)) is trio.ClosedResourceError
    else:
        assert await outcome(a.send_all(b"x")) is trio.ClosedResourceError
        assert await outcome(a.receive_some(10)) is trio.ClosedResourceError
    await b.aclose()


@pytest.mark.parametrize("direct", [True, False], ids=["transport", "socketstream"])
async def test_a_reset_connection_is_a_broken_resource(direct: bool) -> None:
    client, server = await tcp_pair()
    reset(client)
    await trio.sleep(0.05)  # let the RST arrive
    transport = Transport(server)
    receive = transport.receive_some(10) if direct else server.receive_some(10)
    assert await outcome(receive) is trio.BrokenResourceError
    await server.aclose()


async def test_the_raw_receive_error_translates_like_socketstream() -> None:
    client, server = await tcp_pair()
    reset(client)
    await trio.sleep(0.05)
    transport = Transport(server)
    with pytest.raises(OSError) as raw:
        await transport.fast_receive(10)  # the reader's loop translates it itself
    translated = translate_socket_error(raw.value)
    assert isinstance(translated, trio.BrokenResourceError)
    assert translated.__cause__ is raw.value
    await server.aclose()


async def test_sending_to_a_reset_peer_is_a_broken_resource() -> None:
    client, server = await tcp_pair()
    reset(client)
    await trio.sleep(0.05)
    transport = Transport(server)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first send may still be accepted locally
            await transport.send_all(b"x" * 65536)
    await server.aclose()


async def test_sending_after_eof_is_a_closed_resource_on_both_paths() -> None:
    a, b = stream_pair()
    transport = Transport(a)
    assert await half_close(a)
    assert await outcome(transport.send_all(b"x")) is trio.ClosedResourceError
    assert await outcome(a.send_all(b"x")) is trio.ClosedResourceError
    assert await b.receive_some(10) == b""


async def test_half_close_only_where_the_stream_can() -> None:
    a, b = trio.testing.memory_stream_pair()
    assert not await half_close(trio.SSLStream(a, __import__("ssl").create_default_context()))
    c, d = stream_pair()
    assert await half_close(c)
    assert await d.receive_some(10) == b""


async def test_addresses_of_tcp_tls_and_other_streams() -> None:
    client, server = await tcp_pair()
    remote, local = stream_addresses(server)
    assert remote == client.socket.getsockname() and local == server.socket.getsockname()
    assert socket_of(trio.SSLStream(server, __import__("ssl").create_default_context())) \
        is server.socket
    a, _ = trio.testing.memory_stream_pair()
    assert stream_addresses(a) == (None, None)
    server.socket.close()
    assert stream_addresses(server) == (None, None)  # a closed socket: unknown
    await client.aclose()
