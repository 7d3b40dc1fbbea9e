"""``connect_forever``: a client connection that comes back after every loss.

Between attempts it waits a random time between 0 and ``initial * factor**n``
(capped at ``maximum``): exponential backoff with full jitter, so clients dropped
together by one server restart do not come back together. A connection that stayed
up ``stable_after`` seconds resets ``n``. A 429 or 503 with ``Retry-After`` waits
at least that long (capped at ``max_retry_after``).

It gives up, raising the error, on what retrying cannot fix (``permanent``): a bad
URL, proxy or header (ValueError, TypeError); a refusal with a 4xx status other than
408 and 429 (401, 403, 404, and 407 from a proxy: credentials and paths do not heal
by themselves); a redirect it could not follow (no Location, another scheme, wss to
ws, a loop); a server that answered 101 but broke the handshake (it is the wrong
kind of server); a TLS certificate that fails verification; SOCKS support missing
(ImportError); and anything unexpected (a bug should not spin). Everything else is
retried: refused or reset TCP connections, unreachable hosts and failed name
lookups (networks come back), timeouts, 408/429/5xx answers, a proxy that failed
(status 0, 5xx), and every connection that ended, however it ended.
"""

from __future__ import annotations

import email.utils
import math
import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from ._client import ProxySetting, _forced_proxy, connect, parse_url
from ._config import Config
from ._conn import Conn
from ._errors import ConnectionClosedError, HandshakeError, WebSocketTimeoutError
from ._handler import EventHandler
from ._http import check_names, header_items
from ._proxy import hide_password


@dataclass(frozen=True)
class Backoff:
    """How long ``connect_forever`` waits between attempts (seconds).

    ``jitter`` returns a number in [0, 1) by which the current ceiling is multiplied
    (``random.random``: full jitter); tests pass a constant.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    stable_after: float = 30.0
    max_retry_after: float = 3600.0
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Written so that NaN fails each test, and every bound is finite: an infinite
        # or NaN wait would park the client for good (or fail trio.sleep later).
        if not 0 < self.initial <= self.maximum < math.inf:
            raise ValueError("Backoff needs 0 < initial <= maximum, both finite")
        if not 1 <= self.factor < math.inf:
            raise ValueError("Backoff.factor must be at least 1, and finite")
        for name in ("stable_after", "max_retry_after"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"Backoff.{name} must be finite and not negative")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (0 for the first)."""
        if self.factor == 1:
            return self.initial
        # compare exponents, not powers: factor**attempt overflows a float quickly
        if attempt >= math.log(self.maximum / self.initial, self.factor):
            return self.maximum
        return float(self.initial * self.factor ** attempt)

    def delay(self, attempt: int) -> float:
        return self.ceiling(attempt) * self.jitter()


