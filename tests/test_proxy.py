"""The client through real proxies: tinyproxy (HTTP CONNECT, BasicAuth), stunnel4 in
front of it (an https:// proxy, TLS inside TLS), microsocks (SOCKS5 with a password
it really checks) and dante (SOCKS4). Proxies that misbehave are in
test_proxy_replies.py.

Each proxy's own log shows that the connection went through it, and with which
target name (remote DNS for socks5h://).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

import trio_gws as gws

import proxies
from helpers import Recorder, running_server
from httpstub import Stub, redirect, running

TIMEOUT = 20
USER, PASSWORD = "alice", "se-cret"  # tinyproxy accepts [A-Za-z0-9._-] only
SOCKS_PASSWORD = "p@ss:w0rd/%"       # percent-encoded in the URL
SOCKS_USER_INFO = f"{USER}:p%40ss%3Aw0rd%2F%25"
PROXY_VARIABLES = ("ws_proxy", "WS_PROXY", "wss_proxy", "WSS_PROXY", "http_proxy",
                   "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the proxy variables it is about, and no others."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxies")


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


@pytest.fixture(scope="module")
def tinyproxy(folder: Path) -> Iterator[proxies.Proxy]:
    with proxies.tinyproxy(folder) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tinyproxy_auth(folder: Path) -> Iterator[proxies.Proxy]:
    with proxies.tinyproxy(folder, auth=(USER, PASSWORD)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tinyproxy_443(folder: Path) -> Iterator[proxies.Proxy]:
    """Tunnels to port 443 only: anything else is refused (403) before any lookup."""
    with proxies.tinyproxy(folder, connect_port=443) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def https_proxy(folder: Path, ca: trustme.CA,
                tinyproxy_auth: proxies.Proxy) -> Iterator[proxies.Proxy]:
    with proxies.stunnel(folder, forward_to=tinyproxy_auth.port, ca=ca) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def socks5(folder: Path) -> Iterator[proxies.Proxy]:
    with proxies.microsocks(folder, user=USER, password=SOCKS_PASSWORD) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def socks4(folder: Path) -> Iterator[proxies.Proxy]:
    with proxies.dante(folder) as proxy:
        yield proxy


@asynccontextmanager
async def echo_server(**kw: object) -> AsyncIterator[tuple[int, Recorder]]:
    handler = Recorder(echo=True)
    async with running_server(handler, **kw) as port:  # type: ignore[arg-type]
        yield port, handler


async def echo_through(url: str, **kw: object) -> gws.Conn:
    """Connect (kw: connect's), send a message, wait for its echo; return the Conn."""
    client = Recorder()
    with trio.fail_after(TIMEOUT):
        async with gws.open_conn(url, client, **kw) as conn:  # type: ignore[arg-type]
            await conn.write_string("through the proxy")
            [message] = await client.wait_kind("message")
            assert message.text == "through the proxy"
    return conn


# -- HTTP CONNECT (tinyproxy) --------------------------------------------------------


async def test_ws_through_tinyproxy(tinyproxy: proxies.Proxy) -> None:
    async with echo_server() as (port, server):
        await echo_through(f"ws://127.0.0.1:{port}/x",
                           proxy=f"http://127.0.0.1:{tinyproxy.port}")
    assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in await tinyproxy.wait_log(f"127.0.0.1:{port}")
    assert len(server.conns()) == 1


async def test_wss_through_tinyproxy(tinyproxy: proxies.Proxy, server_context: ssl.SSLContext,
                                     client_context: ssl.SSLContext) -> None:
    async with echo_server(ssl_context=server_context) as (port, _):
        await echo_through(f"wss://localhost:{port}/", ssl_context=client_context,
                           proxy=f"http://127.0.0.1:{tinyproxy.port}")
    assert f"CONNECT localhost:{port} HTTP/1.1" in await tinyproxy.wait_log(f"localhost:{port}")


async def test_basic_credentials_are_percent_decoded(tinyproxy_auth: proxies.Proxy) -> None:
    async with echo_server() as (port, _):
        # %61lice:se%2Dcret is alice:se-cret
        await echo_through(f"ws://127.0.0.1:{port}/",
                           proxy=f"http://%61lice:se%2Dcret@127.0.0.1:{tinyproxy_auth.port}")


async def test_407_without_credentials(tinyproxy_auth: proxies.Proxy) -> None:
    async with echo_server() as (port, server):
        with pytest.raises(gws.ProxyError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(),
                                  proxy=f"http://127.0.0.1:{tinyproxy_auth.port}")
    error = info.value
    assert isinstance(error, gws.HandshakeError)
    assert error.status == 407
    assert "requires authentication" in str(error)
    assert error.proxy == f"http://127.0.0.1:{tinyproxy_auth.port}"
    assert any(name.lower() == "proxy-authenticate" for name, _ in error.headers)
    assert b"Proxy Authentication Required" in error.body
    assert server.conns() == []


async def test_wrong_credentials_refused(tinyproxy_auth: proxies.Proxy) -> None:
    # tinyproxy answers a wrong password with 401 (and a missing one with 407)
    async with echo_server() as (port, _):
        with pytest.raises(gws.ProxyError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(),
                                  proxy=f"http://alice:wrong@127.0.0.1:{tinyproxy_auth.port}")
    assert info.value.status == 401
    assert "refused a tunnel" in str(info.value)
    assert "wrong" not in str(info.value)  # the password is never shown


async def test_403_from_tinyproxy(tinyproxy_443: proxies.Proxy) -> None:
    async with echo_server() as (port, _):
        with pytest.raises(gws.ProxyError) as info:
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(),
                                  proxy=f"http://127.0.0.1:{tinyproxy_443.port}")
    assert info.value.status == 403
    assert f"refused a tunnel to 127.0.0.1:{port}" in str(info.value)


