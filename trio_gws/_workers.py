"""``serve --workers N``: a Trio supervisor of N worker processes on one port.

    python -m trio_gws._workers package.module:app --port 8000 --workers 4
    (the lead wires the same arguments into ``python -m trio_gws serve``)

The supervisor binds the listening sockets itself and hands the same sockets to every
worker (``pass_fds``; workers are spawned, fresh interpreters, never forked). Why not
one SO_REUSEPORT socket per worker: closing such a socket resets the connections
waiting in its own accept queue, so a restart would reset clients. A socket owned by
the supervisor never closes while it runs: a worker that stops accepting, leaves or
crashes leaves its share of new connections to the others, in the same queue, and a
restart by SIGHUP refuses and resets nothing. It works the same for a Unix socket.
The cost: the kernel wakes every idle worker for a new connection and one wins the
accept, instead of hashing connections evenly (uvicorn and gunicorn share a socket
the same way).

Signals:

* SIGTERM / SIGINT: drain. Every worker stops accepting, closes its connections with
  1001 within ``close_timeout``, and exits; then the supervisor exits 0 (a worker
  still there ``close_timeout`` + 5 s later is killed).
* SIGHUP: roll. A new generation of N workers starts (fresh imports: new code is
  picked up) and accepts; only once all of them are ready do the old ones stop
  accepting, close their connections with 1012 (service restart) and leave. A new
  generation that fails to start is stopped, and the old one keeps serving.
* A worker that dies is restarted, after 0.5 s doubling per failure in a row up to
  30 s (a worker that ran 30 s resets it), with a log line saying who died and how.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._listeners import UnixListener, open_tcp_listeners, open_unix_listener
from ._worker import AppError, load_config, split_spec, ssl_context_from

logger = logging.getLogger("trio_gws.workers")

#: How long a new worker may take to import the app and accept.
STARTUP_TIMEOUT = 60.0
#: Beyond close_timeout, how long a stopping worker may take to exit before SIGKILL.
KILL_GRACE = 5.0
#: Restart delays: first, cap, and how long a worker must run to reset them.
RESTART_INITIAL, RESTART_MAX, RESTART_STABLE = 0.5, 30.0, 30.0


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Slot:
    """One worker's place in a generation: its process, restarted when it dies."""

    def __init__(self, supervisor: Supervisor, generation: int, index: int) -> None:
        self.supervisor = supervisor
        self.name = f"{generation}.{index}"
        self.process: trio.Process | None = None
        self.control: trio.SocketStream | None = None
        self.ready = trio.Event()       # its first worker accepts
        self.done = trio.Event()        # it has stopped for good
        self.early_exits = 0            # workers that died before they accepted
        self.retired: int | None = None  # the close code it was asked to stop with
        self._retire = trio.Event()

    async def keep(self) -> None:
        """Run a worker; restart it when it dies, until retired."""
        failures = 0
        try:
            while self.retired is None:
                started = trio.current_time()
                ready = await self._run_once()
                if self.retired is not None:
                    break
                if not ready:
                    self.early_exits += 1
                ran = trio.current_time() - started
                failures = 0 if ran >= RESTART_STABLE else failures + 1
                delay = min(RESTART_MAX, RESTART_INITIAL * 2 ** (failures - 1)) if failures else 0
                assert self.process is not None
                logger.error("worker %s (pid %d) died (%s) after %.1fs%s; restarting in "
                             "%.1fs", self.name, self.process.pid,
                             _how(self.process.returncode), ran,
                             "" if ready else ", before it accepted", delay)
                with trio.move_on_after(delay):
                    await self._retire.wait()
        finally:
            self.done.set()

    async def _run_once(self) -> bool:
        """Spawn one worker and wait for it to exit; True if it said ready."""
        parent, child = socket.socketpair()
        spec = dict(self.supervisor.spec, control=child.fileno())
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_gws._worker", json.dumps(spec)],
                pass_fds=(*self.supervisor.fds, child.fileno()), start_new_session=True)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.process = process
        control = self.control = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
        said_ready = False
        try:
            if self.retired is not None:
                await self._send_stop(self.retired)
            async with trio.open_nursery() as nursery:
                async def read_ready() -> None:
                    nonlocal said_ready
                    buffer = b""
                    while b"ready\n" not in buffer:
                        data = await control.receive_some(64)
                        if not data:
                            return
                        buffer += data
                    said_ready = True
                    logger.info("worker %s (pid %d) accepts", self.name, process.pid)
                    self.ready.set()

                nursery.start_soon(read_ready)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.control = None
            with trio.CancelScope(shield=True):
                await control.aclose()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        return said_ready

    async def retire(self, code: int) -> None:
        """Ask the worker to stop, closing its connections with ``code``."""
        if self.retired is not None:
            return
        self.retired = code
        self._retire.set()
        await self._send_stop(code)

    async def _send_stop(self, code: int) -> None:
        control = self.control
        if control is None:
            return
        try:
            await control.send_all(f"stop {code}\n".encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # it is exiting already

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            logger.error("worker %s (pid %d) did not stop in time: killing it", self.name,
                         self.process.pid)
            self.process.kill()


class Supervisor:
    """Generations of worker slots over the same listening sockets."""

    def __init__(self, nursery: trio.Nursery, spec: dict[str, Any], fds: Sequence[int],
                 workers: int, close_timeout: float) -> None:
        self.nursery = nursery
        self.spec = spec
        self.fds = tuple(fds)
        self.workers = workers
        self.close_timeout = close_timeout
        self.generation = 0
        self.slots: list[Slot] = []   # the generation that serves
        self.every: list[Slot] = []   # every slot started (a drain stops what is left)
        self.rolling: trio.CancelScope | None = None

    async def start_generation(self) -> list[Slot] | None:
        """N new workers; the slots once all accept, None if one died first."""
        self.generation += 1
        slots = [Slot(self, self.generation, index) for index in range(self.workers)]
        self.every = [slot for slot in self.every if not slot.done.is_set()] + slots
        for slot in slots:
            self.nursery.start_soon(slot.keep)
        with trio.move_on_after(STARTUP_TIMEOUT):
            while not all(slot.ready.is_set() for slot in slots):
                if any(slot.early_exits for slot in slots):
                    break
                await trio.sleep(0.02)
            else:
                return slots
        await self.stop(slots, 1001)
        return None

    async def stop(self, slots: Sequence[Slot], code: int) -> None:
        """Retire ``slots`` and wait for them (killing what outlives the bound)."""
        for slot in slots:
            await slot.retire(code)
        with trio.move_on_after(self.close_timeout + KILL_GRACE):
            for slot in slots:
                await slot.done.wait()
        for slot in slots:
            slot.kill()
        for slot in slots:
            await slot.done.wait()

    async def roll(self) -> None:
        """Replace every worker, new ones accepting before old ones leave (1012)."""
        with trio.CancelScope() as self.rolling:
            old = self.slots
            logger.info("SIGHUP: starting generation %d", self.generation + 1)
            new = await self.start_generation()
            if new is None:
                logger.error("generation %d did not start; generation %d keeps serving",
                             self.generation, self.generation - 1)
                return
            self.slots = new
            logger.info("generation %d accepts (pids %s); generation %d leaves with 1012",
                        self.generation, self._pids(new), self.generation - 1)
            await self.stop(old, 1012)
            logger.info("roll done: generation %d serves", self.generation)
        self.rolling = None

    @staticmethod
    def _pids(slots: Sequence[Slot]) -> str:
        return ", ".join(str(slot.process.pid) for slot in slots if slot.process)


async def _open_listeners(options: argparse.Namespace) -> list[trio.SocketListener | UnixListener]:
    listeners: list[trio.SocketListener | UnixListener] = []
    if options.port is not None or options.unix is None:
        listeners += await open_tcp_listeners(8000 if options.port is None else options.port,
                                              host=options.host or None)
    if options.unix is not None:
        listeners.append(await open_unix_listener(options.unix))
    return listeners


async def supervise(options: argparse.Namespace) -> int:
    """Run the workers until SIGTERM/SIGINT; the exit status."""
    # Fail here, once, rather than in N workers (the app itself is imported by the
    # workers only: the supervisor stays free of the application's state).
    split_spec(options.app, "the app")
    config = load_config(options.config)
    ssl_context_from(options.certfile, options.keyfile)
    listeners = await _open_listeners(options)
    spec = {"app": options.app, "config": options.config, "certfile": options.certfile,
            "keyfile": options.keyfile, "fds": [listener.socket.fileno()
                                                for listener in listeners]}
    where = ", ".join(_where(listener) for listener in listeners)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, spec, spec["fds"], options.workers,
                                        config.close_timeout)
                first = await supervisor.start_generation()
                if first is None:
                    logger.error("the workers did not start (see their errors above)")
                    return 1
                supervisor.slots = first
                logger.info("serving %s on %s with %d worker(s) (pids %s)", options.app,
                            where, options.workers, supervisor._pids(first))
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if supervisor.rolling is not None:
                            logger.warning("SIGHUP: a roll is in progress; ignored")
                        else:
                            nursery.start_soon(supervisor.roll)
                        continue
                    logger.info("%s: draining the workers (1001, within %.1fs)",
                                signal.Signals(signum).name, config.close_timeout)
                    break
                if supervisor.rolling is not None:
                    supervisor.rolling.cancel()
                await supervisor.stop([slot for slot in supervisor.every
                                       if not slot.done.is_set()], 1001)
                nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await listener.aclose()
    logger.info("all workers stopped")
    return 0


