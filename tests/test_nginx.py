"""trio-gws behind a real nginx (Debian's, installed by scripts/components/nginx.sh).

nginx runs with examples/nginx/trio-gws.conf, the config the README shows, inside a
test-only main context that keeps its pid file, logs and temp folders in tmp_path and
listens on 127.0.0.1 only (never the system service). Clients go through it over
plain WebSocket and over TLS terminated at nginx (trustme certificates) to our plain
server, which listens either on 127.0.0.1 (``gws.serve``) or on a Unix socket in the
test's folder (``gws.open_unix_listener`` + ``gws.serve_listeners``, nginx's
``unix:`` upstream); echo, close codes both ways, and a graceful shutdown seen through
the proxy, for every combination.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_gws as gws
from trio_gws import Config, Opcode

import realproc
from helpers import Recorder

SITE = realproc.REPO / "examples" / "nginx" / "trio-gws.conf"
TIMEOUT = 60
TEXT = "über nginx – 你好 🌍"

SCHEMES = pytest.mark.parametrize("scheme", ["ws", "wss"])
UPSTREAMS = pytest.mark.parametrize("upstream", ["tcp", "unix"])


@dataclass
class Proxy:
    """A running nginx in front of ``upstream``: where clients connect, and how."""

    ports: dict[str, int]  # scheme -> port on 127.0.0.1
    ca: trustme.CA

    def url(self, scheme: str, path: str = "/") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[scheme]}{path}"

    def ssl_context(self, scheme: str) -> ssl.SSLContext | None:
        if scheme == "ws":
            return None
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def main_conf(tmp: Path) -> str:
    """The test-only main context around the site config: nothing outside ``tmp``."""
    # As root, nginx would run its workers as nobody, who cannot enter pytest's
    # private temporary folder; the workers keep the test's own user instead.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log {tmp}/access.log;\n"
            + "".join(f"    {kind}_temp_path {tmp}/{kind}_temp;\n"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + f"    include {tmp}/trio-gws.conf;\n}}\n")


def site_conf(values: dict[str, str]) -> str:
    """examples/nginx/trio-gws.conf with its {{PLACEHOLDERS}} filled in."""
    text = SITE.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    left = re.findall(r"{{\w+}}", text)
    assert not left, f"unfilled placeholders {left}"
    return text


@contextmanager
def running_nginx(tmp: Path, upstream: str) -> Iterator[Proxy]:
    """nginx on two 127.0.0.1 ports (plain and TLS) in front of ``upstream``
    (``127.0.0.1:PORT`` or ``unix:PATH``, as the template's upstream block takes it)."""
    nginx = realproc.require("nginx")
    tmp.mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(tmp / "cert.pem"), append=True)
    ports = dict(zip(("ws", "wss"), realproc.free_ports(2)))
    (tmp / "trio-gws.conf").write_text(site_conf({
        "UPSTREAM": upstream,
        "LISTEN": f"127.0.0.1:{ports['ws']}",
        "LISTEN_TLS": f"127.0.0.1:{ports['wss']}",
        "CERTIFICATE": str(tmp / "cert.pem"),
        "CERTIFICATE_KEY": str(tmp / "key.pem"),
    }))
    (tmp / "nginx.conf").write_text(main_conf(tmp))
    argv: list[str | Path] = [nginx, "-p", f"{tmp}/", "-c", tmp / "nginx.conf",
                              "-e", tmp / "error.log"]
    with realproc.running(argv, log=tmp / "nginx.out", port=ports["ws"]):
        realproc.wait_for_port(ports["wss"])
        yield Proxy(ports, ca)


class Server:
    """Our server, cancellable on its own (a graceful shutdown): ``gws.serve`` on
    127.0.0.1, or ``gws.serve_listeners`` on a Unix socket at ``unix``."""

    def __init__(self, handler: gws.EventHandler, config: Config,
                 unix: Path | None = None) -> None:
        self.handler, self.config, self.unix = handler, config, unix
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            if self.unix is None:
                await gws.serve(self.handler, 0, host="127.0.0.1", config=self.config,
                                task_status=task_status)
            else:
                listener = await gws.open_unix_listener(self.unix)
                await gws.serve_listeners(self.handler, [listener], config=self.config,
                                          task_status=task_status)
        self.done.set()

    def upstream(self, server: gws.Server) -> str:
        """Where nginx finds us, in the syntax of its upstream block."""
        return f"unix:{self.unix}" if self.unix is not None else f"127.0.0.1:{server.port}"