async def test_every_redirect_hop_goes_through_the_proxy(tinyproxy: proxies.Proxy) -> None:
    target, first = Stub(), Stub()
    async with running(target) as target_port, running(first) as first_port:
        first.responses["/"] = redirect(302, f"ws://localhost:{target_port}/there")
        await echo_through(f"ws://127.0.0.1:{first_port}/",
                           proxy=f"http://127.0.0.1:{tinyproxy.port}")
    log = await tinyproxy.wait_log(f"localhost:{target_port}")
    assert f"CONNECT 127.0.0.1:{first_port} HTTP/1.1" in log
    assert f"CONNECT localhost:{target_port} HTTP/1.1" in log
    assert target.paths() == ["/there"]


@pytest.mark.parametrize("pull", [False, True], ids=["handler", "pull-mode"])
async def test_example_client_through_a_proxy(tinyproxy: proxies.Proxy, pull: bool) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "client.py"
    async with echo_server() as (port, _):
        with trio.fail_after(TIMEOUT):
            done = await trio.run_process(
                [sys.executable, example, "--url", f"ws://127.0.0.1:{port}/connect",
                 "--proxy", f"http://127.0.0.1:{tinyproxy.port}",
                 *(["--pull"] if pull else [])],
                capture_stdout=True, capture_stderr=True, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "echo: hello\necho: from\necho: trio-gws\necho: <1024 bytes>\n" in out
    assert "closed: 1000" in out
    assert ("ping: " in out and " ms round trip" in out) is pull
    assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in await tinyproxy.wait_log(f"127.0.0.1:{port}")


# -- an https:// proxy (stunnel in front of tinyproxy), TLS to the server inside -----


async def test_wss_through_https_proxy(https_proxy: proxies.Proxy,
                                       server_context: ssl.SSLContext,
                                       client_context: ssl.SSLContext) -> None:
    async with echo_server(ssl_context=server_context) as (port, _):
        conn = await echo_through(
            f"wss://localhost:{port}/", ssl_context=client_context,
            proxy=f"https://{USER}:{PASSWORD}@localhost:{https_proxy.port}",
            proxy_ssl_context=client_context)
    assert "accepted connection" in await https_proxy.wait_log("accepted connection")
    # TLS to the server inside TLS to the proxy
    assert isinstance(conn._transport.stream, trio.SSLStream)
    assert isinstance(conn._transport.stream.transport_stream, trio.SSLStream)


async def test_ws_through_https_proxy(https_proxy: proxies.Proxy,
                                      client_context: ssl.SSLContext) -> None:
    async with echo_server() as (port, _):
        await echo_through(f"ws://127.0.0.1:{port}/",
                           proxy=f"https://{USER}:{PASSWORD}@127.0.0.1:{https_proxy.port}",
                           proxy_ssl_context=client_context)


async def test_untrusted_https_proxy(https_proxy: proxies.Proxy) -> None:
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect("ws://127.0.0.1:9/", Recorder(),
                              proxy=f"https://localhost:{https_proxy.port}")
    assert info.value.status == 0
    assert "TLS handshake with proxy" in str(info.value)
    assert isinstance(info.value.__cause__.__cause__, ssl.SSLCertVerificationError)


# -- SOCKS (microsocks checks passwords, dante speaks SOCKS4) ------------------------


async def test_socks5_with_password(socks5: proxies.Proxy) -> None:
    async with echo_server() as (port, _):
        await echo_through(f"ws://localhost:{port}/",
                           proxy=f"socks5://{SOCKS_USER_INFO}@127.0.0.1:{socks5.port}")
    # socks5:// resolves the name here: the proxy is asked for the address
    log = await socks5.wait_log(f"127.0.0.1:{port}")
    assert f"connected to 127.0.0.1:{port}" in log
    assert f"connected to localhost:{port}" not in log


async def test_socks5h_resolves_on_the_proxy(socks5: proxies.Proxy,
                                             server_context: ssl.SSLContext,
                                             client_context: ssl.SSLContext) -> None:
    async with echo_server(ssl_context=server_context) as (port, _):
        await echo_through(f"wss://localhost:{port}/", ssl_context=client_context,
                           proxy=f"socks5h://{SOCKS_USER_INFO}@127.0.0.1:{socks5.port}")
    assert f"connected to localhost:{port}" in await socks5.wait_log(f"localhost:{port}")


async def test_socks5_wrong_password_refused(socks5: proxies.Proxy) -> None:
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect("ws://127.0.0.1:9/", Recorder(),
                              proxy=f"socks5://{USER}:wrong@127.0.0.1:{socks5.port}")
    assert info.value.status == 407
    assert "refused the credentials of 'alice'" in str(info.value)
    assert "wrong" not in str(info.value)


async def test_socks5_without_credentials_refused(socks5: proxies.Proxy) -> None:
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect("ws://127.0.0.1:9/", Recorder(),
                              proxy=f"socks5://127.0.0.1:{socks5.port}")
    assert info.value.status == 407
    assert "requires authentication" in str(info.value)


async def test_socks4_through_dante(socks4: proxies.Proxy) -> None:
    async with echo_server() as (port, _):
        await echo_through(f"ws://localhost:{port}/", proxy=f"socks4://127.0.0.1:{socks4.port}")
    log = await socks4.wait_log(f"127.0.0.1.{port}")
    assert any("tcp/connect" in line and line.endswith(f"127.0.0.1.{port}")
               for line in log.splitlines()), log


async def test_socks4_refusal(socks4: proxies.Proxy) -> None:
    # nothing listens there: dante's connection is refused, and so is our request
    port = proxies.realproc.free_port()
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(),
                              proxy=f"socks4://127.0.0.1:{socks4.port}")
    assert info.value.status == 502
    assert info.value.socks_code == 0x5B  # request rejected or failed


