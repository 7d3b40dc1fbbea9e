"""The client side: ``connect`` (ws://, wss:// or any stream) and ``open_conn``."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import trio

from ._config import Config
from ._conn import Conn
from ._errors import HandshakeError, WebSocketTimeoutError
from ._handler import EventHandler
from ._handshake import (
    Request,
    Response,
    build_request,
    check_response,
    new_key,
    parse_status_line,
)
from ._http import Headers, find_head_end, header_items, parse_head

#: How much of a rejecting response's body we keep for the HandshakeError.
MAX_ERROR_BODY = 64 * 1024


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
        raise ValueError(f"WebSocket URL must start with ws:// or wss://, got {url!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError("WebSocket URLs cannot have a fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"WebSocket URL has no host: {url!r}")
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    port = parts.port if parts.port is not None else default_port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return WebSocketURL(secure, host, port, target, host_header, username, password)


async def connect(
    url: str,
    handler: EventHandler,
    *,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] = (),
    stream: trio.abc.Stream | None = None,
) -> Conn:
    """Open a WebSocket connection and return its ``Conn`` once the handshake is done.

    ``handshake_timeout`` bounds everything: TCP connect, TLS and the upgrade. For
    ``wss://`` a default verifying SSL context is used unless ``ssl_context`` is given.
    With ``stream`` (a proxy tunnel, a Unix socket...) nothing is dialled: the
    handshake runs on that stream (wrapped in TLS first for ``wss://``). Run the
    connection with ``await conn.listen()``.

    Raises HandshakeError (with the server's status, headers and body when it
    answered), WebSocketTimeoutError, or OSError when the host cannot be reached.
    """
    config = config if config is not None else Config()
    where = parse_url(url)
    extra = header_items(headers)
    if where.username is not None:
        credentials = f"{where.username}:{where.password or ''}".encode()
        extra.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
    offer = None
    if config.compress_enabled:
        from ._deflate import client_offer

        offer = client_offer(config)

    opened: trio.abc.Stream | None = stream
    try:
        with trio.fail_after(config.handshake_timeout):
            if opened is None:
                opened = await trio.open_tcp_stream(where.host, where.port)
            if where.secure:
                context = ssl_context if ssl_context is not None else ssl.create_default_context()
                opened = trio.SSLStream(opened, context, server_hostname=where.host,
                                        https_compatible=False)
                await opened.do_handshake()
            return await _handshake(opened, handler, config, where, extra, subprotocols, offer)
    except trio.TooSlowError:
        if opened is not None:
            await trio.aclose_forcefully(opened)
        raise WebSocketTimeoutError(
            f"handshake with {url} not finished within {config.handshake_timeout}s"
        ) from None
    except BaseException:
        if opened is not None:
            await trio.aclose_forcefully(opened)
        raise


async def _handshake(
    stream: trio.abc.Stream,
    handler: EventHandler,
    config: Config,
    where: WebSocketURL,
    extra: list[tuple[str, str]],
    subprotocols: Sequence[str],
    offer: str | None,
) -> Conn:
    key = new_key()
    request_bytes = build_request(where.host_header, where.target, key,
                                  subprotocols=subprotocols, extensions=offer,
                                  extra_headers=extra)
    try:
        await stream.send_all(request_bytes)
        response, leftover = await _read_response(stream, config)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(f"connection lost during the handshake: {exc!r}", status=0) from exc
    if response.status != 101:
        response.body = await _read_body(stream, response, leftover)
        leftover = b""
    subprotocol = check_response(response, key, subprotocols)
    answered = response.headers.get_all("Sec-WebSocket-Extensions")
    deflate = None
    if offer is not None:
        from ._deflate import accept_server_response

        deflate = accept_server_response(answered, config)
    elif answered:
        raise HandshakeError(f"server answered with extensions {answered!r} we did not offer",
                             status=response.status, headers=response.headers.items())
    sent = Headers([("Host", where.host_header), *extra])
    request = Request("GET", where.target, sent)
    return Conn(stream, handler, config, is_server=False, request=request,
                subprotocol=subprotocol, deflate=deflate, leftover=leftover)


async def _read_response(stream: trio.abc.Stream, config: Config) -> tuple[Response, bytes]:
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
    return Response(status, reason, headers), bytes(buf[end:])


async def _read_body(stream: trio.abc.Stream, response: Response, received: bytes) -> bytes:
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
) -> AsyncIterator[Conn]:
    """Connect, run ``listen()`` in the background, and close on exit.

    On leaving the block the connection is closed with 1000 (1011 when the block
    raised) and the close handshake is awaited within ``close_timeout``. An exception
    from the block propagates as itself, never wrapped in an exception group.
    """
    conn = await connect(url, handler if handler is not None else EventHandler(),
                         config=config, ssl_context=ssl_context, headers=headers,
                         subprotocols=subprotocols, stream=stream)
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        # start, not start_soon: a block that exits at once must find listen() running,
        # or aclose() would run a second listen() itself
        await nursery.start(_listen, conn)
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


async def _listen(conn: Conn, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
    task_status.started()
    await conn.listen()  # marks itself as the reader before its first checkpoint
