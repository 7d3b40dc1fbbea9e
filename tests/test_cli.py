"""``python -m trio_gws connect`` and ``echo``, used as a person uses them.

Each program runs in a pseudo-terminal (tests/terminal.py): the test types lines,
Enter, Ctrl-D and Ctrl-C, and reads the screen. The servers are real: a trio-gws
server in the test (whose handler records what the client did), the chat example,
and the CLI's own ``echo`` command as a separate process, plain and over TLS. Bad
input (a malformed URL, an unreachable host, a refused handshake, a server closing
with an error code) each ends with a clear message and a non-zero exit status.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

import trio_gws as gws
from trio_gws import Config, Conn, Message, Opcode
from trio_gws._cli._show import (
    close_code_name,
    describe_close,
    describe_message,
    describe_refusal,
    printable,
    redact,
)

import realproc
from helpers import Recorder, load_chat_example, running_server
from terminal import CTRL_C, CTRL_D, ENTER, in_terminal

TIMEOUT = 60
BINARY = bytes(range(40))


class Scripted(Recorder):
    """Echoes, except: ``binary please`` gets 40 binary bytes, ``close CODE REASON``
    makes the server close with that code, ``stall`` stops it reading (until the
    test ends)."""

    async def on_message(self, conn: Conn, message: Message) -> None:
        self._record("message", conn, message)
        text = message.text if message.opcode is Opcode.TEXT else ""
        if text == "binary please":
            await conn.write_message(Opcode.BINARY, BINARY)
        elif text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await conn.write_close(int(code), reason)
        elif text == "stall":
            await trio.sleep_forever()
        else:
            await conn.write_message(message.opcode, message.data)


@asynccontextmanager
async def scripted_server(config: Config | None = None
                          ) -> AsyncIterator[tuple[str, Scripted]]:
    handler = Scripted()
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config) as port:
            yield f"ws://127.0.0.1:{port}/cli?x=1", handler


def texts(handler: Recorder) -> list[str]:
    return [m.text for m in handler.of("message")]


# -- connect: an interactive session ---------------------------------------------------


async def test_connect_lines_in_messages_out_ctrl_d_closes() -> None:
    config = Config(compress_enabled=True, subprotocols=["superchat"])
    async with scripted_server(config) as (url, server):
        async with in_terminal(["connect", url, "--compress", "-p", "chat", "-p",
                                "superchat", "--header", "X-Test: yes  "]) as term:
            await term.expect(re.escape(f"* connected to {url} (subprotocol superchat, "
                                        "permessage-deflate)"))
            await term.expect("type a line and press Enter")
            await term.type("hello ✓" + ENTER)
            await term.expect(re.escape("< text (9 B): hello ✓"))
            await term.type("binary please" + ENTER)
            await term.expect(re.escape("< binary (40 B): 00 01 02 03 04 05 06 07 08 09 "
                                        "0a 0b 0c 0d 0e 0f …"))
            await term.type("tab\there" + ENTER)
            await term.expect(re.escape("< text (8 B): tab\\there"))
            await term.type(CTRL_D)
            await term.expect(re.escape("* end of input: closing with 1000 (normal)"))
            await term.expect(re.escape("* closed: 1000 (normal)"))
            assert await term.wait() == 0
        assert texts(server) == ["hello ✓", "binary please", "tab\there"]
        [conn] = server.conns()
        assert conn.request.headers.get("X-Test") == "yes"
        assert conn.request.target == "/cli?x=1"
        assert conn.subprotocol == "superchat" and conn.compressed
        [ending] = await server.wait_endings()
        assert (ending.kind, ending.data) == ("close", (1000, b""))


async def test_connect_credentials_in_the_url_are_sent_not_shown() -> None:
    async with scripted_server() as (url, server):
        secret_url = url.replace("ws://", "ws://alice:s3cret@")
        async with in_terminal(["connect", secret_url]) as term:
            await term.expect(re.escape("* connected to " + url.replace(
                "ws://", "ws://alice:***@")))
            await term.type(CTRL_D)
            assert await term.wait() == 0
            assert "s3cret" not in term.output
        [conn] = server.conns()
        assert conn.request.headers.get("Authorization") == "Basic YWxpY2U6czNjcmV0"


async def test_connect_ctrl_c_closes_cleanly() -> None:
    async with scripted_server() as (url, server):
        async with in_terminal(["connect", url]) as term:
            await term.expect("connected to")
            await term.type("sent" + ENTER)
            await term.expect(re.escape("< text (4 B): sent"))
            await term.type("half a line, never sent")
            await term.type(CTRL_C)
            await term.expect(re.escape("* interrupted: closing with 1000 (normal)"))
            await term.expect(re.escape("* closed: 1000 (normal)"))
            assert await term.wait() == 0
        assert texts(server) == ["sent"]  # Ctrl-C discards the line being typed
        [ending] = await server.wait_endings()
        assert (ending.kind, ending.data) == ("close", (1000, b""))


async def test_connect_ctrl_c_twice_quits_without_waiting() -> None:
    """A server that stopped reading never answers the close: a second Ctrl-C quits
    at once (status 130) instead of waiting out close_timeout."""
    # The server's own close_timeout bounds its shutdown at the end of the test.
    async with scripted_server(Config(close_timeout=0.5)) as (url, server):
        async with in_terminal(["connect", url]) as term:
            await term.expect("connected to")
            await term.type("stall" + ENTER)
            await server.wait_kind("message")
            await term.type(CTRL_C)
            await term.expect(re.escape("* interrupted: closing with 1000 (normal)"))
            await term.type(CTRL_C)
            await term.expect(re.escape("error: interrupted again: quitting without "
                                        "waiting for the server"))
            assert await term.wait(timeout=4) == 130  # well before close_timeout (5 s)


async def test_connect_line_that_is_not_utf8_is_refused_not_lost() -> None:
    async with scripted_server() as (url, server):
        async with in_terminal(["connect", url]) as term:
            await term.expect("connected to")
            await term._screen.send_all(b"caf\xe9" + ENTER.encode())
            await term.expect(re.escape("error: not sent: that line is not valid UTF-8 "
                                        "(unexpected end of data at byte 3)"))
            await term.type("after" + ENTER)
            await term.expect(re.escape("< text (5 B): after"))
            await term.type(CTRL_D)
            assert await term.wait() == 0
        assert texts(server) == ["after"]


async def test_connect_ping_shows_round_trips() -> None:
    async with scripted_server() as (url, server):
        async with in_terminal(["connect", url, "--ping", "0.2"]) as term:
            await term.expect(r"< pong 1: round trip \d+\.\d ms")
            await term.expect(r"< pong 2: round trip \d+\.\d ms")
            await term.type(CTRL_D)
            await term.expect(re.escape("* closed: 1000 (normal)"))
            assert await term.wait() == 0
        assert server.of("ping")[:2] == [b"1", b"2"]


async def test_connect_shows_pings_from_the_server() -> None:
    async with scripted_server(Config(ping_interval=0.2)) as (url, server):
        async with in_terminal(["connect", url]) as term:
            # The keepalive's pings carry 8 bytes (their pongs measure the latency).
            await term.expect(r"< ping \(\d+ B\), answered with a pong")
            await term.type(CTRL_D)
            assert await term.wait() == 0
        assert server.of("pong")  # the answer reached the server


# -- connect: bad input ----------------------------------------------------------------


async def test_connect_server_closes_with_an_error_code() -> None:
    async with scripted_server() as (url, server):
        async with in_terminal(["connect", url]) as term:
            await term.expect("connected to")
            await term.type("close 4000 go away ✗" + ENTER)
            await term.expect(re.escape('* the server closed the connection: 4000 '
                                        '(application\'s own), reason "go away ✗"'))
            assert await term.wait() == 1


async def test_connect_refused_handshake_shows_status_and_body() -> None:
    """The chat example refuses pages of other origins with 403 and a body."""
    chat = load_chat_example()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(chat.run_chat, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{server.port}/chat?name=eve"
            async with in_terminal(["connect", url, "-H",
                                    "Origin: http://evil.example"]) as term:
                await term.expect(re.escape("error: the server refused the handshake: "
                                            "server answered 403 Forbidden, expected 101"))
                await term.expect(re.escape("response body:\n  origin not allowed"))
                assert await term.wait() == 1
                assert "connected" not in term.output
            assert len(server.connections) == 0
            nursery.cancel_scope.cancel()


async def test_connect_unreachable_host() -> None:
    port = realproc.free_port()  # nothing listens there
    async with in_terminal(["connect", f"ws://127.0.0.1:{port}/"]) as term:
        await term.expect(re.escape(f"error: cannot connect to ws://127.0.0.1:{port}/"))
        await term.expect("Connection refused")
        assert await term.wait() == 1


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1/", "WebSocket URL must start with ws:// or wss://"),
    ("ws://127.0.0.1:port/", "Port could not be cast to integer value"),
    ("ws:///nohost", "WebSocket URL has no host"),
    ("ws://127.0.0.1/#top", "cannot have a fragment"),
])
async def test_connect_malformed_url(url: str, message: str) -> None:
    async with in_terminal(["connect", url]) as term:
        await term.expect(re.escape(f"connect: error: invalid URL {url!r}: ") + ".*"
                          + re.escape(message))
        assert await term.wait() == 2


@pytest.mark.parametrize("args, message", [
    (["ws://127.0.0.1:1/", "--insecure"], "--insecure and --cafile apply to wss:// URLs"),
    (["ws://127.0.0.1:1/", "-H", "no colon"], "expected NAME:VALUE, got 'no colon'"),
    (["ws://127.0.0.1:1/", "-H", "Sec-WebSocket-Protocol: x"], "use --subprotocol"),
    (["ws://127.0.0.1:1/", "-H", "Bad Name: x"], "invalid header name 'Bad Name'"),
    (["ws://127.0.0.1:1/", "--ping", "0"], "must be more than 0"),
    (["wss://127.0.0.1:1/", "--cafile", "/nonexistent/ca.pem"], "cannot use --cafile"),
])
async def test_connect_bad_arguments(args: list[str], message: str) -> None:
    async with in_terminal(["connect", *args]) as term:
        await term.expect(re.escape(message))
        assert await term.wait() == 2


async def test_connect_through_a_real_proxy(tmp_path: Path) -> None:
    """``--proxy`` goes through tinyproxy (its log shows the CONNECT); a proxy that
    cannot be reached is a clear error, not a direct connection behind the user's back."""
    from proxies import tinyproxy

    with tinyproxy(tmp_path) as proxy:
        async with scripted_server() as (url, server):
            async with in_terminal(["connect", url, "--proxy",
                                    f"http://127.0.0.1:{proxy.port}"]) as term:
                await term.expect("connected to")
                await term.type("through the proxy" + ENTER)
                await term.expect(re.escape("< text (17 B): through the proxy"))
                await term.type(CTRL_D)
                assert await term.wait() == 0
            assert "CONNECT" in await proxy.wait_log("CONNECT")
    async with in_terminal(["connect", "ws://127.0.0.1:1/", "--proxy",
                            f"http://127.0.0.1:{realproc.free_port()}"]) as term:
        await term.expect("proxy")
        assert await term.wait() == 1


