"""trio-gws: an event-driven, RFC-strict WebSocket server and client for Trio.

The Python port of Go's gws: one ``EventHandler`` interface, one ``Conn``, every option
in one ``Config``. See DESIGN.md and the README for the contract.
"""

from ._broadcast import Broadcaster
from ._client import connect, open_conn, parse_url
from ._config import Config
from ._conn import Conn
from ._errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    HubError,
    HubUnavailableError,
    InvalidTextError,
    MessageTooLargeError,
    ProtocolError,
    ProxyError,
    WebSocketError,
    WebSocketTimeoutError,
    WriteQueueFullError,
)
from ._handler import EventHandler
from ._handshake import Request
from ._hub import Hub, LocalHub, open_hub
from ._http import Headers
from ._lifecycle import State
from ._listeners import UnixListener, open_tcp_listeners, open_unix_listener
from ._reconnect import Backoff, ReconnectingClient, connect_forever
from ._response import Accept, Rejection, Response
from ._server import ConnectionsView, Server, serve, serve_listeners
from ._streams import MessageStream, MessageWriter, StreamAbortedError
from ._upgrader import Upgrader
from ._types import CloseCode, Message, Opcode

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "Backoff",
    "Broadcaster",
    "CloseCode",
    "Config",
    "Conn",
    "ConnectionsView",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "EventHandler",
    "HandshakeError",
    "Headers",
    "Hub",
    "HubError",
    "HubUnavailableError",
    "InvalidTextError",
    "LocalHub",
    "Message",
    "MessageStream",
    "MessageTooLargeError",
    "MessageWriter",
    "Opcode",
    "ProtocolError",
    "ProxyError",
    "ReconnectingClient",
    "Rejection",
    "Request",
    "Response",
    "Server",
    "State",
    "StreamAbortedError",
    "UnixListener",
    "Upgrader",
    "WebSocketError",
    "WebSocketTimeoutError",
    "WriteQueueFullError",
    "connect",
    "connect_forever",
    "open_conn",
    "open_hub",
    "open_tcp_listeners",
    "open_unix_listener",
    "parse_url",
    "serve",
    "serve_listeners",
]