def retry_after(headers: Sequence[tuple[str, str]], now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or HTTP-date, RFC 9110
    section 10.2.3), None when absent or unreadable; a date in the past is 0."""
    value = next((v.strip() for k, v in headers if k.lower() == "retry-after"), None)
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates: RFC 9110 dates are always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def permanent(error: BaseException) -> bool:
    """True for errors that retrying cannot fix (the list is in the module docstring)."""
    if _certificate_failure(error):
        return True
    if isinstance(error, HandshakeError):
        status = error.status
        return status not in (408, 429) and (status == 101 or 300 <= status < 500)
    if isinstance(error, (OSError, WebSocketTimeoutError, trio.BrokenResourceError)):
        return False
    return True


def _certificate_failure(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class ReconnectingClient:
    """What ``connect_forever`` reports to ``nursery.start``.

    ``conn`` is the current connection, or None while (re)connecting; ``connections``
    counts the connections made so far; ``last_error`` is the latest failed attempt.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Conn | None = None
        self.connections = 0
        self.last_error: Exception | None = None
        self._changed = trio.Event()
        self._stopped: BaseException | None = None

    async def wait_connected(self) -> Conn:
        """The current connection, waiting for one if there is none (or it is closing).

        Raises:
            ConnectionClosedError: ``connect_forever`` has stopped (cancelled, or gave
                up: its error is the ``__cause__``).
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self.conn is not None and not self.conn.close_sent:
                return self.conn
            if self._stopped is not None:
                cause = self._stopped if isinstance(self._stopped, Exception) else None
                raise ConnectionClosedError(
                    f"connect_forever({hide_password(self.url)!r}) has stopped") from cause
            await self._changed.wait()

    def _set(self, conn: Conn | None) -> None:
        self.conn = conn
        if conn is not None:
            self.connections += 1
        self._changed.set()
        self._changed = trio.Event()

    def _stop(self, reason: BaseException) -> None:
        self._stopped = reason
        self._set(None)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "connected" if self.conn else "connecting"
        return (f"<ReconnectingClient {hide_password(self.url)} {state}, "
                f"{self.connections} connections>")


async def connect_forever(
    url: str,
    handler: EventHandler,
    *,
    config: Config | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] = (),
    proxy: ProxySetting = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_redirects: int = 10,
    backoff: Backoff = Backoff(),
    task_status: trio.TaskStatus[ReconnectingClient] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep a connection to ``url`` open until cancelled, reconnecting with backoff.

    Start it with ``client = await nursery.start(gws.connect_forever, url, handler)``:
    it reports a ``ReconnectingClient`` at once (before the first connection; use
    ``await client.wait_connected()``). ``handler`` serves every connection: its
    ``on_open`` runs on each new one, ``on_close``/``on_error`` when each ends.
    Cancelling stops it at any point; a connection that is open then is closed with
    1001 (going away) within ``close_timeout``, as ``serve`` does.

    The other arguments are ``connect``'s; ``backoff`` sets the waits. What it gives up
    on is listed in this module's docstring.

    Raises:
        ValueError: a bad URL, proxy URL, header or subprotocol name (before it
            starts).
        HandshakeError, ProxyError, trio.BrokenResourceError, ...: the first error
            that retrying cannot fix.
    """
    parse_url(url)
    _forced_proxy(proxy)
    header_items(headers)
    check_names(subprotocols, "subprotocols")
    config = config if config is not None else Config()
    client = ReconnectingClient(url)
    shown = hide_password(url)
    task_status.started(client)
    attempt = 0
    try:
        while True:
            try:
                conn = await connect(url, handler, config=config, ssl_context=ssl_context,
                                     headers=headers, subprotocols=subprotocols, proxy=proxy,
                                     proxy_ssl_context=proxy_ssl_context,
                                     server_hostname=server_hostname,
                                     max_redirects=max_redirects)
            except Exception as exc:
                if permanent(exc):
                    config.logger.error("connect_forever(%s): giving up: %r", shown, exc)
                    raise
                client.last_error = exc
                wait = _wait_after(exc, attempt, backoff)
                config.logger.warning("connect_forever(%s): %r; retrying in %.3gs",
                                      shown, exc, wait)
                attempt += 1
                await trio.sleep(wait)
                continue
            opened_at = trio.current_time()
            client._set(conn)
            try:
                await _run(conn)
            finally:
                client._set(None)
            if trio.current_time() - opened_at >= backoff.stable_after:
                attempt = 0
            wait = backoff.delay(attempt)
            config.logger.info("connect_forever(%s): connection ended; reconnecting in %.3gs",
                               shown, wait)
            attempt += 1
            await trio.sleep(wait)
    except BaseException as exc:
        client._stop(exc)
        raise


def _wait_after(error: Exception, attempt: int, backoff: Backoff) -> float:
    wait = backoff.delay(attempt)
    if isinstance(error, HandshakeError) and error.status in (429, 503):
        asked = retry_after(error.headers)
        if asked is not None:
            wait = max(wait, min(asked, backoff.max_retry_after))
    return wait


async def _run(conn: Conn) -> None:
    """``conn.listen()``; when cancelled, a close handshake with 1001 comes first.

    listen() runs shielded so that the cancellation reaches this task only, which then
    starts the close, waits for listen() to finish it (bounded by close_timeout), and
    finally cancels whatever is left.
    """
    ended = trio.Event()
    listening = trio.CancelScope(shield=True)

    async def listen() -> None:
        with listening:
            await conn.listen()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        try:
            await ended.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True) as closing:
                closing.deadline = trio.current_time() + conn.config.close_timeout
                try:
                    await conn.write_close(1001)  # (aclose could start a second listen())
                    await ended.wait()
                except Exception:  # the transport may already be gone
                    pass
            listening.cancel()
            raise
