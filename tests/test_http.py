"""Bounded HTTP/1.1 head parsing (``_http``)."""

from __future__ import annotations

import pytest

from trio_gws._errors import HandshakeError
from trio_gws._http import (
    Headers,
    build_head,
    find_head_end,
    header_items,
    parse_head,
    status_phrase,
)

REQUEST = (
    b"GET /chat?x=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

# -- find_head_end ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        pytest.param(b"", -1, id="empty"),
        pytest.param(b"GET / HTTP/1.1", -1, id="partial-line"),
        pytest.param(b"GET / HTTP/1.1\r\n", -1, id="line-only"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", -1, id="no-blank-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r", -1, id="blank-line-partial"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 18, id="no-headers"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, id="one-header"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x81\x80rest", 27, id="with-trailing-data"),
        pytest.param(REQUEST, len(REQUEST), id="rfc-request"),
        pytest.param(b"GET / HTTP/1.1\n\nHost: a\r\n", -1, id="bare-lf-is-not-an-end"),
    ],
)
def test_find_head_end(buf: bytes, expected: int) -> None:
    assert find_head_end(buf, 100, 200) == expected
    assert find_head_end(bytearray(buf), 100, 200) == expected


@pytest.mark.parametrize(
    ("buf", "status"),
    [
        pytest.param(b"G" * 21, 414, id="incomplete-line-too-long"),
        pytest.param(b"G" * 21 + b"\r", 414, id="incomplete-line-too-long-with-cr"),
        pytest.param(b"GET /" + b"a" * 16 + b"\r\n", 414, id="line-too-long-with-crlf"),
        pytest.param(b"GET /" + b"a" * 16 + b"\r\n\r\n", 414, id="complete-line-too-long"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 28, 431,
                     id="incomplete-headers-too-large"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 22 + b"\r\n\r\n", 431,
                     id="complete-headers-one-byte-too-large"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 10, 431,
                     id="incomplete-many-headers-too-large"),
    ],
)
def test_find_head_end_limits(buf: bytes, status: int) -> None:
    # request line at most 20 bytes, header block at most 30 bytes after it
    with pytest.raises(HandshakeError) as info:
        find_head_end(buf, 20, 30)
    assert info.value.status == status


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"G" * 20, id="line-at-limit-incomplete"),
        pytest.param(b"G" * 20 + b"\r", id="line-at-limit-cr-pending"),
        pytest.param(b"G" * 20 + b"\r\n", id="line-at-limit-crlf"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 21 + b"\r\n\r",
                     id="headers-at-limit-incomplete"),
    ],
)
def test_find_head_end_at_the_limits_waits(buf: bytes) -> None:
    assert find_head_end(buf, 20, 30) == -1


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"G" * 20 + b"\r\n\r\n", id="line-at-limit"),
        # 30 bytes from the first CRLF through the blank line
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 21 + b"\r\n\r\n",
                     id="headers-at-limit"),
    ],
)
def test_find_head_end_at_the_limits_accepts_every_prefix(head: bytes) -> None:
    for cut in range(len(head)):
        assert find_head_end(head[:cut], 20, 30) == -1, cut
    assert find_head_end(head, 20, 30) == len(head)


# -- parse_head ---------------------------------------------------------------------


def test_parse_head_rfc_request() -> None:
    start, headers = parse_head(REQUEST, 100)
    assert start == "GET /chat?x=1 HTTP/1.1"
    assert headers.items() == [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        pytest.param(b"Host: a", "Host", "a", id="simple"),
        pytest.param(b"Host:a", "Host", "a", id="no-space"),
        pytest.param(b"Host: \t a \t ", "Host", "a", id="ows-stripped"),
        pytest.param(b"X-Empty:", "X-Empty", "", id="empty-value"),
        pytest.param(b"X-Empty:   ", "X-Empty", "", id="blank-value"),
        pytest.param(b"X: a:b:c", "X", "a:b:c", id="colons-in-value"),
        pytest.param(b"X: a\tb", "X", "a\tb", id="inner-tab"),
        pytest.param(b"X: caf\xe9", "X", "caf\xe9", id="obs-text-latin1"),
        pytest.param(b"!#$%&'*+-.^_`|~09Az: v", "!#$%&'*+-.^_`|~09Az", "v", id="all-tchars"),
    ],
)
def test_parse_head_header_lines(line: bytes, name: str, value: str) -> None:
    start, headers = parse_head(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n", 100)
    assert start == "GET / HTTP/1.1"
    assert headers.items() == [(name, value)]


@pytest.mark.parametrize(
    ("head", "status", "match"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n continued\r\n\r\n", 400, "folding",
                     id="obs-fold-space"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\tcontinued\r\n\r\n", 400, "folding",
                     id="obs-fold-tab"),
        pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "folding",
                     id="leading-space-first-header"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "malformed",
                     id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400, "malformed", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\n: a\r\n\r\n", 400, "malformed", id="empty-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost\r\n\r\n", 400, "malformed", id="no-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nH(st: a\r\n\r\n", 400, "malformed", id="separator-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\nH\xe9st: a\r\n\r\n", 400, "malformed", id="non-ascii-name"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, "control", id="nul-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", 400, "control", id="esc-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", 400, "control", id="del-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400, "bare CR", id="bare-cr-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", 400, "bare CR", id="bare-lf-in-value"),
        pytest.param(b"GET / HTTP/1.1\nX: a\r\n\r\n", 400, "bare CR", id="bare-lf-line-end"),
        pytest.param(b"GET /\r HTTP/1.1\r\n\r\n", 400, "bare CR", id="bare-cr-in-start-line"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 4 + b"\r\n", 431, "more than 3",
                     id="too-many-headers"),
    ],
)
def test_parse_head_errors(head: bytes, status: int, match: str) -> None:
    with pytest.raises(HandshakeError, match=match) as info:
        parse_head(head, 3)
    assert info.value.status == status


