"""RESP, the Redis protocol, without I/O: commands out as bytes, replies in as values.

Parsing is hiredis's (the C parser the Redis project maintains): a reply is decoded
in C, so a pub/sub message costs one call instead of a Python loop over its parts.
hiredis comes with the ``trio-gws[redis]`` extra; this module is imported only when
a hub talks to Redis, and says which extra is missing when it is.

Replies are ``bytes`` (bulk and simple strings), ``int``, ``list``, ``dict`` (RESP3
maps), ``None``, ``Push`` (RESP3 pushes: a list), and ``ReplyError`` for an error
reply (returned, not raised, so one bad reply in a pipeline does not lose the others).
"""

from __future__ import annotations

from typing import Any, Union
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import hiredis
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise ImportError(
        "talking to Redis needs the redis extra: pip install 'trio-gws[redis]' "
        f"(hiredis is missing: {exc})") from exc

#: What a command argument may be: bytes go as they are, str as UTF-8, int as digits.
Arg = Union[bytes, str, int, float, memoryview]

DEFAULT_PORT = 6379


#: A RESP3 push (pub/sub messages and confirmations on a RESP3 connection): a list.
Push = hiredis.PushNotification


class ReplyError(Exception):
    """Redis answered a command with an error (``-ERR ...``, ``-WRONGTYPE ...``)."""


class ProtocolError(Exception):
    """Redis sent bytes that are not RESP: the connection cannot be trusted any more."""


def encode_command(*args: Arg) -> bytes:
    """One command as RESP (an array of bulk strings)."""
    return bytes(hiredis.pack_command(args))  # type: ignore[arg-type]


class ReplyParser:
    """Bytes from Redis in, complete replies out, in order."""

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._reader.feed(data)  # type: ignore[arg-type]  # any buffer, despite the stub

    def next_reply(self) -> Any:
        """The next complete reply, or ``False`` when more bytes are needed.

        Raises:
            ProtocolError: the bytes are not RESP.
        """
        return self._reader.gets()


class RedisAddress:
    """Where a Redis server is and how to log in, parsed from a URL.

    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), or
    ``unix:///path/to/redis.sock[?db=N&password=...&user=...]``.
    """

    __slots__ = ("db", "host", "password", "path", "port", "tls", "username")

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise TypeError(f"a Redis URL is a str, not {type(url).__name__}")
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.tls = parts.scheme == "rediss"
        self.username: str | None = unquote(parts.username) if parts.username else None
        self.password: str | None = unquote(parts.password) if parts.password else None
        self.host: str | None = None
        self.port = DEFAULT_PORT
        self.path: str | None = None
        db = "0"
        if parts.scheme in ("redis", "rediss"):
            if not parts.hostname:
                raise ValueError(f"Redis URL without a host: {self._shown(url)}")
            self.host = parts.hostname
            try:
                self.port = parts.port or DEFAULT_PORT
            except ValueError:
                raise ValueError(f"Redis URL with a bad port: {self._shown(url)}") from None
            if parts.path.strip("/"):
                db = parts.path.strip("/")
        elif parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"unix:// Redis URL without a path: {url}")
            self.path = parts.path
        else:
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): "
                             f"{self._shown(url)}")
        db = query.get("db", [db])[0]
        if "password" in query:
            self.password = query["password"][0]
        if "user" in query:
            self.username = query["user"][0]
        if not db.isdigit():
            raise ValueError(f"Redis database must be a number, got {db!r}")
        self.db = int(db)

    @staticmethod
    def _shown(url: str) -> str:
        """The URL without its password (it goes into error messages and logs)."""
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{netloc}").geturl()

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"
