"""The client side: ``connect`` (ws://, wss:// or any stream) and ``open_conn``."""

from __future__ import annotations

import base64
import itertools
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Union
from urllib.parse import unquote, urlsplit

import trio

from ._config import Config
from ._conn import Conn
from ._dial import open_stream
from ._errors import HandshakeError, WebSocketTimeoutError
from ._extension import accept_server_response, client_offer
from ._handler import EventHandler
from ._handshake import (
    Request,
    ResponseHead,
    build_request,
    check_response,
    new_key,
    parse_status_line,
)
from ._http import Headers, check_names, find_head_end, header_items, parse_head
from ._proxy import ProxyURL, environment_proxy, hide_password, parse_proxy_url
from ._redirect import REDIRECT_STATUSES, headers_for, redirect_url, same_origin

#: How much of a rejecting response's body we keep for the HandshakeError.
MAX_ERROR_BODY = 64 * 1024

# Blanks and controls have no place in a host (and would break the request's head).
_BAD_HOST_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class WebSocketURL:
    """The parts of a ws:// or wss:// URL that the handshake needs."""

    secure: bool
    host: str
    port: int
    target: str
    host_header: str
    username: str | None = None
    password: str | None = None


def parse_url(url: str) -> WebSocketURL:
    """Split a ``ws://`` / ``wss://`` URL; IPv6 literals in brackets are supported.

    Raises ValueError for other schemes, a missing host, or a fragment (RFC 6455
    section 3 forbids fragments in WebSocket URIs).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError("WebSocket URL must start with ws:// or wss://, "
                         f"got {hide_password(url)!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError("WebSocket URLs cannot have a fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"WebSocket URL has no host: {hide_password(url)!r}")
    if _BAD_HOST_CHAR.search(host):
        raise ValueError(f"WebSocket URL has an invalid host: {hide_password(url)!r}")
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    port = parts.port if parts.port is not None else default_port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return WebSocketURL(secure, host, port, target, host_header, username, password)


#: ``proxy=`` of connect: True for the environment's proxy, a URL, or None (direct).
ProxySetting = Union[bool, str, None]


async def connect(
    url: str,
    handler: EventHandler | None = None,
    *,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] = (),
    stream: trio.abc.Stream | None = None,
    proxy: ProxySetting = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_redirects: int = 10,
) -> Conn:
    """Open a WebSocket connection and return its ``Conn`` once the handshake is done.

    ``handshake_timeout`` bounds everything: the proxy exchange, TCP connect, TLS, the
    upgrade and every redirect. Run the connection with ``await conn.listen()``. Without a handler the connection
    is in pull mode: ``await conn.receive()`` / ``async for message in conn`` (a
    client that only writes and ignores what arrives passes ``gws.EventHandler()``).

    Args:
        url: ``ws://`` or ``wss://`` (IPv6 literals in brackets); ``user:password`` in
            it is sent as ``Authorization: Basic``.
        handler: gets the connection's events.
        config: options (``Config()`` when None).
        ssl_context: for ``wss://``; a default verifying context when None.
        headers: extra request headers; a ``Host`` among them replaces ours.
        subprotocols: offered in ``Sec-WebSocket-Protocol``, in preference order.
        stream: an already connected trio Stream (a Unix socket, a tunnel of your own):
            nothing is dialled, the handshake runs on it (in TLS first for ``wss://``),
            and a redirect cannot be followed.
        proxy: True (the default) takes the proxy from the environment as curl does
            (``wss_proxy``/``https_proxy``, ``ws_proxy``/``http_proxy``, ``all_proxy``,
            ``no_proxy``; loopback hosts always direct); a URL (``http://``,
            ``https://``, ``socks5://``, ``socks5h://``, ``socks4://``, ``socks4a://``,
            with ``user:password``) forces that proxy; None dials directly. SOCKS needs
            the ``trio-gws[socks]`` extra.
        proxy_ssl_context: verifies an ``https://`` proxy (a default verifying context
            when None); ``ssl_context`` is for the server inside the tunnel.
        server_hostname: the name for SNI and the certificate check instead of the
            URL's host (as in ``trio.SSLStream``); dropped if a redirect changes host.
        max_redirects: how many 301/302/303/307/308 answers are followed (0: none).

    Raises:
        HandshakeError: the server refused (its status, headers and body attached), a
            redirect could not be followed (no Location, another scheme, wss to ws, a
            loop, more than ``max_redirects``), or the answer was not a valid upgrade.
        ProxyError: the proxy could not be reached or refused (a HandshakeError).
        WebSocketTimeoutError: ``handshake_timeout`` ran out; the message says at which
            stage.
        OSError: the host cannot be reached (direct connections).
        trio.BrokenResourceError: the TLS handshake of a ``wss://`` URL failed: the
            certificate was refused (``__cause__`` is the ``ssl`` error) or the
            connection broke (``connect_forever`` retries the latter).
        ValueError: a bad URL, proxy URL, header or subprotocol name.
        ImportError: a SOCKS proxy without python-socks installed.
    """
    config = config if config is not None else Config()
    if max_redirects < 0:
        raise ValueError("max_redirects must not be negative")
    where = parse_url(url)
    forced = _forced_proxy(proxy)
    extra = header_items(headers)
    check_names(subprotocols, "subprotocols")
    _take_host(extra, where.host_header)  # more than one Host: refused before dialling
    credentials = (where.username, where.password or "") if where.username is not None else None
    offer = client_offer(config)
    steps: list[str] = []
    visited = {_identity(where)}
    try:
        with trio.fail_after(config.handshake_timeout):
            for followed in itertools.count():
                via = None if stream is not None else _proxy_for(proxy, forced, where)
                hop = _Hop(where, via, server_hostname, _with_credentials(extra, credentials))
                try:
                    return await _open(hop, stream, handler, config, ssl_context,
                                       proxy_ssl_context, subprotocols, offer, steps)
                except _Redirected as redirect:
                    response = redirect.response
                    next_url = redirect_url(url, response.status,
                                            response.headers.get("Location"),
                                            response.headers.items())
                    next_where = _check_redirect(next_url, response, stream, followed,
                                                 max_redirects, visited)
                    same = same_origin((where.host, where.port),
                                       (next_where.host, next_where.port))
                    extra = headers_for(extra, same)
                    if not same:
                        server_hostname = credentials = None
                    if next_where.username is not None:
                        credentials = (next_where.username, next_where.password or "")
                    url, where = next_url, next_where
            raise AssertionError("unreachable")  # pragma: no cover
    except trio.TooSlowError:
        stage = f" (stalled {steps[-1]})" if steps else ""
        raise WebSocketTimeoutError(
            f"handshake with {hide_password(url)} not finished within "
            f"{config.handshake_timeout}s{stage}"
        ) from None


@dataclass(frozen=True)
class _Hop:
    """One attempt of connect: where to, through which proxy, with which headers."""

    where: WebSocketURL
    proxy: ProxyURL | None
    server_hostname: str | None
    extra: list[tuple[str, str]]


class _Redirected(Exception):
    """The server answered with a redirect (caught by connect's loop, never escapes)."""

    def __init__(self, response: ResponseHead) -> None:
        super().__init__(response.status)
        self.response = response


def _forced_proxy(proxy: ProxySetting) -> ProxyURL | None:
    if isinstance(proxy, str):
        return parse_proxy_url(proxy)
    if proxy is not None and not isinstance(proxy, bool):
        raise TypeError(f"proxy must be True, None or a URL string, not {proxy!r}")
    return None


def _proxy_for(proxy: ProxySetting, forced: ProxyURL | None,
               where: WebSocketURL) -> ProxyURL | None:
    if proxy is not True:
        return forced
    value = environment_proxy(where.secure, where.host, where.port, os.environ)
    if value is None:
        return None
    try:
        return parse_proxy_url(value)
    except ValueError as exc:
        raise ValueError(f"the proxy set in the environment is unusable: {exc}") from None


def _with_credentials(extra: list[tuple[str, str]],
                      credentials: tuple[str, str] | None) -> list[tuple[str, str]]:
    if credentials is None:
        return extra
    pair = f"{credentials[0]}:{credentials[1]}".encode()
    return [*extra, ("Authorization", "Basic " + base64.b64encode(pair).decode())]


def _identity(where: WebSocketURL) -> tuple[bool, str, int, str]:
    return where.secure, where.host.lower(), where.port, where.target


def _check_redirect(next_url: str, response: ResponseHead, stream: trio.abc.Stream | None,
                    followed: int, max_redirects: int,
                    visited: set[tuple[bool, str, int, str]]) -> WebSocketURL:
    """The parsed next URL, or the HandshakeError that stops following."""

    def refuse(why: str) -> HandshakeError:
        return HandshakeError(why, status=response.status, headers=response.headers.items())

    status = response.status
    shown = hide_password(next_url)
    if stream is not None:
        raise refuse(f"server redirected ({status}) to {shown}, which cannot be followed "
                     "on a caller-supplied stream")
    try:
        next_where = parse_url(next_url)
    except ValueError as exc:
        raise refuse(f"server redirected ({status}) to an invalid URL: {exc}") from None
    if _identity(next_where) in visited:
        raise refuse(f"redirect loop: server redirected ({status}) back to {shown}")
    if followed >= max_redirects:
        raise refuse(f"server redirected ({status}) to {shown} after {followed} "
                     f"redirect(s) (max_redirects={max_redirects})")
    visited.add(_identity(next_where))
    return next_where


async def _open(
    hop: _Hop,
    stream: trio.abc.Stream | None,
    handler: EventHandler | None,
    config: Config,
    ssl_context: ssl.SSLContext | None,
    proxy_ssl_context: ssl.SSLContext | None,
    subprotocols: Sequence[str],
    offer: str | None,
    steps: list[str],
) -> Conn:
    """One connection attempt: dial (or take ``stream``), TLS, upgrade."""
    where = hop.where
    opened: trio.abc.Stream | None = stream
    try:
        if opened is None:
            opened = await open_stream(where.host, where.port, proxy=hop.proxy,
                                       proxy_ssl_context=proxy_ssl_context, config=config,
                                       steps=steps)
        if where.secure:
            name = hop.server_hostname if hop.server_hostname is not None else where.host
            steps.append(f"in the TLS handshake with {where.host_header} (as {name})")
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            opened = trio.SSLStream(opened, context, server_hostname=name,
                                    https_compatible=False)
            await opened.do_handshake()
        steps.append(f"waiting for the upgrade response from {where.host_header}")
        return await _handshake(opened, handler, config, where, hop.extra, subprotocols, offer)
    except BaseException:
        if opened is not None:
            await trio.aclose_forcefully(opened)
        raise


async def _handshake(
    stream: trio.abc.Stream,
    handler: EventHandler | None,
    config: Config,
    where: WebSocketURL,
    extra: list[tuple[str, str]],
    subprotocols: Sequence[str],
    offer: str | None,
) -> Conn:
    key = new_key()
    host_header, extra = _take_host(extra, where.host_header)
    request_bytes = build_request(host_header, where.target, key,
                                  subprotocols=subprotocols, extensions=offer,
                                  extra_headers=extra)
    try:
        await stream.send_all(request_bytes)
        response, leftover = await _read_response(stream, config)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(f"connection lost during the handshake: {exc!r}", status=0) from exc
    if response.status in REDIRECT_STATUSES:
        raise _Redirected(response)
    if response.status != 101:
        response.body = await _read_body(stream, response, leftover)
        leftover = b""
    subprotocol = check_response(response, key, subprotocols)
    answered = response.headers.get_all("Sec-WebSocket-Extensions")
    try:
        extension = accept_server_response(answered, config, offered=offer is not None)
    except HandshakeError as exc:
        raise HandshakeError(str(exc), status=response.status,
                             headers=response.headers.items()) from None
    sent = Headers([("Host", host_header), *extra])
    request = Request("GET", where.target, sent)
    return Conn(stream, handler, config, is_server=False, request=request,
                subprotocol=subprotocol, extension=extension, leftover=leftover)


def _take_host(extra: list[tuple[str, str]], ours: str) -> tuple[str, list[tuple[str, str]]]:
    """A caller's ``Host`` header replaces ours (one Host only, RFC 9112 section 3.2)."""
    given = [value for name, value in extra if name.lower() == "host"]
    if not given:
        return ours, extra
    if len(given) > 1:
        raise ValueError("more than one Host header in headers=")
    return given[0], [(name, value) for name, value in extra if name.lower() != "host"]


async def _read_response(stream: trio.abc.Stream, config: Config) -> tuple[ResponseHead, bytes]:
    buf = bytearray()
    while True:
        try:
            end = find_head_end(buf, config.max_request_line, config.max_header_bytes)
        except HandshakeError as exc:
            raise HandshakeError(f"response head too large: {exc}", status=0) from None
        if end >= 0:
            break
        data = await stream.receive_some(config.read_buffer_size)
        if not data:
            raise HandshakeError("server closed the connection before answering", status=0)
        buf += data
    try:
        start_line, headers = parse_head(bytes(buf[:end]), config.max_header_count)
    except HandshakeError as exc:
        raise HandshakeError(f"malformed response: {exc}", status=0) from None
    status, reason = parse_status_line(start_line)
    return ResponseHead(status, reason, headers), bytes(buf[end:])


async def _read_body(stream: trio.abc.Stream, response: ResponseHead, received: bytes) -> bytes:
    """Read (up to MAX_ERROR_BODY of) a rejecting response's body for the error message."""
    length_header = response.headers.get("Content-Length")
    wanted = MAX_ERROR_BODY
    if length_header is not None and length_header.isdigit():
        wanted = min(int(length_header), MAX_ERROR_BODY)
    body = bytearray(received)
    try:
        while len(body) < wanted:
            data = await stream.receive_some(wanted - len(body))
            if not data:
                break
            body += data
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        pass
    return bytes(body[:wanted])


@asynccontextmanager
async def open_conn(
    url: str,
    handler: EventHandler | None = None,
    *,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] = (),
    stream: trio.abc.Stream | None = None,
    proxy: ProxySetting = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_redirects: int = 10,
) -> AsyncIterator[Conn]:
    """Connect, run ``listen()`` in the background, and close on exit.

    The arguments are ``connect``'s.

    On leaving the block the connection is closed with 1000 (1011 when the block
    raised) and the close handshake is awaited within ``close_timeout``. An exception
    from the block propagates as itself, never wrapped in an exception group.

    Raises:
        HandshakeError, WebSocketTimeoutError, OSError: as ``connect``.
    """
    conn = await connect(url, handler,
                         config=config, ssl_context=ssl_context, headers=headers,
                         subprotocols=subprotocols, stream=stream, proxy=proxy,
                         proxy_ssl_context=proxy_ssl_context, server_hostname=server_hostname,
                         max_redirects=max_redirects)
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        # start, not start_soon: listen() must be the connection's reader before the
        # block runs, or an early exit's aclose() would start a second reader.
        await nursery.start(conn.listen)
        try:
            yield conn
        except BaseException as exc:  # re-raised below, outside the nursery
            body_error = exc
        code = 1000 if body_error is None else 1011
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + conn.config.close_timeout
            try:
                await conn.aclose(code)
            except Exception:
                pass
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error

