"""The connection lifecycle (trio_gws._lifecycle): every transition, pure, no I/O."""

from __future__ import annotations

import pytest

from trio_gws import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ProtocolError,
    State,
    WebSocketTimeoutError,
    WriteQueueFullError,
)
from trio_gws._errors import HandlerError, InvalidTextError, MessageTooLargeError
from trio_gws._lifecycle import MAX_REASON_BYTES, Lifecycle, build_close_payload


def test_a_new_connection_is_open_and_writable() -> None:
    life = Lifecycle()
    assert life.state is State.OPEN
    life.check_writable()
    life.check_sendable()
    assert not life.closing and life.clean and not life.ended


def test_we_close_then_the_peer_answers() -> None:
    life = Lifecycle()
    assert life.local_close(1000, "bye") == b"\x03\xe8bye"
    assert life.state is State.LOCAL_CLOSING and life.closing
    with pytest.raises(ConnectionClosedOK) as info:
        life.check_writable()
    assert info.value.code == 1000
    life.check_sendable()  # frames written before the close may still go out...
    assert life.sending_close()
    with pytest.raises(ConnectionClosedOK):
        life.check_sendable()  # ...but none after it
    assert not life.sending_close()  # a duplicate sends nothing
    life.remote_close(1000, b"ok")
    assert life.state is State.CLOSED
    assert life.reply_payload() is None  # ours was the answer
    life.end()
    assert life.ended
    with pytest.raises(ConnectionClosedOK) as info:
        life.check_writable()
    assert (info.value.code, info.value.reason) == (1000, b"ok")


def test_the_peer_closes_then_we_answer() -> None:
    life = Lifecycle()
    life.remote_close(1001, b"away")
    assert life.state is State.REMOTE_CLOSING
    life.check_writable()  # we may finish what we were sending (RFC 6455 5.5.1)
    assert not life.closing
    assert life.reply_payload() == b"\x03\xe9"  # the code echoed, no reason
    assert life.state is State.CLOSED and life.closing
    assert life.reply_payload() is None  # only once
    with pytest.raises(ConnectionClosedOK) as info:
        life.check_writable()
    assert (info.value.code, info.value.reason) == (1001, b"away")


def test_a_close_frame_without_code_is_answered_by_an_empty_one() -> None:
    life = Lifecycle()
    life.remote_close(1005, b"")
    assert life.reply_payload() == b""
    assert isinstance(life.closed_error(), ConnectionClosedOK)


def test_the_application_may_answer_the_peers_close_itself() -> None:
    life = Lifecycle()
    life.remote_close(1000, b"")
    assert life.local_close(4000, "mine") == b"\x0f\xa0mine"
    assert life.state is State.CLOSED
    assert life.reply_payload() is None


@pytest.mark.parametrize("first", [1000, 1001, 4000])
def test_a_second_close_is_refused(first: int) -> None:
    life = Lifecycle()
    life.local_close(first)
    with pytest.raises(ConnectionClosed) as info:
        life.local_close(1000)
    expected = ConnectionClosedOK if first in (1000, 1001) else ConnectionClosedError
    assert type(info.value) is expected
    assert info.value.code == first


def test_closing_after_the_end_is_refused() -> None:
    life = Lifecycle()
    life.end()
    with pytest.raises(ConnectionClosedError) as info:  # no close handshake happened
        life.local_close(1000)
    assert info.value.code == 1006


def test_an_invalid_close_code_is_a_value_error_and_changes_nothing() -> None:
    life = Lifecycle()
    for code in (999, 1004, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError):
            life.local_close(code)
    with pytest.raises(ValueError):
        life.local_close(1000, "x" * (MAX_REASON_BYTES + 1))
    assert life.state is State.OPEN
    assert life.local_close(1005) == b""  # "no status": the empty close frame


@pytest.mark.parametrize(("ours", "theirs", "clean"), [
    (1000, 1000, True), (1001, 1000, True), (1000, 1005, True), (1000, 4000, False),
    (4000, 1000, False), (1002, 1002, False),
])
def test_ok_or_error_follows_every_close_code(ours: int, theirs: int, clean: bool) -> None:
    life = Lifecycle()
    life.local_close(ours)
    life.remote_close(theirs, b"")
    life.end()
    assert life.clean is clean
    assert isinstance(life.closed_error(), ConnectionClosedOK if clean else ConnectionClosedError)