async def test_socks_without_python_socks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "python_socks", None)  # import fails
    with pytest.raises(ImportError, match=r"trio-gws\[socks\]"):
        await gws.connect("ws://127.0.0.1:9/", Recorder(), proxy="socks5://127.0.0.1:1080")


# -- the environment -----------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "variable"), [
    ("ws", "http_proxy"), ("ws", "ws_proxy"), ("ws", "all_proxy"), ("ws", "ALL_PROXY"),
    ("wss", "https_proxy"), ("wss", "HTTPS_PROXY"), ("wss", "WSS_PROXY"),
    ("wss", "all_proxy"),
])
async def test_environment_proxy_is_used(tinyproxy_443: proxies.Proxy, scheme: str,
                                         variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # tinyproxy refuses port 9 before looking the name up: its 403 and its log prove
    # that the variable sent us there, with no DNS lookup of the made-up name
    monkeypatch.setenv(variable, f"127.0.0.1:{tinyproxy_443.port}")  # no scheme: http://
    host = f"env-{variable.lower()}.invalid"
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect(f"{scheme}://{host}:9/", Recorder())
    assert info.value.status == 403
    assert f"CONNECT {host}:9 HTTP/1.1" in await tinyproxy_443.wait_log(host)


async def test_environment_socks_proxy(socks5: proxies.Proxy,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", f"socks5h://{USER}:wrong@127.0.0.1:{socks5.port}")
    with pytest.raises(gws.ProxyError) as info:
        with trio.fail_after(TIMEOUT):
            await gws.connect("ws://env-socks.invalid:9/", Recorder())
    assert info.value.status == 407  # refused before any name was looked up


async def test_loopback_never_uses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{proxies.realproc.free_port()}"
    for name in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.setenv(name, dead)
    async with echo_server() as (port, _):
        await echo_through(f"ws://127.0.0.1:{port}/")
        await echo_through(f"ws://localhost:{port}/")
        # ...but a proxy given explicitly is used, loopback or not
        with pytest.raises(gws.ProxyError, match="cannot reach proxy"):
            with trio.fail_after(TIMEOUT):
                await gws.connect(f"ws://127.0.0.1:{port}/", Recorder(), proxy=dead)


async def test_proxy_none_dials_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxies.realproc.free_port()}")
    async with echo_server() as (port, _):
        await echo_through(f"ws://127.0.0.1:{port}/", proxy=None)
