"""Stepping a handler coroutine by hand, to flush corked writes before it blocks.

``Conn`` calls ``coro.send(None)`` itself: most handlers (an echo, a corked write)
finish right there, with no wrapper at all. One that yields a Trio trap is about to
block; ``resume_corked`` then takes over the awaiting, giving the writer a chance to
schedule its flush at every such point.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any


@types.coroutine
def resume_corked(coro: Coroutine[Any, Any, None], trap: Any,
                   before_blocking: Callable[[], None]) -> Generator[Any, Any, None]:
    """Finish awaiting ``coro``, which just yielded ``trap``, calling
    ``before_blocking()`` each time it is about to block.

    This is ``yield from`` written out: each value ``coro`` yields is a Trio trap on
    its way to the scheduler, i.e. the task is about to block. ``before_blocking``
    must not await (the trap's bookkeeping is already done): it only schedules work.
    """
    while True:
        before_blocking()
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                trap = coro.send(value)
            except StopIteration:
                return
