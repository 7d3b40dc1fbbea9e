"""Serving in production: any listener (TCP, Unix, pre-bound), reuse_port across real
processes, the Server object, and the graceful shutdown on every path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_gws as gws
from helpers import Peer, Recorder, count_fds, settle, ws_connect
from realproc import REPO, free_port
from trio_gws import _listeners


async def unix_ws_connect(path: Path) -> Peer:
    stream = await trio.open_unix_socket(str(path))
    peer, _ = await ws_connect(0, stream=stream)
    return peer


async def cancellable(scope: trio.CancelScope, serve: Any, *,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``serve`` under ``scope``: cancelling it shuts the server down while the
    test's own task goes on talking to the clients."""
    with scope:
        await serve(task_status=task_status)


async def test_unix_and_tcp_from_one_serve_listeners_shut_down_gracefully(
        tmp_path: Path) -> None:
    rec = Recorder(echo=True)
    path = tmp_path / "ws.sock"
    stop = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        unix = await gws.open_unix_listener(path)
        tcp = await gws.open_tcp_listeners(0, host="127.0.0.1")
        server = await nursery.start(cancellable, stop,
                                     partial(gws.serve_listeners, rec, [unix, *tcp]))
        assert isinstance(server, gws.Server)
        assert server.listeners == [unix, *tcp] and server.port is not None
        over_unix = await unix_ws_connect(path)
        over_tcp, _ = await ws_connect(server.port)
        for peer, word in ((over_unix, b"unix"), (over_tcp, b"tcp")):
            await peer.send_text(word)
            assert (await peer.recv_frame()).payload == word
        await settle(lambda: len(server.connections) == 2)
        stop.cancel()  # the graceful shutdown
        # Both get 1001 and complete the close handshake.
        for peer in (over_unix, over_tcp):
            frame = await peer.recv_close()
            assert frame.close_code == 1001
            await peer.send_close(1001)
            assert await peer.expect_eof() == b""
    assert [e.kind for e in rec.endings()] == ["close", "close"]
    assert sorted(e.data[0] for e in rec.endings()) == [1001, 1001]
    assert not path.exists()  # the socket file is removed with its listener


async def test_server_connections_is_a_read_only_live_view() -> None:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve, rec, 0, host="127.0.0.1"))
        assert len(server.connections) == 0 and list(server.connections) == []
        a, _ = await ws_connect(server.port)
        b, _ = await ws_connect(server.port)
        await settle(lambda: len(server.connections) == 2)
        conns = list(server.connections)
        assert all(isinstance(c, gws.Conn) and c in server.connections for c in conns)
        assert not hasattr(server.connections, "add")
        # Iteration is over a snapshot: connections may end meanwhile.
        for conn in server.connections:
            await conn.write_close(1000)
        for peer in (a, b):
            await peer.recv_close()
            await peer.send_close(1000)
            await peer.aclose()
        await settle(lambda: len(server.connections) == 0)
        assert "0 open connections" in repr(server)
        nursery.cancel_scope.cancel()


async def test_a_pre_bound_socket_is_served() -> None:
    """An inherited or pre-bound socket (systemd, a supervisor) in a SocketListener."""
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    port = raw.getsockname()[1]
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve_listeners, Recorder(echo=True),
                                             [listener]))
        assert server.port == port
        peer, _ = await ws_connect(port)
        await peer.send_text(b"inherited")
        assert (await peer.recv_frame()).payload == b"inherited"
        await peer.aclose()
        nursery.cancel_scope.cancel()