def test_a_failure_waits_for_its_close_frame_before_refusing_writes() -> None:
    """Parallel handlers may answer earlier messages before the failure's close."""
    life = Lifecycle()
    error = ProtocolError("bad frame")
    assert life.fail(error)
    assert life.failure is error and not life.clean
    life.check_writable()  # still OPEN: the close frame is not committed yet
    assert life.owes_failure_close(error)
    assert life.failure_payload(error) == b"\x03\xeabad frame"
    assert life.state is State.LOCAL_CLOSING
    assert not life.owes_failure_close(error) and life.failure_payload(error) is None
    with pytest.raises(ConnectionClosedError) as info:
        life.check_writable()
    assert info.value.code == 1002


def test_the_first_failure_wins() -> None:
    life = Lifecycle()
    first, second = MessageTooLargeError("big"), WebSocketTimeoutError("slow")
    assert life.fail(first)
    assert not life.fail(second)
    assert life.failure is first


def test_an_overflow_refuses_writes_at_once() -> None:
    life = Lifecycle()
    error = WriteQueueFullError("full")
    life.fail(error, refuse_writes=True)
    assert life.state is State.LOCAL_CLOSING
    with pytest.raises(ConnectionClosedError):
        life.check_writable()
    assert life.failure_payload(error) == b"\x03\xf0full"  # 1008, still due


def test_the_peers_close_during_a_failure_gets_the_reply() -> None:
    """Failing (no frame committed yet) when the peer's close arrives: we answer it."""
    life = Lifecycle()
    life.fail(WriteQueueFullError("full"), refuse_writes=True)
    life.remote_close(1000, b"")
    assert life.state is State.REMOTE_CLOSING
    assert life.reply_payload() == b"\x03\xe8"


@pytest.mark.parametrize("error", [
    ProtocolError("p"), InvalidTextError("t"), MessageTooLargeError("m"),
    WebSocketTimeoutError("w"), WriteQueueFullError("q"), HandlerError("h"),
])
def test_every_failure_closes_with_its_own_code(error: ProtocolError) -> None:
    life = Lifecycle()
    life.fail(error)
    payload = life.failure_payload(error)
    assert payload is not None
    assert int.from_bytes(payload[:2], "big") == error.close_code


def test_a_failure_without_close_code_sends_no_close_frame() -> None:
    life = Lifecycle()
    error = ConnectionClosedError("peer vanished")
    assert error.close_code is None
    life.fail(error)
    assert not life.owes_failure_close(error) and life.failure_payload(error) is None


def test_a_broken_transport_ends_everything() -> None:
    life = Lifecycle()
    error = ConnectionClosedError("reset")
    life.transport_broken(error)
    assert life.state is State.CLOSED and life.broken and life.failure is error
    with pytest.raises(ConnectionClosedError):
        life.check_writable()
    with pytest.raises(ConnectionClosedError):
        life.check_sendable()
    assert not life.sending_close()
    assert life.reply_payload() is None
    assert life.failure_payload(ProtocolError("x")) is None
    with pytest.raises(ConnectionClosedError):
        life.local_close(1000)


def test_a_broken_transport_after_the_peers_close_refuses_the_reply() -> None:
    life = Lifecycle()
    life.remote_close(1000, b"")
    life.transport_broken(ConnectionClosedError("reset"))
    assert life.reply_payload() is None


def test_failure_reasons_are_cut_at_a_character_boundary() -> None:
    life = Lifecycle()
    error = ProtocolError("\u20ac" * 100)  # 300 bytes of UTF-8
    life.fail(error)
    payload = life.failure_payload(error)
    assert payload is not None
    reason = payload[2:]
    assert len(reason) <= MAX_REASON_BYTES
    assert reason.decode("utf-8") == "\u20ac" * 41


def test_build_close_payload_truncates_only_when_asked() -> None:
    long = "a" * 200
    with pytest.raises(ValueError):
        build_close_payload(1000, long)
    assert build_close_payload(1000, long, truncate=True) == b"\x03\xe8" + b"a" * 123
    assert build_close_payload(1005) == b""


def test_repr_says_the_state() -> None:
    life = Lifecycle()
    assert "open" in repr(life)
    life.transport_broken(ConnectionClosedError("x"))
    assert "closed broken" in repr(life)