# -- the CLI's own echo server, with connect in front of it ------------------------------


def echo_process(tmp_path: Path, *args: str) -> tuple[list[str], int]:
    port = realproc.free_port()
    return [sys.executable, "-m", "trio_gws", "echo", "--port", str(port), *args], port


async def test_echo_command_in_a_terminal_and_ctrl_c() -> None:
    port = realproc.free_port()
    with trio.fail_after(TIMEOUT):
        async with in_terminal(["echo", "--port", str(port), "--compress"]) as term:
            await term.expect(re.escape(f"* echo server on ws://127.0.0.1:{port}/ "
                                        "(any path); Ctrl-C stops it"))
            client = Recorder()
            conn = await gws.connect(f"ws://127.0.0.1:{port}/anywhere", client,
                                     config=Config(compress_enabled=True))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.listen)
                await term.expect(r"\* 127\.0\.0\.1:\d+ connected \(path /anywhere, "
                                  r"permessage-deflate\)")
                await conn.write_string("über")
                await conn.write_message(Opcode.BINARY, b"\x00\xff")
                echoes = await client.wait_kind("message", 2)
                assert [(m.opcode, m.data) for m in echoes] == [
                    (Opcode.TEXT, "über".encode()), (Opcode.BINARY, b"\x00\xff")]
                await term.expect(re.escape("< text (5 B): über"))
                await term.expect(re.escape("< binary (2 B): 00 ff"))
                await term.type(CTRL_C)
                await term.expect(re.escape("* SIGINT: shutting down, close 1001 to "
                                            "1 connection"))
                [ending] = await client.wait_endings()
                assert (ending.kind, ending.data[0]) == ("close", 1001)
            await term.expect(re.escape("* stopped"))
            assert await term.wait() == 0


