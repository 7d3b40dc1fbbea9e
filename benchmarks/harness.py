"""Servers, scenarios and the one-measurement runner shared by run.py and profile_server.py.

One measurement = a fresh server process pinned to core 0 + a fresh load-generator
process (loadgen.py, picows on uvloop) pinned to core 1, both on 127.0.0.1. The server
is stopped by its PID when the load generator is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tcpkali_load

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
LOADGEN = HERE / "loadgen.py"
#: The cross-check generator (rawgen.py): run.py --generator rawgen uses it for the
#: echo and handshake scenarios without compression.
RAWGEN = HERE / "rawgen.py"
GENERATOR = "loadgen"
SERVER_CORE = "0"
CLIENT_CORE = "1"


#: A folder holding a frozen copy of trio_gws/ that every server imports first (set by
#: run.py: others may edit the working tree while a run is going on).
CODE_SNAPSHOT: Path | None = None

#: The working tree's package (the reference code, and where the compiled speedups are).
SOURCE_PACKAGE = HERE.parent / "trio_gws"


def _digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _git(*args: str, cwd: Path = HERE.parent, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          timeout=timeout)


def _add_speedups(package: Path, info: dict[str, Any]) -> None:
    """Give a copied package the working tree's compiled ``_speedups`` if it has none.

    A copy from git has sources only; without the extension the masking falls back to
    pure Python (several times slower), which would be measured instead of the code.
    """
    if any(package.glob("_speedups*.so")) or any(package.glob("_speedups*.pyd")):
        info["speedups"] = "its own"
        return
    built = sorted(SOURCE_PACKAGE.glob("_speedups*.so")) + sorted(
        SOURCE_PACKAGE.glob("_speedups*.pyd"))
    if not built:
        info["speedups"] = "none (not built in the working tree: run `make install`)"
        return
    for path in built:
        shutil.copy2(path, package / path.name)
    info["speedups"] = "copied from the working tree"
    mine, theirs = package / "_speedups.c", SOURCE_PACKAGE / "_speedups.c"
    if mine.exists() and theirs.exists() and mine.read_bytes() != theirs.read_bytes():
        info["speedups"] += " (NOTE: its _speedups.c differs from the working tree's)"


def env_importing(code: Path) -> dict[str, str]:
    """This process's environment, with ``code`` (a folder holding ``trio_gws/``) first
    on PYTHONPATH: a child started with it imports that trio_gws."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    return env


def check_import(code: Path) -> bool:
    """Make sure a server started with ``code`` first on PYTHONPATH imports trio_gws from
    it (RuntimeError otherwise); whether it runs with the compiled speedups."""
    probe = ("import trio_gws, trio_gws._mask as m; "
             "print(trio_gws.__file__); print(m.SPEEDUPS)")
    env = env_importing(code)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=SERVERS_DIR, env=env, timeout=60)
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        raise RuntimeError(f"trio_gws from {code} does not import: {done.stderr[-800:]}")
    if not Path(lines[0]).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"trio_gws was imported from {lines[0]}, not from {code}")
    return lines[1] == "True"


