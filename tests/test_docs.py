"""The documentation site's code works: every ```python block of its pages runs, every
example file a page shows is run by a test here, and the API reference names every
public name.

The pages are docs/conf.py's own sources. A page's ```python blocks run in order, in
one fresh interpreter (as a reader would paste them), bounded in time. Example files
(``{literalinclude}``) are programs: each has a test below that runs it for real,
servers on 127.0.0.1 and port 0 (or a free port), bounded and stopped. The Sphinx
build itself (warnings as errors) runs in scripts/test.sh, beside pytest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme

import trio_gws as gws

import realproc
from test_nginx import main_conf, site_conf

REPO = realproc.REPO
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
TIMEOUT = 60

# -- the pages and their code --------------------------------------------------------


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def site_pages() -> list[Path]:
    """The pages of the site: the sources docs/conf.py gives Sphinx."""
    from sphinx.util.matching import get_matching_files

    conf = load_module(DOCS / "conf.py", "trio_gws_docs_conf")
    return [REPO / page for page in sorted(get_matching_files(
        REPO, conf.include_patterns, conf.exclude_patterns))]


@dataclass
class Block:
    page: Path
    line: int  # of the block's first line of code, 1-based
    info: str  # what follows the opening fence: "python", "{literalinclude} path"...
    code: str


FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page (MyST directives are fenced blocks too)."""
    found = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).strip()
        end = i + 1
        while end < len(lines) and not (lines[end].startswith(fence)
                                        and lines[end].strip() == fence[0] * len(
                                            lines[end].strip())):
            end += 1
        assert end < len(lines), f"{page}:{i + 1}: fence never closed"
        found.append(Block(page, i + 2, info, "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return found


PAGES = site_pages()
ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
PYTHON_PAGES = sorted({block.page for block in ALL_BLOCKS if block.info == "python"})

# The runner of a page's ```python blocks: one namespace, in page order, each block
# compiled with its page and line so a traceback points into the page.
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for page, line, code in json.load(sys.stdin):
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
"""


def shown_path(block: Block) -> Path:
    """The file a ``{literalinclude}`` or ``{include}`` block shows."""
    return (block.page.parent / block.info.split(None, 1)[1]).resolve()


def test_the_pages_have_code_to_check() -> None:
    """The parser finds what the pages hold (else the tests below check nothing)."""
    assert REPO / "docs" / "index.md" in PYTHON_PAGES
    assert REPO / "docs" / "howto" / "compression.md" in PYTHON_PAGES
    shown = {shown_path(b) for b in ALL_BLOCKS if b.info.startswith("{literalinclude}")}
    assert EXAMPLES / "echo_server.py" in shown


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    code = [(str(b.page.relative_to(REPO)), b.line, b.code)
            for b in ALL_BLOCKS if b.page == page and b.info == "python"]
    try:
        done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(code),
                              capture_output=True, text=True, cwd=tmp_path,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail(f"the python blocks of {page} did not finish within {TIMEOUT} s")
    assert done.returncode == 0, f"the python blocks of {page} failed:\n{done.stderr}"


def test_no_python_hides_from_the_runner() -> None:
    """Python is fenced as ```python, the one spelling the runner runs, and examples
    longer than a snippet are files shown with {literalinclude}."""
    for block in ALL_BLOCKS:
        words = block.info.split()
        language = words[0] if words else ""
        assert language not in ("py", "py3", "python3", "pycon", "ipython", "{code-block}",
                                "{code}", "{sourcecode}", "{doctest}"), (
            f"{block.page}:{block.line - 1}: ```{block.info} is not run by the tests; "
            "use ```python or {literalinclude} an example file")


def test_the_api_reference_documents_every_public_name() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = [name.removeprefix("trio_gws.") for name in re.findall(
        r"^\.\. auto(?:function|class|exception|data)::\s+(\S+)", text, re.M)]
    public = [name for name in documented if "." not in name]
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert sorted(public) == sorted(gws.__all__)


# -- the example files a page shows, and who runs them -------------------------------

#: Every Python file a page shows with {literalinclude}, and the test that runs it.
EXERCISED = {
    "docs/examples/echo_server.py": "test_tutorial_echo_server_and_client",
    "docs/examples/echo_client.py": "test_tutorial_echo_server_and_client",
    "docs/examples/chat_client.py": "test_tutorial_chat_client",
    "examples/chat/server.py": "test_tutorial_chat_client",  # and test_chat_example.py
    "docs/examples/wss_echo.py": "test_wss_echo_example",
    "docs/examples/deflate_echo.py": "test_deflate_echo_example",
    "docs/examples/behind_nginx.py": "test_behind_nginx_example",
    "docs/examples/many_cores.py": "test_many_cores_example",
    # a test file itself, collected by pytest (testpaths in pyproject.toml)
    "docs/examples/test_handlers.py": "test_handlers_example_is_collected",
}


def test_every_example_shown_is_run(pytestconfig: pytest.Config) -> None:
    shown = {str(shown_path(b).relative_to(REPO)) for b in ALL_BLOCKS
             if b.info.startswith("{literalinclude}") and shown_path(b).suffix == ".py"}
    assert shown == set(EXERCISED), "an example is shown but not run, or run but not shown"
    for test in EXERCISED.values():
        assert callable(globals().get(test)), f"no test {test}"
    written = {str(path.relative_to(REPO)) for path in EXAMPLES.glob("*.py")}
    assert written <= shown, f"examples no page shows: {written - shown}"


def test_handlers_example_is_collected(pytestconfig: pytest.Config) -> None:
    assert "docs/examples" in pytestconfig.getini("testpaths")


def example(name: str) -> Any:
    return load_module(EXAMPLES / f"{name}.py", f"docs_example_{name}")


class Inbox(gws.EventHandler):
    """Messages on a channel; how the connection ended."""

    def __init__(self) -> None:
        self._send, self.messages = trio.open_memory_channel[gws.Message](1000)
        self.ended = trio.Event()
        self.close_code: int | None = None

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await self._send.send(message)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        self.close_code = code
        self.ended.set()

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        self.ended.set()


async def test_tutorial_echo_server_and_client(capsys: pytest.CaptureFixture[str]) -> None:
    echo_server, echo_client = example("echo_server"), example("echo_client")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = (await nursery.start(echo_server.main, 0)).port
            replies = await echo_client.main(f"ws://127.0.0.1:{port}/")
            nursery.cancel_scope.cancel()
    assert [(m.opcode, m.data) for m in replies] == [
        (gws.Opcode.TEXT, b"hello, trio-gws"), (gws.Opcode.BINARY, bytes(range(8)))]
    out = capsys.readouterr().out
    assert f"echo server on ws://127.0.0.1:{port}/" in out
    assert "closed with 1000" in out
    assert "echo: hello, trio-gws" in out


async def test_tutorial_chat_client() -> None:
    chat = load_module(REPO / "examples" / "chat" / "server.py", "docs_chat_server")
    chat_client = example("chat_client")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(chat.run_chat, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{server.port}/chat"
            bob = chat_client.ChatClient()
            async with gws.open_conn(f"{url}?name=bob", bob):
                assert (await bob.events.receive())["type"] == "welcome"
                assert (await bob.events.receive())["type"] == "join"  # bob himself
                seen = await chat_client.say(url, "alice", ["hi bob", "bye"])
                heard = [await bob.events.receive() for _ in range(4)]
            nursery.cancel_scope.cancel()
    assert seen[0]["type"] == "welcome" and seen[0]["users"] == ["alice", "bob"]
    assert [(e["type"], e["name"], e.get("text")) for e in heard] == [
        ("join", "alice", None), ("message", "alice", "hi bob"),
        ("message", "alice", "bye"), ("leave", "alice", None)]


async def test_wss_echo_example() -> None:
    with trio.fail_after(TIMEOUT):
        assert await example("wss_echo").main() == "over TLS"


async def test_deflate_echo_example() -> None:
    with trio.fail_after(TIMEOUT):
        # the client that asked for compression got it; the one that did not, did not
        assert await example("deflate_echo").main() == [True, False]


@pytest.mark.parametrize("upstream", ["tcp", "unix"])
async def test_behind_nginx_example(tmp_path: Path, upstream: str) -> None:
    """docs/examples/behind_nginx.py behind Debian's nginx running the README's
    config, over ws:// and over wss:// terminated at nginx."""
    nginx = realproc.require("nginx")
    behind_nginx = example("behind_nginx")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    for number, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(tmp_path / "cert.pem"), append=number > 0)
    ports = dict(zip(("ws", "wss"), realproc.free_ports(2)))
    socket_path = tmp_path / "ws.sock"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            if upstream == "unix":
                await nursery.start(behind_nginx.main, 0, str(socket_path))
                where = f"unix:{socket_path}"
            else:
                server = await nursery.start(behind_nginx.main, 0)
                where = f"127.0.0.1:{server.port}"
            (tmp_path / "trio-gws.conf").write_text(site_conf({
                "UPSTREAM": where,
                "LISTEN": f"127.0.0.1:{ports['ws']}",
                "LISTEN_TLS": f"127.0.0.1:{ports['wss']}",
                "CERTIFICATE": str(tmp_path / "cert.pem"),
                "CERTIFICATE_KEY": str(tmp_path / "key.pem"),
            }))
            (tmp_path / "nginx.conf").write_text(main_conf(tmp_path))
            argv: list[str | Path] = [nginx, "-p", f"{tmp_path}/", "-c",
                                      tmp_path / "nginx.conf", "-e", tmp_path / "error.log"]
            with realproc.running(argv, log=tmp_path / "nginx.out", port=ports["ws"]):
                realproc.wait_for_port(ports["wss"])
                context = ssl.create_default_context()
                ca.configure_trust(context)
                for scheme, proto, ssl_context in (("ws", "http", None),
                                                   ("wss", "https", context)):
                    inbox = Inbox()
                    async with gws.open_conn(f"{scheme}://127.0.0.1:{ports[scheme]}/",
                                             inbox, ssl_context=ssl_context) as conn:
                        greeting = await inbox.messages.receive()
                        assert greeting.text == f"hello 127.0.0.1 ({proto})"
                        await conn.write_string("through nginx")
                        assert (await inbox.messages.receive()).text == "through nginx"
            nursery.cancel_scope.cancel()
    assert not socket_path.exists()  # the listener removed its socket file


async def test_many_cores_example(tmp_path: Path) -> None:
    """Two worker processes on one port: connections reach both, and SIGTERM to the
    parent shuts both down gracefully (every client gets 1001)."""
    port = realproc.free_port()
    log = tmp_path / "many_cores.log"
    argv = [sys.executable, EXAMPLES / "many_cores.py", "--port", str(port),
            "--workers", "2"]
    with realproc.running(argv, log=log, port=port) as process:
        with trio.fail_after(TIMEOUT):
            while log.read_text().count("serving") < 2:  # both workers listen
                await trio.sleep(0.05)
            workers: set[str] = set()
            clients: list[Inbox] = []
            async with trio.open_nursery() as nursery:
                # The kernel picks a worker per connection: connect until both
                # answered (two of 64 connections all on one worker: odds of 2**-63).
                while len(workers) < 2 and len(clients) < 64:
                    inbox = Inbox()
                    conn = await gws.connect(f"ws://127.0.0.1:{port}/", inbox)
                    nursery.start_soon(conn.listen)
                    clients.append(inbox)
                    await conn.write_string("who?")
                    workers.add((await inbox.messages.receive()).text)
                assert len(workers) == 2, workers
                os.kill(process.pid, signal.SIGTERM)
                for inbox in clients:
                    await inbox.ended.wait()
            assert {inbox.close_code for inbox in clients} == {1001}
            while process.poll() is None:
                await trio.sleep(0.05)
    assert process.returncode == 0