def test_parse_head_header_count_at_limit() -> None:
    _, headers = parse_head(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 3 + b"\r\n", 3)
    assert len(headers) == 3
    assert headers.get_all("x") == ["v", "v", "v"]


def test_parse_head_start_line_is_latin1() -> None:
    start, headers = parse_head(b"GET /caf\xe9 HTTP/1.1\r\n\r\n", 10)
    assert start == "GET /caf\xe9 HTTP/1.1"
    assert len(headers) == 0


# -- Headers ------------------------------------------------------------------------


def test_headers_case_insensitive_and_multi_valued() -> None:
    headers = Headers([("Host", "a"), ("X-Multi", "1"), ("x-multi", "2"), ("X-MULTI", "3")])
    assert headers.get("HOST") == "a"
    assert headers.get("host") == "a"
    assert headers.get("x-multi") == "1"
    assert headers.get_all("X-Multi") == ["1", "2", "3"]
    assert headers.get("missing") is None
    assert headers.get("missing", "default") == "default"
    assert headers.get_all("missing") == []
    assert "hOsT" in headers
    assert "missing" not in headers
    assert 42 not in headers
    assert len(headers) == 4
    assert list(headers) == [("Host", "a"), ("X-Multi", "1"), ("x-multi", "2"), ("X-MULTI", "3")]
    assert "X-Multi" in repr(headers)


def test_headers_add_and_copies() -> None:
    headers = Headers()
    assert len(headers) == 0 and headers.items() == []
    headers.add("A", "1")
    items = headers.items()
    items.append(("B", "2"))
    values = headers.get_all("a")
    values.append("x")
    assert headers.items() == [("A", "1")]  # callers get copies
    assert headers.get_all("A") == ["1"]


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        pytest.param(["Upgrade"], ["upgrade"], id="single"),
        pytest.param(["keep-alive, Upgrade"], ["keep-alive", "upgrade"], id="list"),
        pytest.param(["keep-alive", "UPGRADE"], ["keep-alive", "upgrade"], id="repeated-field"),
        pytest.param([" a ,, b ,"], ["a", "b"], id="empty-elements-dropped"),
        pytest.param([""], [], id="empty-value"),
        pytest.param([], [], id="absent"),
    ],
)
def test_headers_tokens(values: list[str], tokens: list[str]) -> None:
    headers = Headers([("Connection", v) for v in values])
    assert headers.tokens("connection") == tokens


# -- header_items -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(None, [], id="none"),
        pytest.param({}, [], id="empty-dict"),
        pytest.param({"X-A": "1", "X-B": "2"}, [("X-A", "1"), ("X-B", "2")], id="dict"),
        pytest.param([("X-A", "1"), ("X-A", "2")], [("X-A", "1"), ("X-A", "2")], id="pairs"),
        pytest.param(Headers([("X-A", "1")]), [("X-A", "1")], id="headers"),
        pytest.param({"X": "caf\xe9\tok"}, [("X", "caf\xe9\tok")], id="latin1-and-tab"),
        pytest.param({"X": ""}, [("X", "")], id="empty-value"),
    ],
)
def test_header_items(given: object, expected: list[tuple[str, str]]) -> None:
    assert header_items(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({"": "v"}, id="empty-name"),
        pytest.param({"X Y": "v"}, id="space-in-name"),
        pytest.param({"X:": "v"}, id="colon-in-name"),
        pytest.param({"Xé": "v"}, id="non-token-name"),
        pytest.param({"X€": "v"}, id="non-latin1-name"),
        pytest.param({"X": "a\r\nInjected: yes"}, id="crlf-injection"),
        pytest.param({"X": "a\nb"}, id="lf"),
        pytest.param({"X": "a\x00b"}, id="nul"),
        pytest.param({"X": "a\x7f"}, id="del"),
        pytest.param({"X": "€"}, id="non-latin1-value"),
        pytest.param([("Ok", "1"), ("Bad Name", "2")], id="second-pair-bad"),
    ],
)
def test_header_items_rejects(given: object) -> None:
    with pytest.raises(ValueError):
        header_items(given)  # type: ignore[arg-type]


def test_header_items_output_always_encodes() -> None:
    pairs = header_items({"X-A": "caf\xe9", "X-B": "v"})
    assert build_head("GET / HTTP/1.1", pairs) == (
        b"GET / HTTP/1.1\r\nX-A: caf\xe9\r\nX-B: v\r\n\r\n"
    )


# -- build_head / status_phrase ------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "headers", "expected"),
    [
        pytest.param("HTTP/1.1 200 OK", [], b"HTTP/1.1 200 OK\r\n\r\n", id="no-headers"),
        pytest.param("GET / HTTP/1.1", [("Host", "a"), ("X", "1")],
                     b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n", id="headers"),
    ],
)
def test_build_head(start: str, headers: list[tuple[str, str]], expected: bytes) -> None:
    assert build_head(start, headers) == expected
    if headers:
        parsed_start, parsed = parse_head(expected, 10)
        assert (parsed_start, parsed.items()) == (start, headers)


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(101, "Switching Protocols"), (400, "Bad Request"), (403, "Forbidden"),
     (426, "Upgrade Required"), (431, "Request Header Fields Too Large"), (599, "Unknown")],
    ids=str,
)
def test_status_phrase(status: int, phrase: str) -> None:
    assert status_phrase(status) == phrase
