"""A real browser for the tests: Debian's headless Chromium, driven by Selenium.

Installed by scripts/components/browser.sh (``chromium`` and its matching
``chromium-driver``). Nothing is downloaded: chromedriver is Debian's, started here
by realproc on 127.0.0.1 in its own process group, so stopping it by its PID also
stops every Chromium process it launched; Selenium only talks to it
(``webdriver.Remote``), so Selenium Manager never runs.

``running_browser(tmp)`` gives a ``Browser``; ``await browser.open_page(url)`` a
``Page`` (a tab) whose ``evaluate(body, *args)`` runs an async JavaScript function
body in the page and returns its result, ``type(css, text)`` types into a field as a
user would (real key events), ``wait_for(expression)`` polls the page until an
expression is true, and ``browser.console()`` has what the console said. Selenium is synchronous: every call runs in
a worker thread, one at a time, so the Trio servers under test keep running.
``serving_files`` serves a page from 127.0.0.1 (Chromium refuses WebSockets to
127.0.0.1 from a ``data:`` page). tests/web/harness.js is WebSocket plumbing a page
can load.
"""

from __future__ import annotations

import mimetypes
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

import realproc

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HARNESS = realproc.REPO / "tests" / "web" / "harness.js"
# Headless, as root, with no network of its own and a fresh profile every run.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1024,768")
SCRIPT_TIMEOUT = 45.0  # bounds every evaluate(); the harness's own waits are shorter

T = TypeVar("T")

# Runs the function body with the test's arguments and hands back either its value or
# the error (with whatever the page reported), so nothing is lost to WebDriver's
# generic "javascript error".
_ASYNC_WRAPPER = """
const done = arguments[arguments.length - 1];
const args = Array.prototype.slice.call(arguments, 0, -1);
(async (...args) => { %s })(...args).then(
  (value) => done({ok: true, value: value === undefined ? null : value}),
  (error) => done({ok: false, error: String(error && error.stack || error),
                   pageErrors: (window.harness && window.harness.errors) || []}));
"""


class PageError(AssertionError):
    """JavaScript in the page threw (or rejected): the message has its stack."""


