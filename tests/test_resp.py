"""RESP without I/O (_resp): Redis URLs parsed or refused clearly (a password never
in the message), commands encoded, replies parsed across any split of the bytes."""

from __future__ import annotations

from typing import Any

import pytest

from trio_gws._resp import (
    DEFAULT_PORT,
    ProtocolError,
    RedisAddress,
    ReplyError,
    ReplyParser,
    encode_command,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1", dict(host="127.0.0.1", port=DEFAULT_PORT, db=0, tls=False)),
    ("redis://h:7000/3", dict(host="h", port=7000, db=3)),
    ("rediss://h/1", dict(host="h", tls=True, db=1)),
    ("redis://[::1]:7001", dict(host="::1", port=7001)),
    ("redis://al%40x:p%3Ass@h", dict(username="al@x", password="p:ss")),
    ("redis://:only-password@h", dict(username=None, password="only-password")),
    ("redis://h/2?db=5&user=u&password=pw", dict(db=5, username="u", password="pw")),
    ("unix:///run/redis.sock", dict(path="/run/redis.sock", host=None, db=0)),
    ("unix:///run/redis.sock?db=4&password=pw", dict(path="/run/redis.sock", db=4,
                                                     password="pw")),
])
def test_a_url_gives_its_parts(url: str, expected: dict[str, Any]) -> None:
    address = RedisAddress(url)
    for name, value in expected.items():
        assert getattr(address, name) == value, name


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1", "redis://127.0.0.1:6379/0"),
    ("rediss://user:pw@h:7000/2", "rediss://h:7000/2"),
    ("redis://[::1]", "redis://[::1]:6379/0"),
    ("unix:///tmp/r.sock?db=3&password=pw", "unix:///tmp/r.sock?db=3"),
])
def test_str_never_shows_credentials(url: str, shown: str) -> None:
    assert str(RedisAddress(url)) == shown


@pytest.mark.parametrize(("url", "message"), [
    ("http://h:6379", "not a Redis URL"),
    ("redis://", "without a host"),
    ("redis://h:99999", "bad port"),
    ("redis://h:port", "bad port"),
    ("unix://", "without a path"),
    ("redis://h/zero", "database must be a number"),
    ("redis://h/1?db=-1", "database must be a number"),
])
def test_a_bad_url_is_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisAddress(url)


@pytest.mark.parametrize("url", ["redis://u:s3cret@:6379", "redis://u:s3cret@h:x",
                                 "ftp://u:s3cret@h"])
def test_a_refused_url_hides_its_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisAddress(url)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="a Redis URL is a str, not bytes"):
        RedisAddress(b"redis://h")  # type: ignore[arg-type]


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command("SET", b"k\r\n", 12) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n")
    assert encode_command("PUBLISH", "t\u00e9", memoryview(b"x")) == (
        b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nt\xc3\xa9\r\n$1\r\nx\r\n")


def test_replies_come_whole_however_the_bytes_are_split() -> None:
    wire = (b"+OK\r\n:42\r\n$5\r\nhello\r\n*2\r\n$1\r\na\r\n:1\r\n$-1\r\n"
            b"-ERR wrong\r\n%1\r\n+k\r\n:7\r\n")
    expected = [b"OK", 42, b"hello", [b"a", 1], None, ReplyError("ERR wrong"), {b"k": 7}]
    for size in (1, 2, 5, len(wire)):
        parser = ReplyParser()
        got = []
        for start in range(0, len(wire), size):
            parser.feed(wire[start:start + size])
            while (reply := parser.next_reply()) is not False:
                got.append(reply)
        # an error reply is returned, not raised: the replies after it are not lost
        assert [str(r) if isinstance(r, ReplyError) else r for r in got] == [
            str(e) if isinstance(e, ReplyError) else e for e in expected]
        assert isinstance(got[5], ReplyError)


def test_bytes_that_are_not_resp_raise_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()
