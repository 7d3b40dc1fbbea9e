"""Real components for the tests: start a real program on 127.0.0.1, stop it by PID.

Proxies, nginx, Redis, Node's ws, a browser: the tests talk to the real thing, never a
mock. ``scripts/install-components.sh`` (run by ``make test``) installs them; a
component that is missing fails the test that needs it (``require``), it is never
skipped into green.

Every process started here binds 127.0.0.1 (or a Unix socket in a temporary folder),
runs in its own process group and is stopped by its PID when the test ends, whatever
happened; its output goes to a log file that is printed when it fails to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def require(program: str, *, hint: str = "make components") -> str:
    """The full path of ``program`` (a name on PATH or a path); fail when missing."""
    found = shutil.which(program) if os.sep not in program else (
        program if os.access(program, os.X_OK) else None)
    if found is None:
        pytest.fail(f"{program} is not installed: run `{hint}` "
                    "(scripts/install-components.sh); a missing component fails, never skips",
                    pytrace=False)
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports that were free on 127.0.0.1 a moment ago.

    Each stays bound until all are picked: two ``free_port()`` calls in a row can
    return the same port (nginx then refused "a duplicate listen", once in CI).
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 15.0,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on host:port (or the process died, or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def wait_for_unix(path: str | Path, *, timeout: float = 15.0,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on the Unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {path} after {timeout}s") from None
            time.sleep(0.02)


def stop(process: subprocess.Popen[bytes], *, timeout: float = 5.0) -> None:
    """SIGTERM its process group, then SIGKILL whatever is left after ``timeout``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@contextmanager
def running(argv: Sequence[str | Path], *, log: Path, port: int | None = None,
            unix: str | Path | None = None, env: dict[str, str] | None = None,
            cwd: str | Path | None = None, timeout: float = 15.0,
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group until the block ends; wait until it
    listens on ``port`` (127.0.0.1) or ``unix`` when given. Its output goes to ``log``,
    which is shown when it fails to start."""
    with open(log, "wb") as out:
        process = subprocess.Popen([str(arg) for arg in argv], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd, start_new_session=True)
    try:
        try:
            if port is not None:
                wait_for_port(port, process=process, timeout=timeout)
            if unix is not None:
                wait_for_unix(unix, process=process, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            shown = log.read_text(errors="replace")[-4000:]
            pytest.fail(f"{argv[0]} did not start: {exc}\n--- {log.name} ---\n{shown}",
                        pytrace=False)
        yield process
    finally:
        stop(process)
