"""Listening sockets: TCP (optionally shared by several processes) and Unix sockets.

``trio.open_tcp_listeners`` cannot set ``SO_REUSEPORT``, which lets several processes
listen on one port with the kernel spreading connections between them (Linux), and
with ``port=0`` it gives the IPv4 and IPv6 listeners different ports. This module
does both: port 0 is resolved by the first listener and reused by the others.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
import sys
from pathlib import Path

import trio

#: The listen backlog when none is given (capped by the kernel's somaxconn).
DEFAULT_BACKLOG = 0xFFFF


def reuse_port_supported() -> bool:
    """True where SO_REUSEPORT spreads connections between processes (Linux)."""
    return sys.platform.startswith("linux") and hasattr(stdlib_socket, "SO_REUSEPORT")


async def open_tcp_listeners(port: int, *, host: str | bytes | None = None,
                             reuse_port: bool = False, backlog: int | None = None
                             ) -> list[trio.SocketListener]:
    """One listener per address ``host`` resolves to (both wildcards for None).

    Args:
        port: the port; 0 picks a free one, the same for every address.
        host: the interface; None listens on every IPv4 and IPv6 address.
        reuse_port: set SO_REUSEPORT so that other processes may listen on the same
            port and share its connections.
        backlog: the listen backlog (default: as large as the kernel allows).

    Raises:
        NotImplementedError: ``reuse_port`` on a platform without load-balancing
            SO_REUSEPORT (anything but Linux).
        OSError: the address is in use, or cannot be resolved or bound.
    """
    if reuse_port and not reuse_port_supported():
        raise NotImplementedError(
            f"reuse_port=True needs SO_REUSEPORT with load balancing (Linux); not "
            f"available on {sys.platform}: run one process per port, or put a load "
            "balancer in front")
    addresses = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM,
                                              flags=trio.socket.AI_PASSIVE)
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            sock = trio.socket.socket(family, type_, proto)
            try:
                if sys.platform != "win32":
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(trio.socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                if port == 0 and listeners:
                    # One port for every address: the one the first bind picked.
                    sockaddr = (sockaddr[0], listeners[0].socket.getsockname()[1],
                                *sockaddr[2:])
                await sock.bind(sockaddr)
                sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class UnixListener(trio.abc.Listener[trio.SocketStream]):
    """A listener on a Unix socket path that removes its socket file when closed."""

    def __init__(self, listener: trio.SocketListener, path: Path) -> None:
        self._listener = listener
        self.path = path
        self._inode = path.stat().st_ino

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._listener.socket

    async def accept(self) -> trio.SocketStream:
        return await self._listener.accept()

    async def aclose(self) -> None:
        try:
            if self.path.stat().st_ino == self._inode:  # still ours, not a successor's
                self.path.unlink()
        except OSError:
            pass
        await self._listener.aclose()


async def open_unix_listener(path: str | os.PathLike[str], *, mode: int | None = None,
                             backlog: int | None = None) -> UnixListener:
    """Listen on a Unix socket (the usual way behind nginx on the same host).

    Args:
        path: the socket file to create; it must not exist.
        mode: permissions of the socket file (e.g. 0o660 for a group shared with the
            proxy); default: what the umask gives.
        backlog: the listen backlog.

    Raises:
        FileExistsError: ``path`` exists (another server may be using it; remove a
            stale socket file left by a crashed server yourself).
        OSError: the path cannot be bound (a missing folder, permissions, too long).
    """
    where = Path(path)
    if where.exists() or where.is_symlink():
        kind = "a socket" if stat.S_ISSOCK(where.lstat().st_mode) else "a file"
        raise FileExistsError(errno.EEXIST, f"{where} exists ({kind}): another server may "
                              "be using it; remove it first if it is stale", str(where))
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    bound = False
    try:
        await sock.bind(str(where))
        bound = True
        if mode is not None:
            os.chmod(where, mode)
        sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
    except BaseException:
        sock.close()
        if bound:
            where.unlink(missing_ok=True)
        raise
    return UnixListener(trio.SocketListener(sock), where)
