"""connect() follows 301/302/303/307/308 against servers started here: a fresh
connection and handshake per hop, relative and http(s) Locations, credentials kept on
the same origin only, never from wss to ws, and a clear error for every bad redirect."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

import trio_gws as gws
from trio_gws import Config
from trio_gws._redirect import headers_for, redirect_url, same_origin

from helpers import Recorder
from httpstub import Stub, redirect, running

TIMEOUT = 20


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def echo(url: str, **kw: object) -> gws.Conn:
    """Connect, exchange one message, close; return the Conn (its request is the last hop's)."""
    client = Recorder()
    with trio.fail_after(TIMEOUT):
        async with gws.open_conn(url, client, **kw) as conn:  # type: ignore[arg-type]
            await conn.write_string("hello")
            [message] = await client.wait_kind("message")
            assert message.text == "hello"
    return conn


async def refused(url: str, **kw: object) -> gws.HandshakeError:
    with pytest.raises(gws.HandshakeError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect(url, Recorder(), **kw)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_each_redirect_status_is_followed(status: int) -> None:
    stub = Stub(responses={"/old?x=1": redirect(status, "new?y=2")})
    async with running(stub) as port:
        conn = await echo(f"ws://127.0.0.1:{port}/old?x=1")
    assert conn.request.target == "/new?y=2"   # resolved against /old
    assert stub.paths() == ["/old?x=1", "/new?y=2"]
    assert stub.accepted == 2                   # a fresh connection per hop


async def test_chain_across_servers_and_schemes(server_context: ssl.SSLContext,
                                                client_context: ssl.SSLContext) -> None:
    last = Stub()
    middle = Stub()
    first = Stub()
    async with running(last, ssl_context=server_context) as tls_port, \
            running(middle) as middle_port, running(first) as first_port:
        # http:// becomes ws://, https:// becomes wss://
        first.responses["/"] = redirect(302, f"http://127.0.0.1:{middle_port}/m")
        middle.responses["/m"] = redirect(301, f"https://localhost:{tls_port}/secure")
        conn = await echo(f"ws://127.0.0.1:{first_port}/", ssl_context=client_context)
    assert conn.request.target == "/secure"
    assert conn.request.headers.get("Host") == f"localhost:{tls_port}"
    assert (first.paths(), middle.paths(), last.paths()) == (["/"], ["/m"], ["/secure"])


async def test_same_origin_keeps_credentials_and_headers() -> None:
    stub = Stub(responses={"/old": redirect(307, "/new")})
    async with running(stub) as port:
        await echo(f"ws://user:pw@127.0.0.1:{port}/old",
                   headers=[("Cookie", "a=b"), ("Host", "virtual.test"), ("X-Keep", "1")])
    old, new = stub.seen
    for seen in (old, new):
        assert seen.get("Authorization") == ["Basic dXNlcjpwdw=="]
        assert seen.get("Cookie") == ["a=b"]
        assert seen.get("Host") == ["virtual.test"]
        assert seen.get("X-Keep") == ["1"]


async def test_other_host_gets_no_credentials() -> None:
    target = Stub()
    first = Stub()
    async with running(target) as target_port, running(first) as first_port:
        first.responses["/"] = redirect(302, f"ws://localhost:{target_port}/there")
        await echo(f"ws://user:pw@127.0.0.1:{first_port}/",
                   headers=[("Authorization", "Bearer t0k3n"), ("Cookie", "session=s"),
                            ("Host", "virtual.test"), ("X-Keep", "1")])
    [sent] = first.seen
    assert sent.get("Authorization") == ["Bearer t0k3n", "Basic dXNlcjpwdw=="]
    [seen] = target.seen
    assert seen.get("Authorization") == []
    assert seen.get("Cookie") == []
    assert seen.get("Host") == [f"localhost:{target_port}"]   # ours, not the caller's
    assert seen.get("X-Keep") == ["1"]


async def test_other_port_is_another_origin() -> None:
    target = Stub()
    first = Stub()
    async with running(target) as target_port, running(first) as first_port:
        first.responses["/"] = redirect(308, f"//127.0.0.1:{target_port}/")
        await echo(f"ws://user:pw@127.0.0.1:{first_port}/")
    assert target.seen[0].get("Authorization") == []


async def test_credentials_in_the_location_are_used() -> None:
    target = Stub()
    first = Stub()
    async with running(target) as target_port, running(first) as first_port:
        first.responses["/"] = redirect(302, f"ws://new:cred@localhost:{target_port}/")
        await echo(f"ws://127.0.0.1:{first_port}/")
    assert target.seen[0].get("Authorization") == ["Basic bmV3OmNyZWQ="]


async def test_server_hostname_dropped_on_another_host(server_context: ssl.SSLContext,
                                                       client_context: ssl.SSLContext,
                                                       ca: trustme.CA) -> None:
    # the first server's certificate only names first.test; the second's names localhost
    first_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("first.test").configure_cert(first_context)
    target = Stub()
    first = Stub()
    async with running(target, ssl_context=server_context) as target_port, \
            running(first, ssl_context=first_context) as first_port:
        first.responses["/"] = redirect(302, f"wss://localhost:{target_port}/")
        await echo(f"wss://127.0.0.1:{first_port}/", ssl_context=client_context,
                   server_hostname="first.test")
    assert target.paths() == ["/"]


async def test_never_from_wss_to_ws(server_context: ssl.SSLContext,
                                    client_context: ssl.SSLContext) -> None:
    plain = Stub()
    async with running(plain) as plain_port:
        for location in (f"ws://127.0.0.1:{plain_port}/", f"http://127.0.0.1:{plain_port}/"):
            tls = Stub(responses={"/": redirect(301, location)})
            async with running(tls, ssl_context=server_context) as tls_port:
                error = await refused(f"wss://localhost:{tls_port}/", ssl_context=client_context)
            assert "never leaves TLS" in str(error)
            assert error.status == 301
    assert plain.seen == []


async def test_redirect_without_location() -> None:
    stub = Stub(responses={"/": redirect(302, None)})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/")
    assert "without a Location header" in str(error)
    assert error.status == 302


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "mailto:a@b.test", "file:///etc"])
async def test_redirect_to_an_unsupported_scheme(location: str) -> None:
    stub = Stub(responses={"/": redirect(301, location)})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/")
    assert "unsupported scheme" in str(error)
    assert stub.accepted == 1


