"""What every fuzz target shares: reading the fuzzer's bytes, and running under atheris.

A target is a module ``fuzz_<name>.py`` with one function ``check(data: bytes)``: it
raises (anything but the exceptions the API documents) or fails an ``assert`` when an
invariant is broken, and returns otherwise. ``check`` is plain Python, so the corpus
replay in ``tests/test_fuzz_corpus.py`` runs it without atheris.

The fuzzer's bytes carry their own configuration: a target takes a few leading bytes
with :class:`Input` to pick options (which side, which limits, where to split the
stream) and treats the rest as the wire data. Keeping the choices inside the input
makes every corpus entry a complete, replayable test case.
"""

from __future__ import annotations

import gc
import importlib
import os
import shlex
import sys
import types
from collections.abc import Callable, Iterator, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ("reader", "http_server", "handshake_client", "extensions", "close", "utf8")
#: libFuzzer's -max_len per target unless given: room for a few frames or a full head,
#: small enough to keep the executions per second up.
MAX_LEN = {"reader": 8192, "http_server": 4096, "handshake_client": 4096,
           "extensions": 1024, "close": 256, "utf8": 1024}


def _add_paths() -> None:
    # The targets import each other's helpers and the independent frame parser of
    # tests/helpers.py (the oracle), whichever way they were started.
    for path in (HERE, os.path.join(ROOT, "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)


_add_paths()


class Input:
    """Consumes the fuzzer's bytes from the front; past the end every read is 0."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def sizes(self) -> list[int]:
        """A length byte (mod 32) then that many chunk sizes, 0 meaning an empty chunk."""
        count = self.byte() % 32
        return [self.byte() for _ in range(count)]

    def rest(self) -> bytes:
        tail = self.data[self.pos:]
        self.pos = len(self.data)
        return tail


def split(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    """``data`` cut after each of ``sizes`` in turn (0: an empty piece), the rest last.

    The pieces always join back to ``data``; the last piece may be empty.
    """
    pieces = []
    pos = 0
    for size in sizes:
        pieces.append(data[pos:pos + size])
        pos = min(pos + size, len(data))
    pieces.append(data[pos:])
    return pieces


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i:i + 1]


# -- running under atheris ------------------------------------------------------------


def load(name: str) -> types.ModuleType:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; targets: {', '.join(TARGETS)}")
    return importlib.import_module(f"fuzz_{name}")


def _instrument(atheris: types.ModuleType, target: types.ModuleType) -> int:
    """Add coverage instrumentation to the library's functions and the target's own.

    The target module was imported normally (so its replay needs no atheris);
    instrumenting the already loaded functions afterwards gives the same coverage
    feedback as an instrumenting import, restricted to the code under test and the
    invariant checks (whose branches are worth reaching too), not trio or the stdlib.
    """
    wanted = ("trio_gws", target.__name__, "_oracle", "_harness")
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and (obj.__module__ or "").startswith(wanted):
            atheris.instrument_func(obj)
            count += 1
    return count


def main(argv: list[str]) -> None:
    """``run.py TARGET [libFuzzer options] [corpus dirs]``."""
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(f"usage: {argv[0]} TARGET [libFuzzer options] [corpus dirs]\n"
                         f"targets: {', '.join(TARGETS)}")
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed: pip install -e '.[fuzz]'") from None
    target = load(argv[1])
    check: Callable[[bytes], None] = target.check
    count = _instrument(atheris, target)
    print(f"INFO: fuzz target {argv[1]}: {count} functions instrumented", file=sys.stderr)
    options = argv[2:]
    if not any(arg.startswith("-max_len=") for arg in options):
        options.insert(0, f"-max_len={MAX_LEN[argv[1]]}")
    # libFuzzer's -merge (and -fork) run the fuzzer again through the shell as
    # "argv[0] options...": make argv[0] the whole command for this target.
    command = " ".join(shlex.quote(part) for part in
                       (sys.executable, os.path.join(HERE, "run.py"), argv[1]))
    atheris.Setup([command, *options], check)
    atheris.Fuzz()
