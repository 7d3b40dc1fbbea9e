"""One worker process of ``serve --workers N`` (started by ``_workers``, never by hand).

The supervisor binds the listening sockets and passes them down (``pass_fds``), with
one end of a socket pair as the control channel. The worker loads the application,
serves on the inherited sockets, says ``ready`` once it accepts, and waits for
``stop CODE``: it stops accepting (the socket stays open in the supervisor and in
the other workers, so no connection waiting in its queue is lost), closes every
connection with CODE (1001 going away, 1012 restarting) within ``close_timeout``,
leaves the application's context and exits 0. The supervisor's end closing (it died)
and SIGTERM/SIGINT mean ``stop 1001``.

The application (``package.module:app``) is an ``EventHandler`` instance, a
zero-argument factory returning one, or a zero-argument factory returning an async
context manager that yields one (where a worker opens its hub).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ._config import Config
from ._handler import EventHandler
from ._server import Server, serve_listeners

logger = logging.getLogger("trio_gws.workers")

#: Close reasons sent with the two codes a worker stops with.
REASONS = {1001: "server shutting down", 1012: "server restarting"}


class AppError(Exception):
    """The application or config named on the command line cannot be used."""


def split_spec(spec: str, what: str) -> tuple[str, str]:
    """(module, attribute) of ``package.module:attribute``.

    Raises:
        AppError: it does not look like that.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"{what} must look like package.module:attribute, got {spec!r}")
    return module_name, attribute


def load_object(spec: str, what: str) -> Any:
    """Import ``package.module:attribute`` (the attribute may be dotted).

    Raises:
        AppError: the spec is malformed, the module cannot be imported, or the
            attribute is missing.
    """
    module_name, attribute = split_spec(spec, what)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does for the current folder
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import {module_name!r} for {what} {spec!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attribute!r} "
                           f"({what} {spec!r})") from None
    return found


def load_config(spec: str | None) -> Config:
    """The ``Config`` named by ``--config`` (an instance, or a factory returning one).

    Raises:
        AppError: it is not a Config.
    """
    if spec is None:
        return Config()
    found = load_object(spec, "--config")
    if callable(found) and not isinstance(found, Config):
        try:
            found = found()
        except Exception as exc:
            raise AppError(f"--config {spec!r}: calling it raised {exc!r}") from exc
    if not isinstance(found, Config):
        raise AppError(f"--config {spec!r} is a {type(found).__name__}, not a gws.Config")
    return found


def ssl_context_from(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """A server TLS context, or None without a certificate.

    Raises:
        AppError: the files cannot be loaded.
    """
    if certfile is None:
        if keyfile is not None:
            raise AppError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise AppError(f"cannot load the certificate {certfile!r}"
                       f"{f' with key {keyfile!r}' if keyfile else ''}: {exc}") from exc
    return context


@asynccontextmanager
async def open_app(app: Any, spec: str = "app") -> AsyncIterator[EventHandler]:
    """The handler ``app`` stands for, for as long as the block runs.

    Raises:
        AppError: ``app`` is none of the three accepted kinds.
    """
    if isinstance(app, EventHandler):
        yield app
        return
    if not callable(app):
        raise AppError(f"{spec} is a {type(app).__name__}: expected an EventHandler, a "
                       "factory returning one, or an async context manager factory")
    made = app()
    if isinstance(made, EventHandler):
        yield made
        return
    if hasattr(made, "__aenter__") and hasattr(made, "__aexit__"):
        async with made as handler:
            if not isinstance(handler, EventHandler):
                raise AppError(f"{spec}() yielded a {type(handler).__name__}, not an "
                               "EventHandler")
            yield handler
        return
    if inspect.iscoroutine(made):
        made.close()
        raise AppError(f"{spec} is an async function: decorate it with "
                       "@contextlib.asynccontextmanager and yield the handler")
    raise AppError(f"{spec}() returned a {type(made).__name__}, not an EventHandler or "
                   "an async context manager")


class GatedListener(trio.abc.Listener[trio.SocketStream]):
    """An inherited listening socket whose accepting can be stopped without closing
    it (closing is harmless too: the supervisor and the other workers hold it)."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self._open = True
        self._scope: trio.CancelScope | None = None

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        while self._open:
            with trio.CancelScope() as scope:
                self._scope = scope
                return await self._listener.accept()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def stop_accepting(self) -> None:
        self._open = False
        if self._scope is not None:
            self._scope.cancel()

    async def aclose(self) -> None:
        await self._listener.aclose()


async def _wait_for_stop(control: trio.SocketStream) -> int:
    """The close code the supervisor asks to stop with (1001 if it vanished)."""
    buffer = b""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            code = 1001

            async def on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
            while b"\n" not in buffer:
                try:
                    data = await control.receive_some(1024)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    break  # the supervisor is gone
                buffer += data
            words = buffer.split(b"\n", 1)[0].split()
            if (len(words) == 2 and words[0] == b"stop" and words[1].isdigit()
                    and int(words[1]) in REASONS):
                code = int(words[1])
            nursery.cancel_scope.cancel()
    return code


async def _drain(server: Server, code: int, close_timeout: float) -> None:
    """Close every connection with ``code``; each bounds its own close handshake."""
    with trio.move_on_after(close_timeout + 1):
        async with trio.open_nursery() as nursery:
            for conn in server.connections:
                nursery.start_soon(conn.aclose, code, REASONS[code])


async def run_worker(spec: dict[str, Any]) -> None:
    """Serve ``spec`` (what the supervisor passed) until told to stop."""
    control = trio.SocketStream(trio.socket.from_stdlib_socket(
        socket.socket(fileno=spec["control"])))
    gates = [GatedListener(trio.SocketListener(trio.socket.from_stdlib_socket(
        socket.socket(fileno=fd)))) for fd in spec["fds"]]
    config = load_config(spec["config"])
    ssl_context = ssl_context_from(spec["certfile"], spec["keyfile"])
    app = load_object(spec["app"], "the app")
    async with open_app(app, spec["app"]) as handler, trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(
            serve_listeners, handler, gates, config=config, ssl_context=ssl_context))
        await control.send_all(b"ready\n")
        code = await _wait_for_stop(control)
        logger.info("worker %d stopping: closing %d connection(s) with %d", os.getpid(),
                    len(server.connections), code)
        for gate in gates:
            gate.stop_accepting()
        await _drain(server, code, config.close_timeout)
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [worker {os.getpid()}] %(levelname)s %(message)s")
    spec = json.loads(argv[0])
    try:
        trio.run(run_worker, spec)
    except AppError as exc:
        logger.error("%s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
