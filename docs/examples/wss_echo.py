"""wss:// end to end: a TLS server and a client that verifies it, in one program.

A real deployment loads its certificate chain and key from files (``--cert`` and
``--key``: e.g. Let's Encrypt's fullchain.pem and privkey.pem); without them this
example makes a throwaway certificate authority with trustme (``pip install
trustme``), so that it runs anywhere.
"""

from __future__ import annotations

import argparse
import ssl
import tempfile
from functools import partial
from pathlib import Path

import trio

import trio_gws as gws


class Echo(gws.EventHandler):
    async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
        await conn.write_message(message.opcode, message.data)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """What ``gws.serve(..., ssl_context=...)`` takes: our certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(ca: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server: the system's CAs by default, or
    one CA file (a private CA, a test CA). Never turn verification off."""
    return ssl.create_default_context(cafile=ca)


def throwaway_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(certificate chain, key, CA) for 127.0.0.1 and localhost, made with trustme."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    issued.private_key_pem.write_to_path(str(paths[1]))
    for number, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(paths[0]), append=number > 0)
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


async def main(cert: Path | None = None, key: Path | None = None,
               ca: Path | None = None) -> str:
    with tempfile.TemporaryDirectory() as folder:
        if cert is None or key is None:
            cert, key, ca = throwaway_certificate(Path(folder))
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(
                gws.serve, Echo(), 0, host="127.0.0.1",
                ssl_context=server_context(cert, key)))
            url = f"wss://localhost:{server.port}/"  # the name the certificate holds
            replies, received = trio.open_memory_channel[gws.Message](1)

            class Reply(gws.EventHandler):
                async def on_message(self, conn: gws.Conn, message: gws.Message) -> None:
                    await replies.send(message)

            async with gws.open_conn(url, Reply(), ssl_context=client_context(ca)) as conn:
                await conn.write_string("over TLS")
                with trio.fail_after(5):
                    answer = (await received.receive()).text
            print(f"{url} answered {answer!r}", flush=True)
            nursery.cancel_scope.cancel()  # stop the server
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", type=Path, help="PEM certificate chain")
    parser.add_argument("--key", type=Path, help="PEM private key")
    parser.add_argument("--ca", type=Path, help="CA the client trusts (default: the system's)")
    args = parser.parse_args()
    trio.run(main, args.cert, args.key, args.ca)