def test_connect_piped_into_the_echo_command(tmp_path: Path) -> None:
    """Not a terminal: lines from a pipe, the last one unterminated, and every echo
    printed before the close (nothing received is lost to the end of input: the
    echoes may arrive before or after the close starts)."""
    argv, port = echo_process(tmp_path)
    with realproc.running(argv, log=tmp_path / "echo.out", port=port) as echo:
        connect = subprocess.run(
            [sys.executable, "-m", "trio_gws", "connect", f"ws://127.0.0.1:{port}/"],
            input="one\n\ntwo ✓\nlast".encode(), capture_output=True, timeout=TIMEOUT)
        lines = connect.stdout.decode().splitlines()
        assert lines[0] == f"* connected to ws://127.0.0.1:{port}/", lines
        assert [line for line in lines if line.startswith("<")] == [
            "< text (3 B): one", "< text (0 B)", "< text (7 B): two ✓", "< text (4 B): last",
        ], lines
        assert "* end of input: closing with 1000 (normal)" in lines
        assert lines[-1] == "* closed: 1000 (normal)" and len(lines) == 7, lines
        assert connect.returncode == 0 and connect.stderr == b""
        realproc.stop(echo)
        assert echo.returncode == 0
    assert "closed: 1000 (normal)" in (tmp_path / "echo.out").read_text()


