"""Which proxy a URL goes through (curl's rules), proxy URLs, and the CONNECT exchange
and SOCKS refusals in pure form; no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_gws as gws
from trio_gws._handshake import ResponseHead as Response
from trio_gws._http import Headers
from trio_gws._proxy import (
    ProxyURL,
    check_connect_reply,
    connect_request,
    environment_proxy,
    is_loopback,
    no_proxy_matches,
    parse_connect_reply,
    parse_proxy_url,
    socks_failure,
)

# -- choosing the variable -------------------------------------------------------------

P = "http://proxy.test:3128"


@pytest.mark.parametrize(("secure", "environ", "expected"), [
    (False, {"ws_proxy": "a"}, "a"),
    (False, {"WS_PROXY": "a", "http_proxy": "b"}, "a"),
    (False, {"ws_proxy": "a", "WS_PROXY": "b"}, "a"),        # lower case first
    (False, {"http_proxy": "b", "all_proxy": "c"}, "b"),
    (False, {"HTTP_PROXY": "b"}, None),                       # curl: never upper case
    (False, {"HTTP_PROXY": "b", "ALL_PROXY": "c"}, "c"),
    (False, {"https_proxy": "b"}, None),                      # that one is for wss
    (False, {"all_proxy": "c", "ALL_PROXY": "d"}, "c"),
    (False, {"ALL_PROXY": "d"}, "d"),
    (True, {"wss_proxy": "a", "https_proxy": "b"}, "a"),
    (True, {"WSS_PROXY": "a", "https_proxy": "b"}, "a"),
    (True, {"https_proxy": "b", "HTTPS_PROXY": "B"}, "b"),
    (True, {"HTTPS_PROXY": "B", "all_proxy": "c"}, "B"),
    (True, {"http_proxy": "b"}, None),                        # that one is for ws
    (True, {"ALL_PROXY": "d"}, "d"),
    (True, {"https_proxy": "", "all_proxy": "c"}, "c"),       # empty means unset
    (True, {"https_proxy": "  ", "ALL_PROXY": "d"}, "d"),
    (True, {}, None),
])
def test_variable_order(secure: bool, environ: dict[str, str], expected: str | None) -> None:
    assert environment_proxy(secure, "example.com", 443, environ) == expected


def test_no_proxy_lower_case_first() -> None:
    environ = {"all_proxy": P, "no_proxy": "other.test", "NO_PROXY": "example.com"}
    assert environment_proxy(False, "example.com", 80, environ) == P
    environ = {"all_proxy": P, "NO_PROXY": "example.com"}
    assert environment_proxy(False, "example.com", 80, environ) is None


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "a.localhost",
                                  "127.0.0.1", "127.1.2.3", "::1", "[::1]"])
def test_loopback_never_proxied_from_the_environment(host: str) -> None:
    assert is_loopback(host)
    environ = {"all_proxy": P, "https_proxy": P, "http_proxy": P}
    assert environment_proxy(True, host, 443, environ) is None
    assert environment_proxy(False, host, 80, environ) is None


@pytest.mark.parametrize("host", ["localhost.example", "mylocalhost", "128.0.0.1", "::2",
                                  "example.com"])
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)
    assert environment_proxy(False, host, 80, {"all_proxy": P}) == P


# -- NO_PROXY --------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "port", "no_proxy", "expected"), [
    ("example.com", 80, "*", True),
    ("example.com", 80, "example.com", True),
    ("EXAMPLE.com", 80, "example.COM", True),
    ("www.example.com", 80, "example.com", True),         # subdomain
    ("www.example.com", 80, ".example.com", True),        # leading dot ignored
    ("example.com", 80, ".example.com", True),
    ("www.example.com", 80, "*.example.com", True),
    ("notexample.com", 80, "example.com", False),         # not on a label boundary
    ("example.com", 80, "www.example.com", False),
    ("example.com.", 80, "example.com", True),            # trailing dots ignored
    ("example.com", 80, "example.com.", True),
    ("example.com", 80, "other.test, example.com", True),
    ("example.com", 80, "other.test example.com", True),  # blanks separate too
    ("example.com", 80, ",,other.test,,", False),
    ("example.com", 80, "", False),
    ("example.com", 80, "other.test,*", True),
    ("example.com", 8080, "example.com:8080", True),      # a port restricts the entry
    ("example.com", 80, "example.com:8080", False),
    ("example.com", 80, "example.com:http", False),       # not a port: never matches
    ("10.1.2.3", 80, "10.0.0.0/8", True),                 # CIDR
    ("10.1.2.3", 80, "10.1.2.3", True),
    ("10.1.2.3", 80, "10.1.2.4", False),
    ("11.1.2.3", 80, "10.0.0.0/8", False),
    ("10.1.2.3", 80, "10.1.2.3:80", True),
    ("10.1.2.3", 443, "10.1.2.3:80", False),
    ("10.1.2.3", 80, "example.com", False),               # a name never matches an IP
    ("2001:db8::1", 80, "2001:db8::/32", True),
    ("2001:db8::1", 80, "[2001:db8::1]:80", True),
    ("2001:db8::1", 80, "[2001:db8::1]:81", False),
    ("2001:db8::1", 80, "2001:db8::1", True),
    ("2001:db8::1", 80, "10.0.0.0/8", False),              # other IP version
    ("10.1.2.3", 80, "::/0", False),
    ("example.com", 80, "[broken", False),
])
def test_no_proxy(host: str, port: int, no_proxy: str, expected: bool) -> None:
    assert no_proxy_matches(host, port, no_proxy) is expected
    environ = {"all_proxy": P, "NO_PROXY": no_proxy}
    assert (environment_proxy(False, host, port, environ) is None) is expected


@given(st.text(max_size=60), st.text(max_size=40), st.integers(1, 65535))
def test_no_proxy_never_crashes(no_proxy: str, host: str, port: int) -> None:
    assert no_proxy_matches(host, port, no_proxy) in (True, False)


# -- proxy URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("http://proxy.test:3128", ProxyURL("http", "proxy.test", 3128)),
    ("proxy.test:3128", ProxyURL("http", "proxy.test", 3128)),        # no scheme: http
    ("http://proxy.test", ProxyURL("http", "proxy.test", 1080)),      # curl's default
    ("https://proxy.test", ProxyURL("https", "proxy.test", 443)),
    ("HTTPS://Proxy.Test:8443/", ProxyURL("https", "proxy.test", 8443)),
    ("socks5://u:p@proxy.test", ProxyURL("socks5", "proxy.test", 1080, "u", "p")),
    ("socks5h://[::1]:1081", ProxyURL("socks5h", "::1", 1081)),
    ("socks4://proxy.test:1", ProxyURL("socks4", "proxy.test", 1)),
    ("socks4a://proxy.test:1", ProxyURL("socks4a", "proxy.test", 1)),
    ("http://a%40b:p%3Aw%2F%25@proxy.test:1", ProxyURL("http", "proxy.test", 1, "a@b", "p:w/%")),
    ("http://user@proxy.test:1", ProxyURL("http", "proxy.test", 1, "user", None)),
    ("  http://proxy.test:1  ", ProxyURL("http", "proxy.test", 1)),
])
def test_parse_proxy_url(url: str, expected: ProxyURL) -> None:
    assert parse_proxy_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://proxy.test", "unsupported proxy scheme 'ftp'"),
    ("socks6://proxy.test", "unsupported proxy scheme"),
    ("http://", "no valid host"),
    ("http://:3128", "no valid host"),
    ("http://pro xy:3128", "no valid host"),
    ("http://proxy.test:99999", "bad port"),
    ("http://proxy.test:port", "bad port"),
])
def test_bad_proxy_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_proxy_url(url)


def test_bad_proxy_url_hides_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_proxy_url("ftp://user:hunter2@proxy.test")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(parse_proxy_url("http://user:hunter2@proxy.test"))


def test_shown_never_has_credentials() -> None:
    assert parse_proxy_url("socks5://u:p@[::1]:9").shown == "socks5://[::1]:9"


# -- CONNECT ---------------------------------------------------------------------------


def test_connect_request() -> None:
    proxy = parse_proxy_url("http://proxy.test:3128")
    assert connect_request("example.com", 443, proxy) == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert connect_request("::1", 80, proxy) == (
        b"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")


def test_connect_request_with_credentials() -> None:
    proxy = parse_proxy_url("http://Aladdin:open%20sesame@proxy.test:3128")
    request = connect_request("example.com", 443, proxy)
    # RFC 7617's example
    assert b"Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n" in request
    proxy = parse_proxy_url("http://user@proxy.test:3128")   # no password: empty
    assert b"Basic dXNlcjo=\r\n" in connect_request("example.com", 443, proxy)
    proxy = parse_proxy_url("http://%C3%A9:%E2%82%AC@proxy.test")  # UTF-8
    assert b"Basic w6k64oKs\r\n" in connect_request("example.com", 443, proxy)


@pytest.mark.parametrize("host", ["exa mple.com", "example.com\r\nX: y", "a/b", ""])
def test_connect_request_refuses_bad_hosts(host: str) -> None:
    with pytest.raises(ValueError):
        connect_request(host, 443, parse_proxy_url("http://proxy.test"))


def reply(status: int, reason: str = "", headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, reason, Headers(headers or []))


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_opens_the_tunnel(status: int) -> None:
    check_connect_reply(reply(status), parse_proxy_url("http://p.test"), "h:1")


@pytest.mark.parametrize(("status", "url", "message"), [
    (407, "http://p.test:1", "proxy http://p.test:1 requires authentication "
                            "(407 Proxy Authentication Required); give user:password"),
    (407, "http://u:hunter2@p.test:1", "refused the credentials of 'u'"),
    (403, "http://p.test:1", "proxy http://p.test:1 refused a tunnel to h:1: 403 Forbidden"),
    (502, "http://p.test:1", "refused a tunnel to h:1: 502 Bad Gateway"),
    (101, "http://p.test:1", "refused a tunnel"),
    (301, "http://p.test:1", "refused a tunnel"),
])
def test_refusals(status: int, url: str, message: str) -> None:
    from http import HTTPStatus
    response = reply(status, HTTPStatus(status).phrase, [("Via", "x")])
    with pytest.raises(gws.ProxyError) as info:
        check_connect_reply(response, parse_proxy_url(url), "h:1")
    error = info.value
    assert message in str(error)
    assert (error.status, error.headers) == (status, [("Via", "x")])
    assert error.proxy == "http://p.test:1"
    assert "hunter2" not in str(error)


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n", b"200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", b"HTTP/1.1 200 OK\nX: y\r\n\r\n",
])
def test_malformed_replies(head: bytes) -> None:
    with pytest.raises(gws.ProxyError, match="malformed reply from proxy") as info:
        parse_connect_reply(head, parse_proxy_url("http://p.test:1"), 100)
    assert info.value.status == 0


def test_reply_parsed() -> None:
    response = parse_connect_reply(b"HTTP/1.0 200 Connection established\r\nVia: x\r\n\r\n",
                                   parse_proxy_url("http://p.test:1"), 100)
    assert (response.status, response.reason, response.headers.get("via")) == (
        200, "Connection established", "x")


# -- SOCKS refusals --------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message", "code", "status", "text"), [
    ("socks5://p.test:1", "No acceptable authentication methods were offered", None, 407,
     "requires authentication"),
    ("socks5://u:x@p.test:1", "Username and password authentication failure", None, 407,
     "refused the credentials of 'u'"),
    ("socks5://p.test:1", "Connection not allowed by ruleset", 2, 403, "refused a tunnel"),
    ("socks5h://p.test:1", "Host unreachable", 4, 502, "Host unreachable"),
    ("socks5://p.test:1", "Connection refused", 5, 502, "refused a tunnel to h:1"),
    ("socks4://p.test:1", "Request rejected or failed", 0x5B, 502, "rejected"),
    ("socks4://p.test:1", "Unexpected reply version", None, 0, "Unexpected reply version"),
])
def test_socks_failures(url: str, message: str, code: int | None, status: int,
                        text: str) -> None:
    error = socks_failure(parse_proxy_url(url), "h:1", message, code)
    assert isinstance(error, gws.HandshakeError)
    assert (error.status, error.socks_code) == (status, code)
    assert text in str(error)