def snapshot_trio_gws(into: Path) -> dict[str, Any]:
    """Copy the working tree's trio_gws/ into ``into`` and use it for every server."""
    global CODE_SNAPSHOT
    info: dict[str, Any] = {"source": str(SOURCE_PACKAGE)}
    if not SOURCE_PACKAGE.is_dir():
        info["note"] = "no trio_gws/ beside benchmarks/: using the installed package"
        return info
    shutil.copytree(SOURCE_PACKAGE, into / "trio_gws",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info["sha256"] = _digest(into / "trio_gws")
    info["compiled_speedups"] = check_import(into)
    try:
        info["git_head"] = _git("rev-parse", "--short", "HEAD", timeout=10).stdout.strip()
        info["uncommitted_changes"] = bool(_git("status", "--porcelain", "--", "trio_gws",
                                                timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    CODE_SNAPSHOT = into
    return info


def snapshot_variant(spec: str, into: Path) -> dict[str, Any]:
    """Freeze the code of a variant into ``into``/trio_gws; what it is, for the report.

    ``spec`` is a folder that holds a ``trio_gws/`` package (or is one), or else a git
    revision of this repository (its ``trio_gws/`` is extracted with ``git archive``).
    Either way the copy gets the working tree's compiled speedups when it has none, and
    is checked to import from the copy with them.
    """
    into.mkdir(parents=True, exist_ok=True)
    folder = Path(spec).expanduser()
    info: dict[str, Any] = {"spec": spec}
    if folder.is_dir():
        package = folder / "trio_gws" if (folder / "trio_gws").is_dir() else folder
        if not (package / "__init__.py").exists():
            raise ValueError(f"{spec}: no trio_gws/ package in this folder")
        shutil.copytree(package, into / "trio_gws",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        info["source"] = str(package.resolve())
    else:
        rev = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}", timeout=10)
        if rev.returncode != 0:
            raise ValueError(f"{spec}: neither a folder nor a git revision of "
                             f"{HERE.parent}")
        commit = rev.stdout.strip()
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", "--format=tar",
                                  commit, "trio_gws"], capture_output=True, timeout=60)
        if archive.returncode != 0:
            raise ValueError(f"{spec}: git archive failed: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True,
                       capture_output=True, timeout=60)
        info["git_commit"] = commit[:12]
    _add_speedups(into / "trio_gws", info)
    info["sha256"] = _digest(into / "trio_gws")
    info["compiled_speedups"] = check_import(into)
    if CODE_SNAPSHOT is not None and info["compiled_speedups"] != check_import(CODE_SNAPSHOT):
        raise RuntimeError(f"variant {spec}: compiled speedups "
                           f"{'on' if info['compiled_speedups'] else 'off'}, unlike trio-gws: "
                           "the comparison would measure them, not the code")
    return info


@dataclass(frozen=True)
class Server:
    name: str
    script: str
    compression: bool     # permessage-deflate available
    #: A folder with the trio_gws/ this server imports first (a variant); None: the
    #: run's snapshot of the working tree (CODE_SNAPSHOT).
    code: Path | None = None


SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("trio-gws", "trio_gws_server.py", True),
    Server("websockets-asyncio", "websockets_asyncio_server.py", True),
    Server("websockets-trio", "websockets_trio_server.py", True),
    Server("trio-websocket", "trio_websocket_server.py", False),
    Server("aiohttp", "aiohttp_server.py", True),
    Server("picows", "picows_server.py", False),
    # Trio's ceiling: no library, no validation, writes batched per read.
    Server("raw-trio", "raw_trio_server.py", False),
)}
OURS = "trio-gws"
#: A variant NAME of trio-gws is the server "trio-gws@NAME".
VARIANT_PREFIX = OURS + "@"


def add_variant(name: str, code: Path) -> Server:
    """Register "trio-gws@NAME": the trio-gws echo server importing ``code``/trio_gws."""
    server = Server(VARIANT_PREFIX + name, SERVERS[OURS].script, True, code=code)
    SERVERS[server.name] = server
    return server


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str                       # echo | idle | handshake
    loadgen_args: tuple[str, ...]
    compress: bool = False
    metric: str = "msgs_per_s"      # the number ratios are taken of
    cpu_metric: str | None = "server_cpu_us_per_msg"   # server CPU per unit of work


