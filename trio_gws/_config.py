"""``Config``: every option of a server or client in one plain object (as gws's Option)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from ._http import check_names, check_origins

if TYPE_CHECKING:
    from ._handshake import Request
    from ._response import Accept, Response

#: ``authorize(request, session)`` returns True (or None) to accept, an ``Accept`` to
#: accept with extra 101 headers, False to reject with 403, or a ``Response`` to choose
#: the status, headers and body; it may be sync or async.
AuthorizeResult = Union[bool, "Response", "Accept", None]
Authorize = Callable[
    ["Request", MutableMapping[str, object]],
    Union[AuthorizeResult, Awaitable[AuthorizeResult]],
]

#: ``http_handler(request)`` answers a request that is not a WebSocket upgrade with a
#: ``Response``, or None for the default (426 Upgrade Required); sync or async.
HTTPHandler = Callable[
    ["Request"], Union["Response", None, Awaitable[Union["Response", None]]]
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    """Options shared by server and client; field names are gws's in snake_case.

    Defaults are strict: text is validated, messages are capped at 16 MiB, every wait
    is bounded. Frozen, because every connection of a server shares it: derive a
    variant with ``dataclasses.replace(config, field=value)``.

    Raises:
        ValueError: an option out of its range (checked when the Config is made).
    """

    # permessage-deflate (RFC 7692)
    compress_enabled: bool = False
    compress_level: int = 1
    compress_threshold: int = 512
    server_context_takeover: bool = True
    client_context_takeover: bool = True
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12

    # reading
    check_text_encoding: bool = True
    max_content_length: int = 16 * MiB
    read_buffer_size: int = 64 * 1024

    # opening handshake limits
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100

    # time bounds (seconds)
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    ping_interval: float | None = None
    ping_timeout: float | None = None

    # writing and concurrency
    write_queue_size: int = 1024
    #: Bytes that may wait in a connection's write_nowait queue (and its corked frames).
    write_buffer_limit: int = 4 * MiB
    parallel_enabled: bool = False
    parallel_limit: int = 8

    # handshake policy
    subprotocols: Sequence[str] = ()
    response_header: Mapping[str, str] | Sequence[tuple[str, str]] = field(
        default_factory=dict
    )
    authorize: Authorize | None = None
    #: Allowed ``Origin`` values (None in it: requests without Origin); others get 403.
    origins: Sequence[str | None] | None = None

    # serving in production (server side)
    http_handler: HTTPHandler | None = None
    max_connections: int | None = None
    max_connections_per_ip: int | None = None

    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("trio_gws"))

    def __post_init__(self) -> None:
        if self.max_content_length <= 0:
            raise ValueError("max_content_length must be positive")
        if self.read_buffer_size < 1024:
            raise ValueError("read_buffer_size must be at least 1024")
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if not 8 <= bits <= 15:
                raise ValueError(f"{name} must be between 8 and 15, got {bits}")
        if not -1 <= self.compress_level <= 9:
            raise ValueError("compress_level must be between -1 and 9")
        if self.compress_threshold < 0:
            raise ValueError("compress_threshold must not be negative")
        if self.write_queue_size < 1:
            raise ValueError("write_queue_size must be at least 1")
        if self.write_buffer_limit < 1:
            raise ValueError("write_buffer_limit must be at least 1")
        if self.parallel_limit < 1:
            raise ValueError("parallel_limit must be at least 1")
        # Every wait is bounded: a time bound is a finite number of seconds above 0
        # (``not > 0`` also refuses NaN, which no comparison passes); the keepalive's
        # two are that or None (no keepalive), so a bad one is refused here instead
        # of failing each connection's first ping.
        for name in ("handshake_timeout", "close_timeout", "ping_interval", "ping_timeout"):
            seconds = getattr(self, name)
            if seconds is None and name.startswith("ping_"):
                continue
            if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
                hint = " (or None for no keepalive)" if name.startswith("ping_") else ""
                raise ValueError(f"{name} must be a positive, finite number of seconds"
                                 f"{hint}, got {seconds!r}")
        for name in ("max_request_line", "max_header_bytes", "max_header_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_connections", "max_connections_per_ip"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit)")
        if self.origins is not None:
            check_origins(self.origins)
        check_names(self.subprotocols, "subprotocols")
