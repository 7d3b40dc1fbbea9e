"""resume_corked is ``yield from`` written out: whatever drives it (Trio sends
values; a driver may also throw in or close) must reach the handler's coroutine
exactly as a plain ``await`` would pass it on, with ``before_blocking`` called at
each block. Driven by hand here, since Trio itself only ever sends."""

from __future__ import annotations

import inspect
import types
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

from trio_gws._stepping import resume_corked


@types.coroutine
def trap(name: str) -> Generator[str, Any, Any]:
    """A stand-in for a Trio trap: yields its name, returns what is sent back."""
    return (yield name)


class Handler:
    """A handler coroutine that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.closed = False

    async def run(self, catch: bool) -> None:
        try:
            self.seen.append(await trap("first"))
            try:
                self.seen.append(await trap("second"))
            except ValueError as exc:
                if not catch:
                    raise
                self.seen.append(f"caught {exc}")
                self.seen.append(await trap("after the catch"))
        except GeneratorExit:
            self.closed = True
            raise


def start(handler: Handler, *, catch: bool = True
          ) -> tuple[Generator[Any, Any, None], list[str], Coroutine[Any, Any, None]]:
    """Step the coroutine once by hand, as Conn does, then wrap it. The coroutine
    is returned too: held, it cannot be finalized (and closed) behind the test."""
    coro = handler.run(catch)
    first = coro.send(None)
    blocks: list[str] = []
    wrapper = resume_corked(coro, first, lambda: blocks.append("block"))
    return wrapper, blocks, coro


def test_values_sent_reach_the_coroutine_and_each_block_is_announced() -> None:
    handler = Handler()
    wrapper, blocks, _coro = start(handler)
    assert wrapper.send(None) == "first" and blocks == ["block"]
    assert wrapper.send("one") == "second" and blocks == ["block"] * 2
    with pytest.raises(StopIteration):
        wrapper.send("two")
    assert handler.seen == ["one", "two"]


def test_an_exception_thrown_in_is_the_coroutine_s_to_handle() -> None:
    handler = Handler()
    wrapper, blocks, _coro = start(handler)
    wrapper.send(None)
    wrapper.send("one")
    assert wrapper.throw(ValueError("boom")) == "after the catch"
    assert blocks == ["block"] * 3  # the trap it reached after catching blocks too
    with pytest.raises(StopIteration):
        wrapper.send("three")
    assert handler.seen == ["one", "caught boom", "three"]


def test_an_exception_the_coroutine_does_not_handle_comes_out() -> None:
    handler = Handler()
    wrapper, _, _coro = start(handler, catch=False)
    wrapper.send(None)
    wrapper.send("one")
    with pytest.raises(ValueError, match="boom"):
        wrapper.throw(ValueError("boom"))
    assert handler.seen == ["one"]


def test_a_throw_that_ends_the_coroutine_ends_the_wrapper() -> None:
    async def returns_on_error() -> None:
        try:
            await trap("only")
        except KeyError:
            return

    coro = returns_on_error()
    wrapper = resume_corked(coro, coro.send(None), lambda: None)
    wrapper.send(None)
    with pytest.raises(StopIteration):
        wrapper.throw(KeyError("done"))


def test_closing_the_wrapper_closes_the_coroutine() -> None:
    handler = Handler()
    wrapper, _, coro = start(handler)
    wrapper.send(None)
    wrapper.close()
    assert handler.closed
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
