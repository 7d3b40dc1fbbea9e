"""Config: every option out of its range is refused when the Config is made, naming
the option, and the edge of each range is accepted."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import pytest
import trio
import trio.testing

import trio_gws as gws
from trio_gws import Config

from helpers import Recorder, server_conn_pair

NAN = math.nan
INF = math.inf

# (option, refused values, the smallest accepted value or values)
RANGES: list[tuple[str, list[Any], list[Any]]] = [
    ("max_content_length", [0, -1], [1]),
    ("read_buffer_size", [1023, 0], [1024]),
    ("server_max_window_bits", [7, 16], [8, 15]),
    ("client_max_window_bits", [7, 16], [8, 15]),
    ("compress_level", [-2, 10], [-1, 0, 9]),
    ("compress_threshold", [-1], [0]),
    ("write_queue_size", [0], [1]),
    ("write_buffer_limit", [0], [1]),
    ("parallel_limit", [0], [1]),
    ("max_request_line", [0, -1], [1]),
    ("max_header_bytes", [0, -1], [1]),
    ("max_header_count", [0, -1], [1]),
    ("max_connections", [0], [None, 1]),
    ("max_connections_per_ip", [0], [None, 1]),
    ("handshake_timeout", [0, -1.0, NAN, INF, None, "5"], [0.001, 10]),
    ("close_timeout", [0, -1.0, NAN, INF, None], [0.001, 5]),
    ("ping_interval", [0, -1.0, NAN, INF], [None, 0.001, 20]),
    ("ping_timeout", [0, -1.0, NAN, INF], [None, 0.001, 10]),
]


@pytest.mark.parametrize(
    ("option", "value"),
    [(option, value) for option, refused, _ in RANGES for value in refused],
    ids=lambda v: repr(v),
)
def test_an_option_out_of_range_is_refused_by_name(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        Config(**{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [(option, value) for option, _, accepted in RANGES for value in accepted],
    ids=lambda v: repr(v),
)
def test_the_edges_of_each_range_are_accepted(option: str, value: Any) -> None:
    assert getattr(Config(**{option: value}), option) == value


def test_a_keepalive_option_says_none_turns_it_off() -> None:
    with pytest.raises(ValueError, match=r"or None for no keepalive\), got -1"):
        Config(ping_interval=-1)


BAD_SUBPROTOCOLS = ["chat", ["a b"], ["x\r\nX-Evil: 1"], [""], ["chat", "chat"],
                    ["\u00e7a"], [b"chat"]]


@pytest.mark.parametrize("names", BAD_SUBPROTOCOLS, ids=repr)
def test_subprotocols_are_distinct_tokens(names: Any) -> None:
    with pytest.raises(ValueError, match="subprotocols"):
        Config(subprotocols=names)


def test_good_subprotocols_are_accepted() -> None:
    assert Config(subprotocols=["chat", "v2.json", "graphql-ws"]).subprotocols[1] == "v2.json"
    assert Config(subprotocols=()).subprotocols == ()


@pytest.mark.parametrize("names", BAD_SUBPROTOCOLS, ids=repr)
async def test_a_client_refuses_bad_subprotocols_before_dialling(names: Any) -> None:
    """Port 1 on 127.0.0.1: nothing listens, so a dial would be an OSError."""
    with pytest.raises(ValueError, match="subprotocols"):
        await gws.connect("ws://127.0.0.1:1/", Recorder(), subprotocols=names)
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="subprotocols"):
            await nursery.start(functools.partial(
                gws.connect_forever, "ws://127.0.0.1:1/", Recorder(), subprotocols=names))


def test_origins_must_not_be_one_string() -> None:
    with pytest.raises(ValueError, match="origins"):
        Config(origins="https://example.com")
    assert Config(origins=["https://example.com", None]).origins is not None


@pytest.mark.parametrize("origin", [
    "https://app.example", "http://127.0.0.1:8000", "http://[::1]:8000",
    "HTTPS://App.Example", "chrome-extension://abcdefgh", "null", None])
def test_origins_as_browsers_send_them_are_accepted(origin: str | None) -> None:
    Config(origins=[origin])


@pytest.mark.parametrize("origin", [
    "https://app.example/", "https://app.example/chat", "app.example",
    "https://user@app.example", "https://app.example?", "https://app.example#",
    "https://", "https://app.example:99999", "https://app.example:port",
    b"https://app.example"])
def test_an_origin_that_could_never_match_is_refused(origin: Any) -> None:
    """Browsers send scheme://host[:port] alone: with a path (even '/') an allowed
    origin would never match, and every browser would get a 403."""
    with pytest.raises(ValueError, match="origin"):
        Config(origins=["https://ok.example", origin])


def test_replace_checks_again() -> None:
    """Configs are derived with dataclasses.replace: a variant is checked too."""
    with pytest.raises(ValueError, match="close_timeout"):
        dataclasses.replace(Config(), close_timeout=-1)


async def test_a_valid_keepalive_still_pings(autojump_clock: trio.testing.MockClock
                                            ) -> None:
    """The edge of the new check: the smallest accepted interval runs the keepalive
    (before the check, a negative one failed every connection's first ping with a
    ValueError out of listen())."""
    conn, peer = server_conn_pair(Recorder(), Config(ping_interval=0.001))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.listen)
        frame = await peer.recv_frame()
        assert frame.opcode == 0x9  # the keepalive's ping
        nursery.cancel_scope.cancel()