@pytest.mark.parametrize("location", ["ws://127.0.0.1:notaport/", "wss://[::1/",
                                      "ws://exa mple.test/", "http://:80/"])
async def test_redirect_to_an_invalid_url(location: str) -> None:
    stub = Stub(responses={"/": redirect(301, location)})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/")
    assert "invalid URL" in str(error)


async def test_redirect_loop() -> None:
    stub = Stub(responses={"/a": redirect(302, "/b"), "/b": redirect(302, "/c"),
                           "/c": redirect(307, "/a")})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/a")
    assert "redirect loop" in str(error)
    assert error.status == 307
    assert stub.paths() == ["/a", "/b", "/c"]


async def test_redirect_to_itself() -> None:
    stub = Stub(responses={"/a": redirect(301, "/a")})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/a")
    assert "redirect loop" in str(error)
    assert stub.accepted == 1


async def test_too_many_redirects() -> None:
    stub = Stub(responses={f"/{i}": redirect(302, f"/{i + 1}") for i in range(20)})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/0", max_redirects=3)
        assert "after 3 redirect(s) (max_redirects=3)" in str(error)
        assert stub.paths() == ["/0", "/1", "/2", "/3"]
        stub.seen.clear()
        error = await refused(f"ws://127.0.0.1:{port}/0")  # the default: 10
        assert "max_redirects=10" in str(error)
        assert len(stub.seen) == 11
        # exactly max_redirects hops succeed
        del stub.responses["/3"]
        stub.seen.clear()
        conn = await echo(f"ws://127.0.0.1:{port}/0", max_redirects=3)
        assert conn.request.target == "/3"