SCENARIOS: dict[str, Scenario] = {s.key: s for s in (
    Scenario("a", "4.1 KiB JSON text, 200 conns, 1 in flight", "echo",
             ("--conns", "200", "--inflight", "1", "--size", "4198", "--payload", "json")),
    Scenario("b", "4.1 KiB JSON text, 200 conns, 16 in flight", "echo",
             ("--conns", "200", "--inflight", "16", "--size", "4198", "--payload", "json")),
    Scenario("c", "32 B text, 200 conns, 16 in flight", "echo",
             ("--conns", "200", "--inflight", "16", "--size", "32", "--payload", "text")),
    Scenario("d", "256 KiB binary, 8 conns, 1 in flight", "echo",
             ("--conns", "8", "--inflight", "1", "--size", "262144", "--payload", "binary")),
    Scenario("e", "2,000 idle conns: server RSS growth per conn", "idle",
             ("--conns", "2000", "--warm-conns", "50"),
             metric="kib_per_conn", cpu_metric=None),
    Scenario("f", "handshakes/s, 50 concurrent dialers (connect, handshake, close)",
             "handshake", ("--dialers", "50"), metric="handshakes_per_s",
             cpu_metric="server_cpu_us_per_handshake"),
    Scenario("g", "(a) with permessage-deflate", "echo",
             ("--conns", "200", "--inflight", "1", "--size", "4198", "--payload", "json",
              "--compress"), compress=True),
    # tcpkali (tcpkali_load.py): the metric is echoes per server-CPU second.
    Scenario("h", "tcpkali, the seed's load: 4.1 KiB JSON, -c 200 -r 20000 (saturating)",
             "tcpkali", ("200", "20000", "json"), metric="msgs_per_cpu_s"),
    Scenario("i", "tcpkali: 32 B text, -c 200 -r 20000 (saturating)",
             "tcpkali", ("200", "20000", "text"), metric="msgs_per_cpu_s"),
    Scenario("j", "tcpkali: 4.1 KiB JSON at 4,000 msg/s (-c 200 -r 20)",
             "tcpkali", ("200", "20", "json"), metric="msgs_per_cpu_s"),
    Scenario("k", "tcpkali: 32 B text at 4,000 msg/s (-c 200 -r 20)",
             "tcpkali", ("200", "20", "text"), metric="msgs_per_cpu_s"),
)}


@dataclass
class Timing:
    warmup: float = 1.0
    duration: float = 3.0
    settle: float = 1.0
    tcpkali: float = 10.0   # tcpkali's window (-T), the seed's 10 s


@dataclass
class Pinning:
    enabled: bool = True
    server_core: str = SERVER_CORE
    client_core: str = CLIENT_CORE
    nice: int = 0           # e.g. -5: run server and client ahead of other processes

    @property
    def active(self) -> bool:
        """Pin for real: enabled, taskset is there and the machine has 2+ CPUs."""
        return (self.enabled and shutil.which("taskset") is not None
                and (os.cpu_count() or 1) >= 2)

    def wrap(self, cmd: list[str], core: str) -> list[str]:
        if self.nice:
            cmd = ["nice", "-n", str(self.nice), *cmd]
        if self.active:
            return ["taskset", "-c", core, *cmd]
        return cmd

    @property
    def own_autogroup(self) -> bool:
        """Give each process its own session, and its autogroup our nice value.

        With the kernel's autogroup scheduling (``kernel.sched_autogroup_enabled``) a
        process's nice value only counts inside its session: against another session
        (another agent's fuzzer at nice 19, say) the two sessions get equal shares
        whatever their processes' nice values. The autogroup's own nice is what counts.
        """
        return bool(self.nice) and AUTOGROUP_ENABLED

    def started(self, proc: subprocess.Popen[Any]) -> None:
        """Set the autogroup nice of a process started with ``start_new_session``."""
        if self.own_autogroup:
            try:
                Path(f"/proc/{proc.pid}/autogroup").write_text(str(self.nice))
            except OSError:
                pass  # not allowed (a negative value needs root): the process nice stays


def _autogroup_enabled() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


