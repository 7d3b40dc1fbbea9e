"""What an application answers with: ``Response`` (plain HTTP, or a refused handshake)
and ``Accept`` (an accepted handshake with headers of its own).

Headers are validated when these objects are made, so a CR or LF that came from user
input can never split a response (header injection): it is a ``ValueError`` at the
line that built the response, not a malformed message on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from ._http import header_items

#: Headers as the application may pass them.
HeaderInput = Union[Mapping[str, str], Sequence[tuple[str, str]], None]


@dataclass(frozen=True)
class Response:
    """A complete HTTP response: the answer of ``Config.http_handler`` to a plain
    request, or of ``Config.authorize`` to refuse a handshake.

    Every response closes its connection (``Connection: close``: one request per
    connection); ``Content-Length`` is always the body's and ``Content-Type`` defaults
    to ``text/plain; charset=utf-8``. A ``str`` body is UTF-8 encoded.

    Raises:
        ValueError: a status outside 200-599, or a header name that is not an HTTP
            token or a value with CR, LF or another control character.
    """

    status: int
    headers: HeaderInput = None
    body: bytes | str = b""
    _items: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 200 <= self.status <= 599:
            raise ValueError(f"a response status is 200 to 599, got {self.status!r}")
        object.__setattr__(self, "_items", tuple(header_items(self.headers)))
        if isinstance(self.body, str):
            object.__setattr__(self, "body", self.body.encode("utf-8"))

    @property
    def header_items(self) -> list[tuple[str, str]]:
        """The headers as validated (name, value) pairs."""
        return list(self._items)

    @property
    def body_bytes(self) -> bytes:
        assert isinstance(self.body, bytes)
        return self.body


@dataclass(frozen=True)
class Rejection(Response):
    """The earlier name of ``Response`` for ``authorize`` (its status defaults to 403)."""

    status: int = 403


@dataclass(frozen=True)
class Accept:
    """What ``Config.authorize`` returns to accept a handshake with extra headers in
    this connection's 101 response (``Set-Cookie``, say).

    Raises:
        ValueError: as ``Response`` for an invalid header.
    """

    headers: HeaderInput = None
    _items: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_items", tuple(header_items(self.headers)))

    @property
    def header_items(self) -> list[tuple[str, str]]:
        return list(self._items)