@asynccontextmanager
async def behind_nginx(tmp_path: Path, handler: gws.EventHandler, upstream: str,
                       config: Config | None = None) -> AsyncIterator[tuple[Proxy, Server]]:
    """nginx in front of our server, which listens on TCP or on a Unix socket."""
    # A Unix socket path has at most 107 bytes; pytest's folders stay well below.
    unix = tmp_path / "gws.sock" if upstream == "unix" else None
    server = Server(handler, config or Config(), unix)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(server.run)
            if unix is not None:
                assert [type(listener) for listener in running.listeners] == [
                    gws.UnixListener] and unix.exists()
            with running_nginx(tmp_path / "nginx", server.upstream(running)) as proxy:
                yield proxy, server
            server.scope.cancel()


@SCHEMES
@UPSTREAMS
async def test_echo_through_nginx(tmp_path: Path, scheme: str, upstream: str) -> None:
    server_side = Recorder(echo=True)
    config = Config(compress_enabled=True, max_content_length=8 << 20)
    big = os.urandom(4 << 20)  # incompressible: 4 MiB really cross the proxy
    async with behind_nginx(tmp_path, server_side, upstream, config) as (proxy, _):
        client = Recorder()
        async with gws.open_conn(proxy.url(scheme, "/chat?room=1"), client, config=config,
                                 ssl_context=proxy.ssl_context(scheme)) as conn:
            await conn.write_string(TEXT)
            await conn.write_message(Opcode.BINARY, b"\x00\xff\x80")
            await conn.write_message(Opcode.BINARY, big)
            echoes = await client.wait_kind("message", 3)
            assert [(m.opcode, m.data) for m in echoes] == [
                (Opcode.TEXT, TEXT.encode()), (Opcode.BINARY, b"\x00\xff\x80"),
                (Opcode.BINARY, big)]
            # nginx passed the extension offer through, and told us who asked
            [theirs] = server_side.conns()
            assert conn.compressed and theirs.compressed
            request = theirs.request
            assert request.target == "/chat?room=1"
            assert request.headers.get("X-Forwarded-Proto") == ("https" if scheme == "wss"
                                                                else "http")
            assert request.headers.get("X-Forwarded-For") == "127.0.0.1"
            # ...and reached us on the listener the test chose
            if upstream == "unix":
                assert theirs.local_address == str(tmp_path / "gws.sock")
            else:
                assert theirs.local_address[0] == "127.0.0.1"
        [ending] = await server_side.wait_endings()
        assert ending.kind == "close" and ending.data == (1000, b"")


@SCHEMES
@UPSTREAMS
@pytest.mark.parametrize("closer", ["client", "server"])
async def test_close_codes_through_nginx(tmp_path: Path, scheme: str, upstream: str,
                                         closer: str) -> None:
    server_side = Recorder()
    async with behind_nginx(tmp_path, server_side, upstream) as (proxy, _):
        client = Recorder()
        conn = await gws.connect(proxy.url(scheme), client,
                                 ssl_context=proxy.ssl_context(scheme))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.listen)
            await server_side.wait_kind("open")
            [theirs] = server_side.conns()
            if closer == "client":
                await conn.write_close(4001, "client – ✓")
                [ending] = await server_side.wait_endings()
                assert ending.data == (4001, "client – ✓".encode())
            else:
                await theirs.write_close(4002, "server – ✓")
                [ending] = await client.wait_endings()
                assert ending.data == (4002, "server – ✓".encode())
            assert ending.kind == "close"
        # the answer (the code echoed) made it back through nginx too
        code = 4001 if closer == "client" else 4002
        [end_client] = client.endings()
        [end_server] = await server_side.wait_endings()
        assert (end_client.kind, end_client.data[0]) == ("close", code)
        assert (end_server.kind, end_server.data[0]) == ("close", code)


@SCHEMES
@UPSTREAMS
async def test_graceful_shutdown_through_nginx(tmp_path: Path, scheme: str,
                                               upstream: str) -> None:
    server_side = Recorder(echo=True)
    async with behind_nginx(tmp_path, server_side, upstream) as (proxy, server):
        client = Recorder()
        async with gws.open_conn(proxy.url(scheme), client,
                                 ssl_context=proxy.ssl_context(scheme)) as conn:
            await conn.write_string("before shutdown")
            await client.wait_kind("message")
            server.scope.cancel()  # cancelling serve(): close 1001 to everyone
            [ending] = await client.wait_endings()
            assert ending.kind == "close" and ending.data[0] == 1001
            await server.done.wait()
        [server_ending] = server_side.endings()
        assert server_ending.kind == "close" and server_ending.data[0] == 1001
        if server.unix is not None:
            assert not server.unix.exists()  # the listener removed its socket file


def test_readme_shows_the_tested_config() -> None:
    """The README's deployment section quotes examples/nginx/trio-gws.conf verbatim."""
    readme = (realproc.REPO / "README.md").read_text()
    assert "```nginx\n" + SITE.read_text() + "```" in readme