async def test_max_redirects_zero_follows_nothing() -> None:
    stub = Stub(responses={"/": redirect(301, "/new")})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/", max_redirects=0)
    assert error.status == 301
    assert "max_redirects=0" in str(error)
    assert stub.paths() == ["/"]
    with pytest.raises(ValueError, match="max_redirects"):
        await gws.connect("ws://127.0.0.1:9/", Recorder(), max_redirects=-1)


async def test_redirect_on_a_callers_stream() -> None:
    stub = Stub(responses={"/": redirect(302, "/new")})
    async with running(stub) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        error = await refused(f"ws://127.0.0.1:{port}/", stream=stream)
    assert "caller-supplied stream" in str(error)


async def test_all_hops_within_one_handshake_timeout() -> None:
    async def stall(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    stub = Stub(responses={"/": redirect(302, "/stall"), "/stall": stall})
    async with running(stub) as port:
        with pytest.raises(gws.WebSocketTimeoutError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(),
                                  config=Config(handshake_timeout=1.0))
    assert f"ws://127.0.0.1:{port}/stall" in str(info.value)
    assert "waiting for the upgrade response" in str(info.value)


async def test_other_errors_still_carry_the_response() -> None:
    body = b"go away"
    stub = Stub(responses={"/": b"HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\n" + body})
    async with running(stub) as port:
        error = await refused(f"ws://127.0.0.1:{port}/")
    assert (error.status, error.body) == (404, body)


# -- the rules, pure -----------------------------------------------------------------------


@pytest.mark.parametrize(("current", "location", "expected"), [
    ("ws://h/a/b", "c", "ws://h/a/c"),
    ("ws://h/a/b?q", "/c?d", "ws://h/c?d"),
    ("ws://h:1/a", "//o:2/x", "ws://o:2/x"),
    ("wss://h/a", "//o/x", "wss://o/x"),
    ("ws://h/a", "http://o/x", "ws://o/x"),
    ("ws://h/a", "https://o/x", "wss://o/x"),
    ("ws://h/a", "HTTPS://o/x", "wss://o/x"),
    ("ws://h/a", "wss://o/x", "wss://o/x"),
    ("wss://h/a", "wss://o/x", "wss://o/x"),
    ("wss://h/a", "https://o/x", "wss://o/x"),
    ("ws://h/a", "/x#frag", "ws://h/x"),             # fragments dropped
    ("ws://u:p@h/a", "/x", "ws://u:p@h/x"),
    ("ws://h/a", "  /x  ", "ws://h/x"),
])
def test_redirect_url(current: str, location: str, expected: str) -> None:
    assert redirect_url(current, 302, location) == expected


@pytest.mark.parametrize(("current", "location", "message"), [
    ("ws://h/", None, "without a Location"),
    ("ws://h/", "", "without a Location"),
    ("ws://h/", "ftp://o/", "unsupported scheme 'ftp'"),
    ("ws://h/", "javascript:alert(1)", "unsupported scheme"),
    ("wss://h/", "ws://h/", "never leaves TLS"),
    ("wss://h/", "http://h/", "never leaves TLS"),
])
def test_bad_redirects(current: str, location: str | None, message: str) -> None:
    with pytest.raises(gws.HandshakeError, match=message) as info:
        redirect_url(current, 303, location, [("Location", location or "")])
    assert info.value.status == 303
    assert info.value.headers == [("Location", location or "")]


def test_headers_for_another_origin() -> None:
    extra = [("Authorization", "a"), ("cookie", "c"), ("HOST", "h"), ("X-Other", "x"),
             ("Origin", "o")]
    assert headers_for(extra, True) == extra
    assert headers_for(extra, False) == [("X-Other", "x"), ("Origin", "o")]
    assert same_origin(("Example.test", 80), ("example.test", 80))
    assert not same_origin(("example.test", 80), ("example.test", 81))
    assert not same_origin(("example.test", 80), ("www.example.test", 80))
