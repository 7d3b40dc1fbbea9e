"""trio-gws: an event-driven, RFC-strict WebSocket server and client for Trio.

The Python port of Go's gws: one ``EventHandler`` interface, one ``Conn``, every option
in one ``Config``. See DESIGN.md and the README for the contract.
"""

from ._broadcast import Broadcaster
from ._client import connect, open_conn, parse_url
from ._config import Config
from ._conn import Conn
from ._errors import (
    ConnectionClosedError,
    HandlerError,
    HandshakeError,
    InvalidTextError,
    MessageTooLargeError,
    ProtocolError,
    ProxyError,
    WebSocketError,
    WebSocketTimeoutError,
    WriteQueueFullError,
)
from ._handler import EventHandler
from ._handshake import Rejection, Request
from ._http import Headers
from ._reconnect import Backoff, ReconnectingClient, connect_forever
from ._server import Upgrader, serve
from ._types import CloseCode, Message, Opcode

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Broadcaster",
    "CloseCode",
    "Config",
    "Conn",
    "ConnectionClosedError",
    "EventHandler",
    "HandlerError",
    "HandshakeError",
    "Headers",
    "InvalidTextError",
    "Message",
    "MessageTooLargeError",
    "Opcode",
    "ProtocolError",
    "ProxyError",
    "ReconnectingClient",
    "Rejection",
    "Request",
    "Upgrader",
    "WebSocketError",
    "WebSocketTimeoutError",
    "WriteQueueFullError",
    "connect",
    "connect_forever",
    "open_conn",
    "parse_url",
    "serve",
]
