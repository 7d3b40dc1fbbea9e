"""Following a handshake redirect (301, 302, 303, 307, 308), without I/O.

The rules, which the client applies on every hop:

- ``Location`` is resolved against the current URL (RFC 9110 section 10.2.2), so a
  relative one keeps the scheme, host and port; its fragment is dropped (a WebSocket
  URL has none);
- ``http://`` becomes ``ws://`` and ``https://`` becomes ``wss://`` (a server behind an
  ordinary HTTP stack, e.g. an "always HTTPS" rule, writes http(s) URLs; WebSocket
  URLs name the same resources, RFC 6455 section 3); any other scheme is refused;
- never from ``wss://`` to ``ws://`` (nor ``https://``-to-``http://``'s equivalent);
- when the host or the port changes, whatever was meant for the first server is not
  sent on: the ``Authorization``, ``Cookie`` and ``Host`` headers given by the caller,
  the URL's ``user:password``, and ``server_hostname``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

from ._errors import HandshakeError

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Caller headers that belong to the first server only.
ORIGIN_HEADERS = frozenset({"authorization", "cookie", "host"})

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def redirect_url(current: str, status: int, location: str | None,
                 headers: Sequence[tuple[str, str]] = ()) -> str:
    """The ws:// or wss:// URL a redirect leads to.

    Raises HandshakeError (with the redirect's status and headers) when there is no
    Location, its scheme is not ws, wss, http or https, or it would leave TLS.
    """

    def refuse(why: str) -> HandshakeError:
        return HandshakeError(why, status=status, headers=headers)

    if location is None or not location.strip():
        raise refuse(f"server answered {status} (a redirect) without a Location header")
    try:
        parts = urlsplit(urljoin(current, location.strip()))
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise refuse(f"server redirected ({status}) to an invalid URL {location!r}: "
                     f"{exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise refuse(f"server redirected ({status}) to {location!r}: unsupported scheme "
                     f"{parts.scheme!r} (ws, wss, http and https can be followed)")
    if urlsplit(current).scheme.lower() == "wss" and scheme == "ws":
        raise refuse(f"server redirected ({status}) from {current} to {location!r}: "
                     "a redirect never leaves TLS (wss to ws)")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def same_origin(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Same (host, port): the credentials meant for one may go to the other."""
    return a[0].lower() == b[0].lower() and a[1] == b[1]


def headers_for(extra: Sequence[tuple[str, str]], same: bool) -> list[tuple[str, str]]:
    """The caller's headers for the next hop: all of them on the same origin, all but
    ``Authorization``, ``Cookie`` and ``Host`` elsewhere."""
    if same:
        return list(extra)
    return [(name, value) for name, value in extra if name.lower() not in ORIGIN_HEADERS]