def _where(listener: trio.SocketListener | UnixListener) -> str:
    if isinstance(listener, UnixListener):
        return f"unix:{listener.path}"
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's arguments (shared with ``python -m trio_gws serve``)."""
    parser.add_argument("app", help="package.module:app: an EventHandler, a zero-argument "
                        "factory returning one, or an async context manager factory "
                        "yielding one")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; '' for every one)")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default 8000 unless --unix is given)")
    parser.add_argument("--unix", metavar="PATH", help="also (or only) a Unix socket")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1; one per core is usual)")
    parser.add_argument("--certfile", help="serve TLS (wss://) with this certificate chain")
    parser.add_argument("--keyfile", help="the certificate's private key")
    parser.add_argument("--config", metavar="MODULE:ATTR",
                        help="a gws.Config (or a factory returning one)")


def run_serve(options: argparse.Namespace) -> int:
    """Run the supervisor for parsed ``serve`` options; the process's exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s [supervisor] %(levelname)s %(message)s")
    if not 1 <= options.workers <= 1024:
        logger.error("--workers must be between 1 and 1024, got %d", options.workers)
        return 2
    if options.port is not None and not 0 <= options.port <= 65535:
        logger.error("--port must be between 0 and 65535, got %d", options.port)
        return 2
    try:
        return trio.run(supervise, options)
    except AppError as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot listen: %s", exc)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trio_gws._workers",
        description="Serve a trio-gws application with N worker processes on one port.")
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
