"""Client proxies without I/O: which proxy a URL goes through, and the CONNECT exchange.

Proxy choice follows curl (``man curl``, ENVIRONMENT), with one deliberate difference:

- ``ws://`` uses ``ws_proxy`` / ``WS_PROXY``, then ``http_proxy`` (lower case only:
  curl ignores ``HTTP_PROXY``, which a CGI program's ``Proxy:`` request header can set),
  then ``all_proxy`` / ``ALL_PROXY``;
- ``wss://`` uses ``wss_proxy`` / ``WSS_PROXY``, then ``https_proxy`` / ``HTTPS_PROXY``,
  then ``all_proxy`` / ``ALL_PROXY``; lower case first, empty means unset;
- ``no_proxy`` / ``NO_PROXY``: entries separated by commas or blanks; ``*`` matches
  every host; a name matches itself and its subdomains (a leading ``.`` or ``*.`` is
  ignored, so ``example.com``, ``.example.com`` and ``*.example.com`` all match
  ``www.example.com`` but not ``notexample.com``); an IP address or CIDR block matches
  IP hosts; ``host:port`` / ``[v6]:port`` restricts an entry to one port (an
  addition: in curl such an entry never matches; Python's urllib and Go have it);
- the difference: loopback hosts (``localhost``, ``*.localhost``, ``127.0.0.0/8``,
  ``::1``) never go through a proxy from the environment, as in Go's net/http (curl
  proxies them too unless ``no_proxy`` lists them). A proxy elsewhere would reach its
  own loopback, not ours; so a proxy set for the outside world does not break
  connections to local servers. A proxy URL given explicitly (``proxy="http://..."``)
  is used for every host, loopback included.

A proxy URL without a scheme is ``http://``; without a port it is 443 for ``https://``
and 1080 otherwise (curl's defaults). ``user:password`` in it is percent-decoded.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ._errors import HandshakeError, ProxyError
from ._handshake import ResponseHead, parse_status_line
from ._http import build_head, parse_head

#: Proxy URL schemes we dial through: HTTP CONNECT, or SOCKS via python-socks.
SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")
SOCKS_SCHEMES = ("socks5", "socks5h", "socks4", "socks4a")

_WS_VARIABLES = ("ws_proxy", "WS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY")
_WSS_VARIABLES = ("wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY")
_SEPARATORS = re.compile(r"[\s,]+")
# Whatever may stand in a CONNECT request's authority: no blanks, controls or delimiters.
_HOST_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+;=%:\-]+")


@dataclass(frozen=True)
class ProxyURL:
    """A parsed proxy URL; ``shown`` is the URL without credentials, for messages."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_socks(self) -> bool:
        return self.scheme in SOCKS_SCHEMES

    def __repr__(self) -> str:  # never the password
        return f"ProxyURL({self.shown!r}, username={self.username!r})"


def parse_proxy_url(url: str) -> ProxyURL:
    """Parse ``scheme://[user[:password]@]host[:port]``.

    Raises ValueError for an unsupported scheme, a missing host or a bad port.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported proxy scheme {scheme!r} in {hide_password(url)!r}; "
                         f"use one of {', '.join(s + '://' for s in SCHEMES)}")
    host = parts.hostname
    if not host or not _HOST_CHARS.fullmatch(host):
        raise ValueError(f"proxy URL has no valid host: {hide_password(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"proxy URL has a bad port: {hide_password(url)!r}") from None
    if port is None:
        port = 443 if scheme == "https" else 1080
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(scheme, host, port, username, password)


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url)


def environment_proxy(secure: bool, host: str, port: int,
                      environ: Mapping[str, str]) -> str | None:
    """The proxy URL the environment gives for a ws:// (or wss://) host, or None."""
    if is_loopback(host):
        return None
    no_proxy = _variable(environ, ("no_proxy", "NO_PROXY"))
    if no_proxy is not None and no_proxy_matches(host, port, no_proxy):
        return None
    return _variable(environ, _WSS_VARIABLES if secure else _WS_VARIABLES)


