"""A real browser against trio-gws: Debian's headless Chromium (see browser.py).

The page comes over http from 127.0.0.1 and talks to a trio-gws echo server with
compression enabled: a 1 MiB binary message and a non-ASCII text come back exact,
Chromium negotiates permessage-deflate (both ends agree), and a message over
max_content_length ends with a 1009 close event in the page.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from trio_gws import Config, Conn, MessageTooLargeError, Opcode

from browser import Browser, Page, harness_page, running_browser, serving_files
from helpers import Recorder, running_server

TIMEOUT = 60
LIMIT = 2 << 20  # max_content_length: 1 MiB passes, LIMIT + 1 does not
TEXT = "emoji 🎉🌍👩‍💻 CJK 你好世界 日本語 한국어 – Grüße ✓"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One Chromium for the module (about a second to start); a new tab per test."""
    with running_browser(tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


@asynccontextmanager
async def echo_page(browser: Browser, *, compress: bool = True
                    ) -> AsyncIterator[tuple[Page, str, Recorder]]:
    """A harness page, the URL of a trio-gws echo server, its handler."""
    handler = Recorder(echo=True)
    config = Config(compress_enabled=compress, max_content_length=LIMIT)
    with trio.fail_after(TIMEOUT):
        async with running_server(handler, config) as port, \
                serving_files(harness_page()) as base:
            page = await browser.open_page(base + "/")
            yield page, f"ws://127.0.0.1:{port}/echo", handler


def negotiated(opened: dict[str, str], handler: Recorder) -> Conn:
    """Chromium and the server both say permessage-deflate is on; the server's Conn."""
    assert opened["extensions"].startswith("permessage-deflate"), opened
    [conn] = handler.conns()
    assert conn.compressed
    assert "permessage-deflate" in (conn.request.headers.get("Sec-WebSocket-Extensions")
                                    or "")
    return conn


@pytest.mark.parametrize("content", ["random", "repetitive"])
async def test_binary_1mib_byte_exact(browser: Browser, content: str) -> None:
    size = 1 << 20
    async with echo_page(browser) as (page, url, handler):
        result = await page.evaluate("""
            const [url, size, content] = args;
            const opened = await harness.open('echo', url);
            const sent = content === 'random' ? harness.randomBytes(size)
                : Uint8Array.from({length: size}, (_, i) => i % 251);
            harness.send('echo', sent);
            const event = await harness.next('echo');
            return {opened, sha256: await harness.sha256(sent),
                    echo: await harness.describe(event),
                    exact: event.type === 'message' && harness.equal(sent, event.data)};
        """, url, size, content)
        negotiated(result["opened"], handler)
        [message] = handler.of("message")
        assert message.opcode is Opcode.BINARY and len(message.data) == size
        assert hashlib.sha256(message.data).hexdigest() == result["sha256"]  # page -> us
        assert result["echo"] == {"type": "binary", "length": size, "sha256": result["sha256"]}
        assert result["exact"] is True  # us -> page, compared byte by byte in the page
        if content == "repetitive":
            assert message.data == bytes(i % 251 for i in range(size))


async def test_non_ascii_text(browser: Browser) -> None:
    async with echo_page(browser) as (page, url, handler):
        result = await page.evaluate("""
            const [url, text] = args;
            const opened = await harness.open('text', url);
            harness.send('text', text);
            const composed = String.fromCodePoint(0x1F600, 0x4E2D, 0xE9, 0x10348);
            harness.send('text', composed);
            return {opened, echoes: [await harness.describe(await harness.next('text')),
                                     await harness.describe(await harness.next('text'))]};
        """, url, TEXT)
        negotiated(result["opened"], handler)
        composed = "\U0001F600\u4e2d\u00e9\U00010348"  # built in the page, not by WebDriver
        assert result["echoes"] == [{"type": "text", "text": TEXT},
                                    {"type": "text", "text": composed}]
        assert [(m.opcode, m.text) for m in handler.of("message")] == [
            (Opcode.TEXT, TEXT), (Opcode.TEXT, composed)]


@pytest.mark.parametrize("compress", [True, False], ids=["deflate", "plain"])
async def test_over_max_content_length_closes_1009(browser: Browser, compress: bool) -> None:
    """With deflate, zeros arrive as a few KiB and the limit holds while inflating;
    without it, the frames' own lengths add up past the limit."""
    async with echo_page(browser, compress=compress) as (page, url, handler):
        result = await page.evaluate("""
            const [url, size] = args;
            const opened = await harness.open('big', url);
            harness.send('big', new Uint8Array(size));
            const seen = [];
            for (;;) {
                const event = await harness.describe(await harness.next('big'));
                seen.push(event);
                if (event.type === 'close') return {opened, seen};
            }
        """, url, LIMIT + 1)
        if compress:
            negotiated(result["opened"], handler)
        else:
            assert result["opened"]["extensions"] == ""
            assert not handler.conns()[0].compressed
        close = result["seen"][-1]
        assert close["code"] == 1009 and close["wasClean"], result["seen"]
        assert str(LIMIT) in close["reason"]
        assert [e["type"] for e in result["seen"]] == ["close"]  # no echo, no error event
        [ending] = await handler.wait_endings()
        assert ending.kind == "error" and isinstance(ending.data, MessageTooLargeError)
        assert handler.of("message") == []
