"""The lifecycle of a connection: one state, one owner, every transition here.

Pure (no I/O, no trio): ``Conn`` drives it, the writer asks it whether a frame may
go. What moves the state, after RFC 6455 section 7::

    OPEN ─── we close (application, or failing) ──▶ LOCAL_CLOSING ──┐ the peer's
      │                                                              │ close frame
      └─── the peer's close frame ──▶ REMOTE_CLOSING ── our reply ──▶ CLOSED
    any state ── the transport breaks, or the connection ends ──────▶ CLOSED

* ``OPEN``: data flows both ways.
* ``LOCAL_CLOSING``: we are closing: our close frame is committed (queued behind
  what was written before it), or a failure that refuses writes at once (an
  overflowing write queue) was recorded and the frame with its code is due. The
  peer's has not arrived. New writes are refused; frames written before still go.
* ``REMOTE_CLOSING``: the peer's close frame arrived and ours is not committed yet.
  Writes are still allowed (RFC 6455 5.5.1 lets us finish what we were sending, e.g.
  parallel handlers answering earlier messages); the reply closes.
* ``CLOSED``: both close frames are exchanged (or committed), or the transport broke,
  or the connection ended. Nothing new is written.

A failure (the first error recorded in ``failure``) does not move the state by itself:
the connection stops reading, lets parallel handlers finish what they were answering,
then commits the close frame with the failure's code (``failure_payload``), which moves
it. How it ended is told by ``failure`` (None for a clean close handshake) and the
close codes seen: writes refused after a clean close (every close
frame so far 1000, 1001 or without a code, nothing failed) raise
``ConnectionClosedOK``, anything else ``ConnectionClosedError``.

Three facts are kept apart from the state because they are not transitions: whether
our close frame has actually been encoded for the wire (``close_frame_sent``: no frame
may follow it, while frames queued before it may still be sent in LOCAL_CLOSING or
CLOSED), whether the transport is broken (``broken``: nothing can be sent at all), and
whether the connection has ended (``ended``: the stream is closed, the handler told).

Close payloads (RFC 6455 sections 5.5.1 and 7.4) are built and parsed here too, by one
function each, so every close frame we send goes through ``build_close_payload``.
"""

from __future__ import annotations

import enum
import struct

from ._errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidTextError,
    ProtocolError,
    WebSocketError,
)
from ._types import CloseCode

#: Codes an endpoint may put in a close frame. 1004 is reserved, 1005/1006/1015 are
#: only for reporting, 1016-2999 are unassigned protocol codes; 3000-4999 belong to
#: libraries, frameworks and applications.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

#: 125 bytes of control payload (RFC 6455 5.5) minus the 2-byte code.
MAX_REASON_BYTES = 123

#: Close codes of a clean ending (1005: the peer's close frame carried no code).
_CLEAN_CODES = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS})

_pack_code = struct.Struct("!H").pack


class State(enum.Enum):
    """Where a connection is in its lifecycle (see ``trio_gws._lifecycle``)."""

    OPEN = "open"
    LOCAL_CLOSING = "local closing"
    REMOTE_CLOSING = "remote closing"
    CLOSED = "closed"


_OPEN = State.OPEN
_REMOTE_CLOSING = State.REMOTE_CLOSING


# -- close payloads -----------------------------------------------------------------


