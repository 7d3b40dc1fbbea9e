"""Dialling for the client: a TCP stream to host:port, directly or through a proxy.

HTTP and HTTPS proxies are asked with CONNECT (our own bounded head parser reads the
answer); SOCKS proxies go through python-socks, imported only when one is used (the
``trio-gws[socks]`` extra). The caller bounds the whole exchange with its deadline
(``handshake_timeout``) and does the TLS with the server on top of what this returns.
"""

from __future__ import annotations

import math
import ssl

import trio

from ._config import Config
from ._errors import HandshakeError, ProxyError
from ._handshake import ResponseHead
from ._http import find_head_end
from ._proxy import ProxyURL, authority, check_connect_reply, connect_request, \
    parse_connect_reply, socks_failure

#: How much of a refusing proxy's body we keep for the ProxyError.
MAX_PROXY_BODY = 4096
#: How long a refusal's close-delimited body is waited for.
PROXY_BODY_GRACE = 1.0


async def open_stream(host: str, port: int, *, proxy: ProxyURL | None,
                      proxy_ssl_context: ssl.SSLContext | None, config: Config,
                      steps: list[str]) -> trio.abc.Stream:
    """A stream connected to host:port, through ``proxy`` when one is given.

    ``steps`` gets a line per stage begun, so a timeout can say where it stalled.
    Raises OSError when the host cannot be reached directly, ProxyError when the
    proxy cannot be reached or refuses.
    """
    if proxy is None:
        steps.append(f"connecting to {authority(host, port)}")
        return await trio.open_tcp_stream(host, port)
    if proxy.is_socks:
        return await _socks_tunnel(proxy, host, port, steps)
    return await _http_tunnel(proxy, host, port, proxy_ssl_context, config, steps)


async def _reach_proxy(proxy: ProxyURL, steps: list[str]) -> trio.SocketStream:
    steps.append(f"connecting to proxy {proxy.shown}")
    try:
        return await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"cannot reach proxy {proxy.shown}: {exc}", proxy=proxy.shown) from exc


async def _http_tunnel(proxy: ProxyURL, host: str, port: int,
                       context: ssl.SSLContext | None, config: Config,
                       steps: list[str]) -> trio.abc.Stream:
    stream: trio.abc.Stream = await _reach_proxy(proxy, steps)
    target = authority(host, port)
    try:
        if proxy.scheme == "https":
            steps.append(f"in the TLS handshake with proxy {proxy.shown}")
            stream = trio.SSLStream(
                stream, context if context is not None else ssl.create_default_context(),
                server_hostname=proxy.host, https_compatible=True)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                raise ProxyError(f"TLS handshake with proxy {proxy.shown} failed: "
                                 f"{exc.__cause__ or exc!r}", proxy=proxy.shown) from exc
        steps.append(f"waiting for proxy {proxy.shown} to open a tunnel to {target}")
        try:
            await stream.send_all(connect_request(host, port, proxy))
            response, rest = await _read_reply(stream, proxy, config)
        except trio.BrokenResourceError as exc:
            raise ProxyError(f"connection to proxy {proxy.shown} lost: "
                             f"{exc.__cause__ or exc!r}", proxy=proxy.shown) from exc
        if not 200 <= response.status < 300:
            response.body = await _read_body(stream, response, rest)
        check_connect_reply(response, proxy, target)
        if rest:
            # Neither a TLS nor a WebSocket server speaks first: these bytes are the
            # proxy's, and would corrupt the tunnel.
            raise ProxyError(f"proxy {proxy.shown} sent {len(rest)} bytes after its "
                             f"{response.status} reply, before the tunnel was used",
                             status=response.status, proxy=proxy.shown)
        return stream
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _read_reply(stream: trio.abc.Stream, proxy: ProxyURL,
                      config: Config) -> tuple[ResponseHead, bytes]:
    """The proxy's reply head (bounded like a request head) and what followed it."""
    buf = bytearray()
    while True:
        try:
            end = find_head_end(buf, config.max_request_line, config.max_header_bytes)
        except HandshakeError as exc:
            raise ProxyError(f"reply from proxy {proxy.shown} too large: {exc}",
                             proxy=proxy.shown) from None
        if end >= 0:
            break
        data = await stream.receive_some(config.read_buffer_size)
        if not data:
            when = "in the middle of its reply" if buf else "before answering"
            raise ProxyError(f"proxy {proxy.shown} closed the connection {when}",
                             proxy=proxy.shown)
        buf += data
    response = parse_connect_reply(bytes(buf[:end]), proxy, config.max_header_count)
    return response, bytes(buf[end:])


async def _read_body(stream: trio.abc.Stream, response: ResponseHead, received: bytes) -> bytes:
    """A refusal's body, for the error: what came with the head, and the rest when
    Content-Length says how much or ``Connection: close`` says it ends at EOF (tinyproxy
    answers HTTP/1.0 that way, its body often in a second segment). A proxy that keeps
    the connection open without a length is not waited for, and a close-delimited body
    only for ``PROXY_BODY_GRACE``: the body is for the error message, never worth a
    timeout instead of the refusal."""
    body = bytearray(received[:MAX_PROXY_BODY])
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        wanted = min(int(length), MAX_PROXY_BODY)
    elif "close" in response.headers.tokens("Connection"):
        wanted = MAX_PROXY_BODY
    else:
        return bytes(body)
    with trio.move_on_after(PROXY_BODY_GRACE):
        try:
            while len(body) < wanted:
                data = await stream.receive_some(wanted - len(body))
                if not data:
                    break
                body += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    return bytes(body)


async def _socks_tunnel(proxy: ProxyURL, host: str, port: int,
                        steps: list[str]) -> trio.abc.Stream:
    try:
        from python_socks import ProxyConnectionError, ProxyType
        from python_socks import ProxyError as SocksError
        from python_socks.async_.trio import Proxy
    except ImportError as exc:
        raise ImportError(f"{proxy.scheme}:// proxies need python-socks: "
                          "pip install 'trio-gws[socks]'") from exc
    socks4 = proxy.scheme in ("socks4", "socks4a")
    client = Proxy(ProxyType.SOCKS4 if socks4 else ProxyType.SOCKS5, proxy.host, proxy.port,
                   proxy.username, proxy.password,
                   rdns=proxy.scheme in ("socks5h", "socks4a"))  # h/a: the proxy resolves
    target = authority(host, port)
    steps.append(f"in the SOCKS exchange with proxy {proxy.shown} for {target}")
    try:
        # our caller's deadline bounds it (python-socks would add its own 60 s)
        sock = await client.connect(host, port, timeout=math.inf)
    except ProxyConnectionError as exc:
        raise ProxyError(f"cannot reach proxy {proxy.shown}: {exc}", proxy=proxy.shown) from exc
    except SocksError as exc:
        raise socks_failure(proxy, target, str(exc), exc.error_code) from exc
    except OSError as exc:  # reset in the middle of the exchange
        raise ProxyError(f"connection to proxy {proxy.shown} lost: {exc}",
                         proxy=proxy.shown) from exc
    return trio.SocketStream(sock)