async def test_connect_to_echo_over_tls(tmp_path: Path) -> None:
    """``echo --tls`` makes a throwaway certificate; ``connect`` refuses it unless told
    to trust it (``--cafile``) or not to check (``--insecure``, with a warning)."""
    argv, port = echo_process(tmp_path, "--tls")
    log = tmp_path / "echo.out"
    with realproc.running(argv, log=log, port=port):
        # It listens before it prints where it listens: wait for that line.
        with trio.move_on_after(TIMEOUT):
            while "* echo server on" not in log.read_text():
                await trio.sleep(0.05)
        found = re.search(r"--cafile (\S+)", log.read_text())
        assert found is not None, log.read_text()
        ca_file = found.group(1)
        assert "-----BEGIN CERTIFICATE-----" in Path(ca_file).read_text()
        assert f"* echo server on wss://127.0.0.1:{port}/" in log.read_text()
        url = f"wss://127.0.0.1:{port}/"

        async with in_terminal(["connect", url]) as term:
            await term.expect(re.escape(f"error: TLS handshake with {url} failed: ")
                              + ".*certificate verify failed")
            assert await term.wait() == 1

        for trust in (["--cafile", ca_file], ["--insecure"]):
            async with in_terminal(["connect", url, *trust]) as term:
                await term.expect(re.escape(f"* connected to {url}"))
                await term.type("secret" + ENTER)
                await term.expect(re.escape("< text (6 B): secret"))
                await term.type(CTRL_D)
                await term.expect(re.escape("* closed: 1000 (normal)"))
                assert await term.wait() == 0
                warned = "WARNING: --insecure: the server's certificate is NOT checked"
                assert (warned in term.output) == (trust == ["--insecure"])
    assert not Path(ca_file).exists()  # the throwaway authority went with the server