def is_valid_close_code(code: int) -> bool:
    """True for codes that may appear on the wire."""
    return code in _SENDABLE or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int, bytes]:
    """Return (code, reason) of a received close frame; 1005 when it carries no code.

    Raises:
        ProtocolError: (1002) a 1-byte payload or a code that may not be sent.
        InvalidTextError: (1007) the reason is not UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS, b""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of 1 byte")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    reason = payload[2:]
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTextError("close reason is not valid UTF-8") from None
    return code, reason


def build_close_payload(code: int, reason: bytes | str = b"", *, truncate: bool = False
                        ) -> bytes:
    """The payload of a close frame we send: every one is built here.

    ``code`` 1005 with no reason is the empty close frame ("no status"). ``truncate``
    cuts a long reason at a character boundary (for error messages we make up); without
    it a reason over 123 bytes is the caller's mistake.

    Raises:
        ValueError: a code that may not be sent, or a reason that is too long or not
            UTF-8.
    """
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    if code == CloseCode.NO_STATUS and not reason:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    if truncate and len(reason) > MAX_REASON_BYTES:
        reason = reason[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    if len(reason) > MAX_REASON_BYTES:
        raise ValueError(f"close reason is {len(reason)} bytes, at most {MAX_REASON_BYTES}")
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("close reason must be valid UTF-8") from None
    return _pack_code(code) + reason


# -- the state machine ---------------------------------------------------------------


class Lifecycle:
    """The state of one connection and every transition of it.

    Methods named after events (``local_close``, ``remote_close``, ``fail``,
    ``transport_broken``, ``end``) move the state and refuse what the protocol does not
    allow; ``check_*`` methods answer whether a write may happen now.
    """

    __slots__ = ("state", "close_frame_sent", "broken", "ended", "failure", "sent_code",
                 "peer_code", "peer_reason")

    def __init__(self) -> None:
        self.state = _OPEN
        self.close_frame_sent = False  # our close frame was encoded for the wire
        self.broken = False  # the transport failed (or the stream is closed)
        self.ended = False  # the stream is closed and the handler was told
        self.failure: WebSocketError | None = None  # the first failure recorded
        self.sent_code: int | None = None  # the code of the close frame we committed to
        self.peer_code: int | None = None  # the peer's close frame, once received
        self.peer_reason = b""

    def __repr__(self) -> str:
        return f"<Lifecycle {self.state.value}{' broken' if self.broken else ''}>"

    # -- questions -----------------------------------------------------------------

    def check_writable(self) -> None:
        """May a new frame be written now (at the call)? Raises ConnectionClosed if not."""
        state = self.state
        if (state is _OPEN or state is _REMOTE_CLOSING) and not self.broken:
            return
        raise self.closed_error()

    def check_sendable(self) -> None:
        """May a frame written earlier go on the wire now (its turn came)? Not once the
        transport broke, nor after our close frame."""
        if self.broken or self.close_frame_sent:
            raise self.closed_error()

    @property
    def closing(self) -> bool:
        """True once writes are refused: closing began on our side, or it ended."""
        state = self.state
        return not ((state is _OPEN or state is _REMOTE_CLOSING) and not self.broken)

    def owes_failure_close(self, error: WebSocketError) -> bool:
        """True while failing with ``error`` still calls for a close frame from us."""
        return error.close_code is not None and not self.broken and self.sent_code is None

    @property
    def clean(self) -> bool:
        """True while every close frame so far is a clean one and nothing failed."""
        return (self.failure is None
                and (self.sent_code is None or self.sent_code in _CLEAN_CODES)
                and (self.peer_code is None or self.peer_code in _CLEAN_CODES))

    def closed_error(self) -> ConnectionClosed:
        """The error a refused write raises: OK after a clean close, Error otherwise."""
        if self.peer_code is not None:
            code, reason = self.peer_code, self.peer_reason
        elif self.sent_code is not None:
            code, reason = self.sent_code, b""
        else:
            code, reason = CloseCode.ABNORMAL, b""
        if self.clean and (self.sent_code is not None or self.peer_code is not None):
            return ConnectionClosedOK("the connection is closing or closed", code, reason)
        return ConnectionClosedError("the connection is closing or closed", code, reason)

    # -- transitions -----------------------------------------------------------------

    def local_close(self, code: int, reason: bytes | str = b"") -> bytes:
        """We start closing (or reply to the peer's close) with ``code``: the payload.

        Raises:
            ConnectionClosed: closing already began on our side, or it ended (a second
                close is a mistake the caller hears about).
            ValueError: ``code``/``reason`` may not be sent.
        """
        payload = build_close_payload(code, reason)
        if self.state is _OPEN:
            self.state = State.LOCAL_CLOSING
        elif self.state is _REMOTE_CLOSING and not self.broken and self.sent_code is None:
            self.state = State.CLOSED
        else:
            raise self.closed_error()
        self.sent_code = code
        return payload

    def remote_close(self, code: int, reason: bytes) -> None:
        """The peer's close frame arrived (the reader sees at most one)."""
        self.peer_code, self.peer_reason = code, reason
        if self.state is State.CLOSED:
            return
        # Closing because of a failure whose close frame is not committed yet: that
        # frame becomes the reply.
        self.state = _REMOTE_CLOSING if self.sent_code is None else State.CLOSED

    def reply_payload(self) -> bytes | None:
        """Our answer to the peer's close frame (its code echoed), or None when our own
        close frame is already committed (it is the answer)."""
        if self.sent_code is not None or self.broken:
            return None
        code = self.peer_code if self.peer_code is not None else CloseCode.NO_STATUS
        self.state = State.CLOSED
        self.sent_code = code
        return build_close_payload(code)

    def fail(self, error: WebSocketError, *, refuse_writes: bool = False) -> bool:
        """Record a failure from any task; True if it is the first (it decides the
        close code and what the handler is told). With ``refuse_writes`` new writes
        are refused at once (LOCAL_CLOSING) instead of once the close frame is due."""
        first = self.failure is None
        if first:
            self.failure = error
        if refuse_writes and self.state is _OPEN:
            self.state = State.LOCAL_CLOSING
        return first

    def failure_payload(self, error: WebSocketError) -> bytes | None:
        """Commit to the close frame that fails the connection with ``error``: its
        payload, or None when none can or need be sent (see ``owes_failure_close``)."""
        if not self.owes_failure_close(error):
            return None
        code = error.close_code
        assert code is not None
        self.sent_code = code
        if self.state is not State.CLOSED:
            self.state = State.LOCAL_CLOSING
        return build_close_payload(code, str(error), truncate=True)

    def sending_close(self) -> bool:
        """Our close frame's turn came; False if one already went out (send nothing)."""
        if self.close_frame_sent or self.broken:
            return False
        self.close_frame_sent = True
        return True

    def transport_broken(self, error: WebSocketError) -> None:
        """A send or receive failed: nothing more can be sent."""
        self.broken = True
        if self.failure is None:
            self.failure = error
        self.state = State.CLOSED

    def end(self) -> None:
        """The stream is closed: whatever the state was, it is CLOSED now."""
        self.state = State.CLOSED
        self.broken = True
        self.ended = True