def _variable(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, its subdomains (RFC 6761) and loopback addresses."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """Whether a NO_PROXY value exempts ``host:port`` (rules in the module docstring)."""
    name = host.strip("[]").rstrip(".").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = (
            ipaddress.ip_address(name))
    except ValueError:
        address = None
    for entry in _SEPARATORS.split(no_proxy.strip()):
        if entry == "*":
            return True
        pattern, entry_port = _split_port(entry)
        if not pattern or (entry_port is not None and entry_port != port):
            continue
        if address is not None:
            try:
                network = ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                continue  # a name never matches an IP host (as in curl)
            if address.version == network.version and address in network:
                return True
            continue
        pattern = pattern.rstrip(".").lower()
        pattern = pattern[2:] if pattern.startswith("*.") else pattern.lstrip(".")
        if pattern and (name == pattern or name.endswith("." + pattern)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` / ``v6`` / ``host`` -> (pattern, port or None)."""
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return inside, int(rest[1:])
        return (inside, None) if not rest else ("", None)
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return (name, int(port)) if port.isdigit() else ("", None)
    return entry, None


# -- HTTP CONNECT (RFC 9110 section 9.3.6) -----------------------------------------


def authority(host: str, port: int) -> str:
    """``host:port`` with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(host: str, port: int, proxy: ProxyURL) -> bytes:
    """The CONNECT request asking ``proxy`` for a tunnel to host:port.

    Credentials in the proxy URL become ``Proxy-Authorization: Basic`` (RFC 7617, the
    user and password encoded as UTF-8).
    """
    if not _HOST_CHARS.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")
    target = authority(host, port)
    headers = [("Host", target)]
    if proxy.username is not None:
        pair = f"{proxy.username}:{proxy.password or ''}".encode()
        headers.append(("Proxy-Authorization", "Basic " + base64.b64encode(pair).decode()))
    return build_head(f"CONNECT {target} HTTP/1.1", headers)


def parse_connect_reply(head: bytes, proxy: ProxyURL, max_count: int) -> ResponseHead:
    """Parse the proxy's reply head; ProxyError (status 0) when it is malformed."""
    try:
        start_line, headers = parse_head(head, max_count)
        status, reason = parse_status_line(start_line)
    except HandshakeError as exc:
        raise ProxyError(f"malformed reply from proxy {proxy.shown}: {exc}",
                         proxy=proxy.shown) from None
    return ResponseHead(status, reason, headers)


def check_connect_reply(response: ResponseHead, proxy: ProxyURL, target: str) -> None:
    """Accept a 2xx (the tunnel is open); ProxyError with the proxy's status otherwise."""
    status = response.status
    if 200 <= status < 300:
        return
    answered = f"{status} {response.reason}".rstrip()
    if status == 407 and proxy.username is None:
        why = (f"proxy {proxy.shown} requires authentication ({answered}); "
               "give user:password in the proxy URL")
    elif status == 407:
        why = f"proxy {proxy.shown} refused the credentials of {proxy.username!r} ({answered})"
    else:
        why = f"proxy {proxy.shown} refused a tunnel to {target}: {answered}"
    raise ProxyError(why, status=status, headers=response.headers.items(), body=response.body,
                     proxy=proxy.shown)


# -- SOCKS -------------------------------------------------------------------------


def socks_failure(proxy: ProxyURL, target: str, message: str,
                  code: int | None) -> ProxyError:
    """The ProxyError for a SOCKS refusal reported by python-socks (message, reply code).

    Authentication problems are 407 (python-socks reports them without a code, and
    says "authentication" in every such message), a SOCKS5 "not allowed by ruleset"
    (2) is 403, any other reply code 502, a broken exchange 0.
    """
    if "authentication" in message.lower():
        status = 407
        if proxy.username is None:
            why = (f"SOCKS proxy {proxy.shown} requires authentication ({message}); "
                   "give user:password in the proxy URL")
        else:
            why = (f"SOCKS proxy {proxy.shown} refused the credentials of "
                   f"{proxy.username!r} ({message})")
    else:
        status = 0 if code is None else 403 if (code == 2 and proxy.scheme.startswith(
            "socks5")) else 502
        why = f"SOCKS proxy {proxy.shown} refused a tunnel to {target}: {message}"
    return ProxyError(why, status=status, proxy=proxy.shown, socks_code=code)
