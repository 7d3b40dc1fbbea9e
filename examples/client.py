"""A client for the echo example: sends a few messages, prints the echoes, closes.

Run ``python examples/echo.py`` first, then ``python examples/client.py``
(``--url`` to point it elsewhere, e.g. wss:// with ``--cafile``). It goes through the
proxy set in the environment (``http_proxy``, ``https_proxy``, ``all_proxy``,
``no_proxy``; never for localhost), or the one given with ``--proxy``
(``http://``, ``https://``, ``socks5://``, ``socks5h://``, ``socks4://``, with
``user:password@``), or none with ``--proxy direct``.

``--pull`` reads the echoes in pull mode instead of with a handler (no handler:
``await conn.receive()``) and measures a ping's round trip with ``conn.ping()``.
"""

from __future__ import annotations

import argparse
import ssl

import trio

import trio_gws as gws


class Printer(gws.EventHandler):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_echoed = trio.Event()

    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        shown = message.text if message.is_text else f"<{len(message.data)} bytes>"
        print(f"echo: {shown}", flush=True)
        self.expected -= 1
        if self.expected == 0:
            self.all_echoed.set()

    async def on_pong(self, conn: gws.Conn, payload: bytes) -> None:
        print(f"pong: {payload!r}", flush=True)

    async def on_close(self, conn: gws.Conn, code: int, reason: bytes) -> None:
        print(f"closed: {code} {reason.decode()!r}", flush=True)

    async def on_error(self, conn: gws.Conn, error: Exception) -> None:
        print(f"error: {error!r}", flush=True)


async def main(url: str, cafile: str | None, proxy: str | None = None,
               server_hostname: str | None = None) -> None:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    messages = ["hello", "from", "trio-gws"]
    handler = Printer(expected=len(messages) + 1)
    via: bool | str | None = True if proxy is None else None if proxy == "direct" else proxy
    async with gws.open_conn(url, handler, ssl_context=context, proxy=via,
                             proxy_ssl_context=context,
                             server_hostname=server_hostname) as conn:
        for text in messages:
            await conn.write_string(text)
        await conn.write_message(gws.Opcode.BINARY, bytes(range(256)) * 4)
        await conn.write_ping(b"are you there?")
        with trio.fail_after(5):
            await handler.all_echoed.wait()


async def main_pull(url: str, cafile: str | None, proxy: str | None = None,
                    server_hostname: str | None = None) -> None:
    """The same exchange in pull mode: no handler, the messages are read in a loop."""
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    messages = ["hello", "from", "trio-gws"]
    via: bool | str | None = True if proxy is None else None if proxy == "direct" else proxy
    async with gws.open_conn(url, ssl_context=context, proxy=via, proxy_ssl_context=context,
                             server_hostname=server_hostname) as conn:
        for text in messages:
            await conn.write_string(text)
        await conn.write_message(gws.Opcode.BINARY, bytes(range(256)) * 4)
        with trio.fail_after(5):
            for _ in range(len(messages) + 1):
                message = await conn.receive()
                shown = message.text if message.is_text else f"<{len(message.data)} bytes>"
                print(f"echo: {shown}", flush=True)
            rtt = await conn.ping()
        print(f"ping: {rtt * 1000:.1f} ms round trip", flush=True)
    print("closed: 1000", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:3000/connect")
    parser.add_argument("--cafile",
                        help="CA certificate to trust (for wss:// and an https:// proxy)")
    parser.add_argument("--proxy", help="proxy URL, or 'direct' (default: the environment's)")
    parser.add_argument("--server-hostname",
                        help="name for SNI and the certificate check (default: the URL's host)")
    parser.add_argument("--pull", action="store_true",
                        help="pull mode: read the echoes with conn.receive(), no handler")
    args = parser.parse_args()
    trio.run(main_pull if args.pull else main, args.url, args.cafile, args.proxy,
             args.server_hostname)