async def test_echo_with_certificate_files(tmp_path: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    argv, port = echo_process(tmp_path, "--certfile", str(tmp_path / "cert.pem"),
                              "--keyfile", str(tmp_path / "key.pem"))
    with realproc.running(argv, log=tmp_path / "echo.out", port=port):
        async with in_terminal(["connect", f"wss://127.0.0.1:{port}/", "--cafile",
                                str(tmp_path / "ca.pem")]) as term:
            await term.type("over tls" + ENTER)
            await term.expect(re.escape("< text (8 B): over tls"))
            await term.type(CTRL_D)
            assert await term.wait() == 0


async def test_readme_session_is_what_a_user_sees() -> None:
    """The README's console example, replayed: the same commands, the same keys, the
    same screen (the port aside)."""
    readme = (realproc.REPO / "README.md").read_text()
    block = readme.split("## From the command line\n\n```console\n", 1)[1].split("```")[0]
    echo_part, connect_part = block.split("\n\n")
    echo_command, *echo_screen = echo_part.splitlines()
    connect_command, *connect_screen = connect_part.splitlines()
    port = realproc.free_port()

    def command(line: str) -> list[str]:
        words = line.split("#")[0].replace("3000", str(port)).split()
        assert words[:3] == ["$", "python", "-m"] and words[3] == "trio_gws", line
        return words[4:]

    def screen(lines: list[str]) -> str:
        return "\n".join(lines).replace("3000", str(port))

    with trio.fail_after(TIMEOUT):
        async with in_terminal(command(echo_command)) as echo:
            await echo.expect(re.escape(screen(echo_screen)))
            async with in_terminal(command(connect_command)) as term:
                typed = connect_screen[2]  # the line after the two status lines
                await term.expect(re.escape(screen(connect_screen[:2])))
                await term.type(typed + ENTER)
                await term.expect(re.escape(screen(connect_screen[3:4])))
                await term.type(CTRL_D)
                assert await term.wait() == 0
                assert term.output == screen(connect_screen) + "\n"
            await echo.type(CTRL_C)
            assert await echo.wait() == 0


@pytest.mark.parametrize("args, message", [
    (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
    (["--certfile", "/nonexistent/cert.pem"], "cannot load --certfile/--keyfile"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
])
async def test_echo_bad_arguments(args: list[str], message: str) -> None:
    async with in_terminal(["echo", "--port", "0", *args]) as term:
        await term.expect(re.escape(message))
        assert await term.wait() == 2


async def test_echo_port_in_use() -> None:
    async with running_server(Recorder()) as port:
        async with in_terminal(["echo", "--port", str(port)]) as term:
            await term.expect(re.escape(f"error: cannot listen on 127.0.0.1 port {port}:"))
            assert await term.wait() == 1


async def test_no_command_shows_help() -> None:
    async with in_terminal([]) as term:
        await term.expect("connect +an interactive client")
        await term.expect("echo +an echo server")
        assert await term.wait() == 2


# -- what the output looks like (pure functions) ------------------------------------------


def test_printable_escapes_control_characters() -> None:
    assert printable("plain ✓ 你好") == "plain ✓ 你好"
    assert printable("a\nb\r\tc\x1b[31m\x00\x7f\x9b") == "a\\nb\\r\\tc\\x1b[31m\\x00\\x7f\\x9b"


def test_describe_message() -> None:
    assert describe_message(Opcode.TEXT, "héllo".encode()) == "< text (6 B): héllo"
    assert describe_message(Opcode.TEXT, b"") == "< text (0 B)"
    assert describe_message(Opcode.BINARY, b"") == "< binary (0 B)"
    assert describe_message(Opcode.BINARY, bytes(16)) == "< binary (16 B): " + " ".join(
        ["00"] * 16)
    assert describe_message(Opcode.BINARY, bytes(17)).endswith("00 …")


def test_close_descriptions() -> None:
    assert close_code_name(1000) == "1000 (normal)"
    assert close_code_name(1009) == "1009 (message too big)"
    assert close_code_name(4001) == "4001 (application's own)"
    assert close_code_name(3000) == "3000"
    assert describe_close(1001, "bye\n".encode()) == '1001 (going away), reason "bye\\n"'


def test_redact() -> None:
    assert redact("wss://u:p@example.com:8443/x?y") == "wss://u:***@example.com:8443/x?y"
    assert redact("ws://u@example.com/") == "ws://u@example.com/"
    assert redact("ws://[::1/") == "ws://[::1/"  # malformed: left alone


def test_describe_refusal() -> None:
    error = gws.HandshakeError("server answered 401 Unauthorized, expected 101",
                               status=401, body=b"log in first\nplease\n")
    assert describe_refusal(error) == [
        "the server refused the handshake: server answered 401 Unauthorized, expected 101",
        "response body:", "  log in first", "  please"]
    assert describe_refusal(gws.HandshakeError("server closed the connection before "
                                               "answering", status=0)) == [
        "handshake failed: server closed the connection before answering"]