AUTOGROUP_ENABLED = _autogroup_enabled()


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]   # the server, or a wrapper (py-spy) that runs it
    port: int
    log: Path
    pid: int = 0                  # the server's own PID, from its READY line

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the server by its PID, then wait for the process we started."""
        if self.proc.poll() is None:
            target = self.pid or self.proc.pid
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.pid and self.pid != self.proc.pid:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_server(server: Server, compress: bool, pinning: Pinning, logdir: Path,
                 extra_args: tuple[str, ...] = (),
                 prefix: list[str] | None = None, timeout: float = 30.0) -> ServerProcess:
    """Start one echo server and wait for its READY line; raise RuntimeError if it can't.

    ``prefix`` replaces the taskset pinning with another launcher (profile_server.py
    runs the server under py-spy and pins it itself once it is ready).
    """
    port = free_port()
    cmd = [sys.executable, str(SERVERS_DIR / server.script), "--port", str(port), *extra_args]
    if compress:
        cmd.append("--compress")
    cmd = [*prefix, *cmd] if prefix is not None else pinning.wrap(cmd, pinning.server_core)
    log = logdir / f"{server.name}-{port}.log"
    code = server.code or CODE_SNAPSHOT
    env = env_importing(code) if code is not None else None
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=SERVERS_DIR, env=env,
                                start_new_session=pinning.own_autogroup and prefix is None)
    if prefix is None:
        pinning.started(proc)
    sp = ServerProcess(proc, port, log)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                sp.stop(signal.SIGKILL)
                raise RuntimeError(f"{server.name} did not get ready in {timeout}s: "
                                   f"{tail(log)}")
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:
                proc.wait(5)
                raise RuntimeError(f"{server.name} exited with {proc.returncode}: {tail(log)}")
            if line.startswith("READY"):
                sp.pid = int(line.split()[2])
                return sp
            if line.startswith("UNSUPPORTED"):
                sp.stop()
                raise RuntimeError(f"unsupported: {line.split(' ', 1)[1].strip()}")


def loadgen_command(scenario: Scenario, port: int, server_pid: int | None,
                    timing: Timing) -> list[str]:
    script = (RAWGEN if GENERATOR == "rawgen" and scenario.mode in ("echo", "handshake")
              and not scenario.compress else LOADGEN)
    cmd = [sys.executable, str(script), scenario.mode, "--url", f"ws://127.0.0.1:{port}/",
           *scenario.loadgen_args, "--warmup", str(timing.warmup),
           "--duration", str(timing.duration), "--settle", str(timing.settle)]
    if server_pid is not None:
        cmd += ["--server-pid", str(server_pid)]
    return cmd


def run_loadgen(scenario: Scenario, server: ServerProcess, timing: Timing,
                pinning: Pinning) -> dict[str, Any]:
    cmd = pinning.wrap(loadgen_command(scenario, server.port, server.pid, timing),
                       pinning.client_core)
    budget = timing.warmup + timing.duration + 6 * timing.settle + 90
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=pinning.own_autogroup) as proc:
        pinning.started(proc)
        try:
            stdout, stderr = proc.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): "
                           + "\n".join(stderr.splitlines()[-8:]))
    return json.loads(stdout.strip().splitlines()[-1])


def run_tcpkali_scenario(scenario: Scenario, server: ServerProcess, timing: Timing,
                         pinning: Pinning) -> dict[str, Any]:
    binary = tcpkali_load.find_tcpkali()
    if binary is None:
        raise RuntimeError("unavailable: no tcpkali binary (PATH, TCPKALI=, or "
                           "benchmarks/.tcpkali/bin): see README.md")
    conns, rate, payload = scenario.loadgen_args
    result = tcpkali_load.run_tcpkali(binary, server.port, server.pid, int(conns),
                                      int(rate), payload, timing.tcpkali, pinning)
    result["client_loop"] = "tcpkali"
    return result


def measure(server: Server, scenario: Scenario, timing: Timing, pinning: Pinning,
            logdir: Path) -> dict[str, Any]:
    """One measurement: fresh server, fresh load generator. Never raises."""
    record: dict[str, Any] = {"server": server.name, "scenario": scenario.key}
    if scenario.compress and not server.compression:
        record["error"] = "unsupported: no permessage-deflate in this library"
        return record
    started = time.monotonic()
    try:
        sp = start_server(server, scenario.compress, pinning, logdir)
    except RuntimeError as exc:
        record["error"] = str(exc)
        return record
    try:
        if scenario.mode == "tcpkali":
            record["result"] = run_tcpkali_scenario(scenario, sp, timing, pinning)
        else:
            record["result"] = run_loadgen(scenario, sp, timing, pinning)
        if sp.proc.poll() is not None:
            record["error"] = f"server died during the run: {tail(sp.log)}"
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        record["error"] = str(exc)
    finally:
        sp.stop()
    record["wall_s"] = time.monotonic() - started
    return record
