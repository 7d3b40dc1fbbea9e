"""Real proxies for the client tests, each with its own configuration, on 127.0.0.1.

- tinyproxy: HTTP CONNECT, optionally with BasicAuth, optionally only to one port;
- stunnel4 in front of a tinyproxy: an ``https://`` proxy (TLS to the proxy);
- microsocks: SOCKS5 that really checks a user and a password (it refuses clients that
  offer no credentials and clients with wrong ones), and resolves names itself;
- dante (danted): SOCKS4, and SOCKS5 without authentication.

Installed by scripts/components/proxies.sh; started and stopped (by PID) through
realproc. ``Proxy.log`` is the proxy's own log, which the tests read to prove that a
connection went through it (and with which target name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme

import realproc


@dataclass
class Proxy:
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once ``text`` appears in it (the proxy writes it in its own time)."""
        with trio.move_on_after(timeout):
            while text not in self.log_text():
                await trio.sleep(0.05)
        return self.log_text()


@contextmanager
def tinyproxy(folder: Path, *, auth: tuple[str, str] | None = None,
              connect_port: int | None = None) -> Iterator[Proxy]:
    """tinyproxy on 127.0.0.1; ``connect_port`` limits CONNECT to that port (others: 403)."""
    program = realproc.require("tinyproxy")
    port = realproc.free_port()
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", "MaxClients 50",
             "Allow 127.0.0.1", "LogLevel Connect", "DisableViaHeader Yes"]
    if auth is not None:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    if connect_port is not None:
        lines.append(f"ConnectPort {connect_port}")
    conf = folder / f"tinyproxy-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = folder / f"tinyproxy-{port}.log"
    with realproc.running([program, "-d", "-c", conf], log=log, port=port):
        yield Proxy(port, log)


@contextmanager
def stunnel(folder: Path, *, forward_to: int, ca: trustme.CA) -> Iterator[Proxy]:
    """stunnel4 accepting TLS on 127.0.0.1 (a certificate from ``ca`` for 127.0.0.1 and
    localhost) and forwarding the plain bytes to 127.0.0.1:forward_to."""
    program = realproc.require("stunnel4")
    port = realproc.free_port()
    pem = folder / f"stunnel-{port}.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(pem)
    conf = folder / f"stunnel-{port}.conf"
    conf.write_text("\n".join([
        "foreground = yes", "pid =", "debug = 5",
        "[proxy]", f"accept = 127.0.0.1:{port}", f"connect = 127.0.0.1:{forward_to}",
        f"cert = {pem}",
    ]) + "\n")
    log = folder / f"stunnel-{port}.log"
    with realproc.running([program, conf], log=log, port=port):
        yield Proxy(port, log)


@contextmanager
def microsocks(folder: Path, *, user: str, password: str) -> Iterator[Proxy]:
    """microsocks (SOCKS5) on 127.0.0.1 requiring ``user`` / ``password``."""
    program = realproc.require("microsocks")
    port = realproc.free_port()
    log = folder / f"microsocks-{port}.log"
    with realproc.running([program, "-i", "127.0.0.1", "-p", str(port), "-u", user,
                           "-P", password], log=log, port=port):
        yield Proxy(port, log)


@contextmanager
def dante(folder: Path) -> Iterator[Proxy]:
    """danted on 127.0.0.1: SOCKS4 and SOCKS5 without authentication, to 127.0.0.0/8."""
    program = realproc.require("danted", hint="make components (dante-server)")
    port = realproc.free_port()
    lines = [
        "logoutput: stderr",
        f"internal: 127.0.0.1 port = {port}",
        "external: 127.0.0.1",
        "clientmethod: none",
        "socksmethod: none",
    ]
    if os.geteuid() == 0:  # as root it must be told whom to run as
        lines += ["user.privileged: root", "user.unprivileged: nobody"]
    lines += [
        "client pass {", "    from: 127.0.0.0/8 to: 0.0.0.0/0", "    log: connect", "}",
        "socks pass {", "    from: 127.0.0.0/8 to: 127.0.0.0/8", "    command: connect",
        "    protocol: tcp", "    log: connect", "}",
    ]
    conf = folder / f"danted-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = folder / f"danted-{port}.log"
    with realproc.running([program, "-f", conf, "-N", "1", "-p", folder / f"danted-{port}.pid"],
                          log=log, port=port):
        yield Proxy(port, log)
