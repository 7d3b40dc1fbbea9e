"""The chat example (examples/chat/) in a real browser: Debian's headless Chromium.

The chat runs in-process (``run_chat`` on a free port, the server it reports at hand)
and serves its own page; two tabs load that page, join with a name by typing into
the page's own form, and chat: what one types shows in the other, over
permessage-deflate that Chromium negotiated. A page from another origin (the same
host, another port) cannot open the chat's WebSocket: the server answers 403 before
any connection exists, and the page sees the failure.

The first test leaves a screenshot of the chat; ``make screenshot`` runs it with
``GWS_CHAT_SCREENSHOT`` set to refresh docs/images/chat.png, the picture the README
shows.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from selenium.webdriver.common.keys import Keys

import trio_gws as gws

from browser import Browser, Page, harness_page, running_browser, serving_files
from helpers import http_exchange, load_chat_example

chat = load_chat_example()
TIMEOUT = 90
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with running_browser(tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


@asynccontextmanager
async def chat_server() -> AsyncIterator[gws.Server]:
    """examples/chat/server.py's run_chat on a free 127.0.0.1 port, until the block ends."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: gws.Server = await nursery.start(chat.run_chat, "127.0.0.1", 0)
            yield server
            nursery.cancel_scope.cancel()


async def join(page: Page, name: str) -> str:
    """Type ``name`` into the page's join form and press Enter; the status line."""
    await page.type("#name", name + Keys.ENTER)
    status: str = await page.wait_for(
        "!document.getElementById('room').hidden"
        " && document.getElementById('status').textContent.startsWith('You are')"
        " && document.getElementById('status').textContent")
    # The join form is gone from sight (the room replaced it).
    assert await page.evaluate(
        "return getComputedStyle(document.getElementById('join')).display;") == "none"
    return status


async def say(page: Page, text: str) -> None:
    """Type ``text`` into the page's message field and press Enter."""
    await page.type("#text", text + Keys.ENTER)


async def log_lines(page: Page, count: int) -> list[str]:
    """The chat log's lines, once it has at least ``count``."""
    lines: list[str] = await page.wait_for(
        f"document.querySelectorAll('#log p').length >= {count}"
        " && Array.from(document.querySelectorAll('#log p'), (p) => p.textContent)")
    return lines


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (checks it is a PNG at all)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


async def test_two_users_chat_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    async with chat_server() as server:
        home = f"http://127.0.0.1:{server.port}/"
        alice = await browser.open_page(home)
        bob = await browser.open_page(home)

        assert await join(alice, "alice") == "You are alice. In the room: alice"
        assert await join(bob, "bob") == "You are bob. In the room: alice, bob"

        # Chromium offered permessage-deflate and the server took it, on both.
        for page in (alice, bob):
            assert (await page.evaluate("return socket.extensions;")).startswith(
                "permessage-deflate")
        conns = list(server.connections)
        assert len(conns) == 2 and all(conn.compressed for conn in conns)
        assert {conn.request.headers.get("Origin") for conn in conns} == {home.rstrip("/")}
        ports = {conn.session["name"]: conn.remote_address[1] for conn in conns}

        await say(alice, "Hi Bob! This page, /healthz and the chat share one port.")
        await say(bob, "Grüße, Alice – and it all runs on Trio.")
        expected = [
            f"alice joined (1 here) 127.0.0.1:{ports['alice']}",
            f"bob joined (2 here) 127.0.0.1:{ports['bob']}",
            f"alice 127.0.0.1:{ports['alice']}: Hi Bob! This page, /healthz and the chat "
            "share one port.",
            f"bob 127.0.0.1:{ports['bob']}: Grüße, Alice – and it all runs on Trio.",
        ]
        assert await log_lines(alice, 4) == expected
        assert await log_lines(bob, 3) == expected[1:]  # bob came after alice joined
        assert await alice.evaluate("return document.getElementById('text').value;") == ""

        shot = tmp_path / "chat.png"
        await alice.screenshot(shot, "body")
        width, height = png_size(shot)
        assert width >= 400 and height >= 300, (width, height)
        target = os.environ.get("GWS_CHAT_SCREENSHOT")
        if target:  # make screenshot
            shutil.copyfile(shot, target)

        # What a user types is shown as text, never parsed as HTML.
        await say(bob, "<img src=x onerror=alert(1)>")
        lines = await log_lines(alice, 5)
        assert lines[4].endswith(": <img src=x onerror=alert(1)>")
        assert await alice.evaluate("return document.querySelectorAll('#log img').length;") == 0

        # Closing a tab is leaving the room.
        await bob.close()
        lines = await log_lines(alice, 6)
        assert lines[5] == f"bob left (1 here) 127.0.0.1:{ports['bob']}"
        response, peer = await http_exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await peer.aclose()
        assert response.body == b"ok 1 members\n"


async def test_page_of_another_origin_is_refused(browser: Browser,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Cross-site WebSocket hijacking: a page of another origin (here the same host on
    another port) opens a WebSocket to the chat with the user's browser; the chat's
    ``Config.origins`` answers 403 and no connection is ever made."""
    caplog.set_level(logging.DEBUG, logger="trio_gws")
    async with chat_server() as server, serving_files(harness_page()) as other:
        chat_url = f"ws://127.0.0.1:{server.port}/chat?name=mallory"
        await browser.console()  # only what this test causes, below
        page = await browser.open_page(other + "/")
        seen = await page.evaluate("""
            const [url] = args;
            let opened = false;
            try { await harness.open('chat', url); opened = true; } catch (e) {}
            return {opened, events: [await harness.describe(await harness.next('chat')),
                                     await harness.describe(await harness.next('chat'))]};
        """, chat_url)
        assert seen == {"opened": False, "events": [
            {"type": "error"}, {"type": "close", "code": 1006, "reason": "", "wasClean": False}]}
        # Chromium says why: the handshake's answer was 403...
        console = await browser.console()
        assert any(chat_url in line and "Unexpected response code: 403" in line
                   for line in console), console
        # ...and the server says whose: the other page's origin, refused.
        refusals = [r.getMessage() for r in caplog.records
                    if r.name == "trio_gws" and "not allowed" in r.getMessage()]
        assert refusals == [f"handshake failed: origin {other!r} not allowed"]
        assert len(server.connections) == 0
        assert chat.own_origins("127.0.0.1", server.port)[0] != other
        response, peer = await http_exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await peer.aclose()
        assert response.body == b"ok 0 members\n"


def test_readme_shows_the_screenshot() -> None:
    """The committed screenshot exists, is a PNG of a sensible size, and the README
    shows it."""
    repo = Path(__file__).resolve().parent.parent
    image = repo / "docs" / "images" / "chat.png"
    width, height = png_size(image)
    assert 400 <= width <= 1600 and 300 <= height <= 1200, (width, height)
    assert image.stat().st_size < 200_000
    assert "](docs/images/chat.png)" in (repo / "README.md").read_text()
