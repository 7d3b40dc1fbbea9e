"""connect()'s server_hostname (SNI and the certificate's name) and a caller's Host."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

import trio_gws as gws

from helpers import Recorder
from httpstub import Stub, running

TIMEOUT = 20


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def named_server_context(ca: trustme.CA, names: list[str | None]) -> ssl.SSLContext:
    """A server context whose certificate names only ws.test; it records each SNI name."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("ws.test").configure_cert(ctx)
    ctx.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc]
    return ctx


async def test_server_hostname_sets_sni_and_the_checked_name(
        ca: trustme.CA, client_context: ssl.SSLContext) -> None:
    names: list[str | None] = []
    stub = Stub()
    async with running(stub, ssl_context=named_server_context(ca, names)) as port:
        with trio.fail_after(TIMEOUT):
            async with gws.open_conn(f"wss://127.0.0.1:{port}/", Recorder(),
                                     ssl_context=client_context,
                                     server_hostname="ws.test") as conn:
                await conn.write_string("x")
    assert names == ["ws.test"]
    # the Host header still names the URL's host
    assert stub.seen[0].get("Host") == [f"127.0.0.1:{port}"]


async def test_without_server_hostname_the_url_host_is_checked(
        ca: trustme.CA, client_context: ssl.SSLContext) -> None:
    names: list[str | None] = []
    async with running(Stub(), ssl_context=named_server_context(ca, names)) as port:
        with pytest.raises(trio.BrokenResourceError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"wss://localhost:{port}/", Recorder(),
                                  ssl_context=client_context)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert names == ["localhost"]


async def test_wrong_server_hostname_fails(ca: trustme.CA,
                                           client_context: ssl.SSLContext) -> None:
    names: list[str | None] = []
    async with running(Stub(), ssl_context=named_server_context(ca, names)) as port:
        with pytest.raises(trio.BrokenResourceError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"wss://127.0.0.1:{port}/", Recorder(),
                                  ssl_context=client_context, server_hostname="other.test")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert names == ["other.test"]


@pytest.mark.parametrize("given", [{"Host": "virtual.test"}, [("host", "virtual.test")],
                                   {"HOST": "virtual.test:8080"}])
async def test_callers_host_replaces_ours(given: object) -> None:
    stub = Stub()
    async with running(stub) as port:
        with trio.fail_after(TIMEOUT):
            async with gws.open_conn(f"ws://127.0.0.1:{port}/", Recorder(),
                                     headers=given) as conn:  # type: ignore[arg-type]
                await conn.write_string("x")
    [seen] = stub.seen
    value = next(iter(dict(given).values())) if isinstance(given, dict) else "virtual.test"
    assert seen.get("Host") == [value]
    assert conn.request.headers.get_all("Host") == [value]


async def test_our_host_when_none_given() -> None:
    stub = Stub()
    async with running(stub) as port:
        with trio.fail_after(TIMEOUT):
            async with gws.open_conn(f"ws://127.0.0.1:{port}/", Recorder(),
                                     headers={"X-Other": "1"}):
                pass
    assert stub.seen[0].get("Host") == [f"127.0.0.1:{port}"]


async def test_two_host_headers_refused() -> None:
    with pytest.raises(ValueError, match="more than one Host"):
        await gws.connect("ws://127.0.0.1:9/", Recorder(),
                          headers=[("Host", "a.test"), ("host", "b.test")], proxy=None)


@pytest.mark.parametrize("url", ["ws://exa mple.test/", "ws://exa\x00mple.test/"])
async def test_blank_in_host_refused(url: str) -> None:
    with pytest.raises(ValueError, match="invalid host"):
        await gws.connect(url, Recorder())


async def test_proxy_of_the_wrong_type_refused() -> None:
    with pytest.raises(TypeError, match="proxy must be"):
        await gws.connect("ws://127.0.0.1:9/", Recorder(), proxy=3)  # type: ignore[arg-type]


async def test_messages_never_show_the_password() -> None:
    async def stall(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    stub = Stub(responses={"/": stall})
    async with running(stub) as port:
        with pytest.raises(gws.WebSocketTimeoutError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://user:hunter2@127.0.0.1:{port}/", Recorder(),
                                  config=gws.Config(handshake_timeout=0.5))
    assert "hunter2" not in str(info.value)
    assert f"ws://user:***@127.0.0.1:{port}/" in str(info.value)
    with pytest.raises(ValueError) as bad:
        await gws.connect("http://user:hunter2@example.test/", Recorder())
    assert "hunter2" not in str(bad.value)