async def test_tls_over_a_unix_socket(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    path = tmp_path / "tls.sock"
    async with trio.open_nursery() as nursery:
        unix = await gws.open_unix_listener(path)
        await nursery.start(partial(gws.serve_listeners, Recorder(echo=True), [unix],
                                    ssl_context=server_ctx))
        stream = await trio.open_unix_socket(str(path))
        async with gws.open_conn("wss://localhost/", stream=stream,
                                 ssl_context=client_ctx) as conn:
            assert conn.request.path == "/"
        nursery.cancel_scope.cancel()


async def test_a_unix_socket_path_that_exists_is_a_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "taken.sock"
    first = await gws.open_unix_listener(taken)
    with pytest.raises(FileExistsError, match="another server may be using it"):
        await gws.open_unix_listener(taken)
    await first.aclose()
    assert not taken.exists()
    plain = tmp_path / "a-file"
    plain.write_text("not a socket")
    with pytest.raises(FileExistsError, match=r"\(a file\)"):
        await gws.open_unix_listener(plain)
    assert plain.read_text() == "not a socket"  # never removed


async def test_a_unix_listener_never_removes_a_successors_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    first = await gws.open_unix_listener(path, mode=0o600)
    assert (path.stat().st_mode & 0o777) == 0o600
    path.unlink()  # a deploy replaced it...
    second = await gws.open_unix_listener(path)
    await first.aclose()  # ...the old one closing must leave the new file alone
    assert path.exists()
    await second.aclose()
    assert not path.exists()


async def test_a_unix_socket_path_that_cannot_be_bound_leaves_nothing(tmp_path: Path
                                                                      ) -> None:
    with pytest.raises(FileNotFoundError):
        await gws.open_unix_listener(tmp_path / "no-such-folder" / "s.sock")
    with pytest.raises(OSError):  # longer than a sockaddr_un holds
        await gws.open_unix_listener(tmp_path / ("x" * 200))
    assert list(tmp_path.iterdir()) == []


async def test_a_unix_listener_whose_file_is_gone_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    listener = await gws.open_unix_listener(path)
    path.unlink()  # removed by hand, or by a cleanup script
    await listener.aclose()
    assert not path.exists()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_port_zero_gives_every_address_the_same_port() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")  # pragma: no cover
    try:
        listeners = await gws.open_tcp_listeners(0, host=None)
    except OSError as exc:  # pragma: no cover - IPv6 disabled in the kernel
        pytest.skip(f"cannot bind the wildcards: {exc}")
    ports = {listener.socket.getsockname()[1] for listener in listeners}
    for listener in listeners:
        await listener.aclose()
    assert len(listeners) >= 1 and len(ports) == 1


async def test_a_port_in_use_is_an_os_error_without_reuse_port() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve, Recorder(), 0, host="127.0.0.1"))
        with pytest.raises(OSError):
            await gws.open_tcp_listeners(server.port, host="127.0.0.1")
        nursery.cancel_scope.cancel()


async def test_reuse_port_where_the_platform_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_listeners.sys, "platform", "darwin")
    with pytest.raises(NotImplementedError, match="SO_REUSEPORT"):
        await gws.open_tcp_listeners(0, host="127.0.0.1", reuse_port=True)
    with pytest.raises(NotImplementedError):
        await gws.serve(Recorder(), 0, host="127.0.0.1", reuse_port=True)


WORKER = textwrap.dedent("""
    import os, sys, trio, trio_gws as gws

    class Hello(gws.EventHandler):
        async def on_open(self, conn):
            await conn.write_message(gws.Opcode.TEXT, str(os.getpid()))

    async def main(port):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: gws.serve(
                Hello(), port, host="127.0.0.1", reuse_port=True, task_status=task_status))
            print("ready", flush=True)

    trio.run(main, int(sys.argv[1]))
""")


async def test_two_processes_with_reuse_port_share_one_port(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, str(script), str(port)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
               for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await trio.to_thread.run_sync(worker.stdout.readline)
            assert line.strip() == "ready", line
        pids: set[int] = set()
        with trio.fail_after(30):
            for _ in range(200):  # the kernel spreads connections by a hash of ports
                peer, _ = await ws_connect(port)
                pids.add(int((await peer.recv_frame()).payload))
                await peer.aclose()
                if len(pids) == 2:
                    break
        assert pids == {w.pid for w in workers}
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(10)


async def test_shutdown_abandons_plain_http_requests_in_progress() -> None:
    gate = trio.Event()

    async def slow(request: gws.Request) -> gws.Response:
        await gate.wait()
        return gws.Response(200, body="late")

    config = gws.Config(http_handler=slow, close_timeout=1)
    fds = count_fds()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(gws.serve, Recorder(), 0, host="127.0.0.1",
                                                 config=config))
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        # The server is gone: the request was abandoned, its stream closed.
        assert await stream.receive_some(100) == b""
        await stream.aclose()
    await settle(lambda: count_fds() <= fds)


def test_handler_for_any_listener_is_documented() -> None:
    assert gws.serve_listeners.__doc__ and "Unix" in gws.serve_listeners.__doc__
    assert "reuse_port" in (gws.serve.__doc__ or "")