class Browser:
    """One Chromium; its tabs are ``Page``s. Selenium calls are serialised (one
    driver, one selected tab at a time), so pages can be used from several tasks."""

    def __init__(self, driver: Any, log: Path) -> None:
        self.driver = driver
        self.log = log
        self._lock = threading.Lock()  # no Trio object: the browser outlives a test's run
        self._unused_tab: str | None = driver.current_window_handle
        # Which tab WebDriver has selected: kept here, because asking WebDriver
        # fails once that tab has been closed.
        self._selected: str | None = self._unused_tab

    async def call(self, handle: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (Selenium calls) in a thread with tab ``handle`` selected."""
        def in_tab() -> T:
            with self._lock:
                if self._selected != handle:
                    self.driver.switch_to.window(handle)
                    self._selected = handle
                return fn()
        return await trio.to_thread.run_sync(in_tab)

    async def console(self) -> list[str]:
        """The console messages (the pages' and Chromium's own, e.g. why a WebSocket
        handshake failed) logged since the last call."""
        def drain() -> list[str]:
            with self._lock:
                entries = self.driver.execute("getLog", {"type": "browser"})["value"]
            return [str(entry["message"]) for entry in entries]
        return await trio.to_thread.run_sync(drain)

    async def open_page(self, url: str) -> Page:
        """A new tab (the first call reuses the initial one) showing ``url``."""
        def open_tab() -> str:
            with self._lock:
                if self._unused_tab is None:
                    if self._selected is None:  # WebDriver opens tabs from an open one
                        self.driver.switch_to.window(self.driver.window_handles[0])
                    self.driver.switch_to.new_window("tab")
                self._unused_tab = None
                self._selected = str(self.driver.current_window_handle)
                self.driver.get(url)
                return self._selected
        return Page(self, await trio.to_thread.run_sync(open_tab))


class Page:
    """One tab of a ``Browser``."""

    def __init__(self, browser: Browser, handle: str) -> None:
        self.browser = browser
        self.handle = handle

    async def evaluate(self, body: str, *args: Any) -> Any:
        """Run ``body`` as an async JavaScript function (its arguments are ``args``,
        JSON values) and return what it returns. Raises PageError when it throws."""
        script = _ASYNC_WRAPPER % body
        driver = self.browser.driver
        result = await self.browser.call(
            self.handle, partial(driver.execute_async_script, script, *args))
        if not result["ok"]:
            raise PageError(f"{result['error']}\npage errors: {result['pageErrors']}")
        return result["value"]

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll the JavaScript ``expression`` until it is truthy; its value. Raises
        PageError (with the expression) when it stays falsy for ``timeout`` seconds."""
        return await self.evaluate("""
            const [expression, ms] = args;
            const test = new Function(`return (${expression});`);
            const deadline = Date.now() + ms;
            for (;;) {
                const value = test();
                if (value) return value;
                if (Date.now() > deadline) throw new Error(`still false: ${expression}`);
                await new Promise((resolve) => setTimeout(resolve, 25));
            }
        """, expression, int(timeout * 1000))

    async def type(self, css: str, text: str) -> None:
        """Type ``text`` into the element ``css`` selects, key by key, as a user would
        (``selenium.webdriver.Keys.ENTER`` in it submits a form)."""
        from selenium.webdriver.common.by import By

        def typing() -> None:
            self.browser.driver.find_element(By.CSS_SELECTOR, css).send_keys(text)
        await self.browser.call(self.handle, typing)

    async def screenshot(self, path: Path, css: str | None = None) -> None:
        """A PNG of the tab as the user would see it (of one element: ``css``)."""
        from selenium.webdriver.common.by import By

        driver = self.browser.driver

        def take() -> bytes:
            if css is None:
                return bytes(driver.get_screenshot_as_png())
            return bytes(driver.find_element(By.CSS_SELECTOR, css).screenshot_as_png)
        path.write_bytes(await self.browser.call(self.handle, take))

    async def close(self) -> None:
        """Close the tab, as a user would (its WebSockets go away: close 1001)."""
        def close_tab() -> None:
            self.browser.driver.close()
            self.browser._selected = None  # nothing is selected now
        await self.browser.call(self.handle, close_tab)


@contextmanager
def running_browser(tmp: Path) -> Iterator[Browser]:
    """Headless Chromium through Debian's chromedriver; everything lives in ``tmp``
    (profile, logs) and is stopped by PID at the end."""
    chromium = realproc.require(CHROMIUM, hint="make components")
    chromedriver = realproc.require(CHROMEDRIVER, hint="make components")
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'", pytrace=False)
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"  # Chromium's crash database and caches go under $HOME
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    port = realproc.free_port()
    argv = [chromedriver, f"--port={port}", f"--log-path={tmp / 'chromedriver.log'}"]
    try:
        with realproc.running(argv, log=tmp / "chromedriver.out", port=port, env=env):
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for flag in (*FLAGS, f"--user-data-dir={tmp / 'profile'}"):
                options.add_argument(flag)
            # The console (what the page logs, and Chromium's own messages such as
            # a WebSocket handshake's HTTP status) for Browser.console().
            options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}",
                                      options=options)
            try:
                driver.set_script_timeout(SCRIPT_TIMEOUT)
                driver.set_page_load_timeout(SCRIPT_TIMEOUT)
                yield Browser(driver, tmp / "chromedriver.log")
            finally:
                driver.quit()  # then realproc stops chromedriver's whole process group
    finally:
        _stop_leftovers(tmp)


def _stop_leftovers(tmp: Path) -> None:
    """SIGKILL, by PID, whatever still runs with ``tmp`` in its command line.

    Chromium's crashpad handlers start process groups of their own, so stopping
    chromedriver's group misses them (they would exit by themselves a moment later);
    their command line names the crash database under our $HOME in ``tmp``, which
    no process outside this test has."""
    marker = str(tmp).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
            os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass  # gone meanwhile


# -- serving the test page ------------------------------------------------------------


async def _serve_one(files: Mapping[str, bytes], stream: trio.SocketStream) -> None:
    """One GET (or HEAD) with ``Connection: close``; unknown paths get 404."""
    async with stream:
        head = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in head and len(head) < 16384:
                try:
                    chunk = await stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return  # a speculative connection Chromium never used
                head += chunk
        method, _, rest = head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0].decode("latin-1")
        body = files.get(path)
        status = "200 OK" if body is not None else "404 Not Found"
        if body is None:
            body = b"not found\n"
        kind = mimetypes.guess_type(path if path != "/" else "index.html")[0] or "text/plain"
        response = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n").encode()
        try:
            await stream.send_all(response + (body if method != b"HEAD" else b""))
        except trio.BrokenResourceError:
            pass


@asynccontextmanager
async def serving_files(files: Mapping[str, bytes | str]) -> AsyncIterator[str]:
    """Serve ``files`` (path -> content) over HTTP on 127.0.0.1; yields the base URL.

    Until serve() can answer plain HTTP itself, the test page comes from here."""
    content = {path: data.encode() if isinstance(data, str) else data
               for path, data in files.items()}
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(partial(trio.serve_listeners, partial(_serve_one, content),
                                   listeners))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def harness_page(title: str = "trio-gws browser test") -> dict[str, bytes | str]:
    """The files of an empty page that loads tests/web/harness.js."""
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<script src='/harness.js'></script></head><body></body></html>")
    return {"/": html, "/harness.js": HARNESS.read_bytes()}
