"""The echo server over TLS: wss://127.0.0.1:3443/connect.

Give a certificate and key (``--cert``/``--key``), or let the example make a
throwaway CA and certificate with trustme: it writes the CA to a file and prints how
to connect with it.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
from functools import partial

import trio

import trio_gws as gws

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echo import PATH, Echo, only_connect_path  # noqa: E402


def server_context(cert: str | None, key: str | None, host: str, port: int) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert:
        context.load_cert_chain(cert, key)
        return context
    try:
        import trustme
    except ImportError:
        sys.exit("pass --cert and --key, or install trustme for a throwaway certificate")
    ca = trustme.CA()
    ca.issue_cert(host, "localhost", "127.0.0.1").configure_cert(context)
    ca_path = os.path.join(tempfile.gettempdir(), "trio-gws-example-ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    print(f"throwaway CA written to {ca_path}; connect with e.g.\n"
          f"  python examples/client.py --url wss://{host}:{port}{PATH} --cafile {ca_path}",
          flush=True)
    return context


async def main(host: str, port: int, context: ssl.SSLContext) -> None:
    config = gws.Config(authorize=only_connect_path)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(gws.serve, Echo(), port, host=host,
                                             config=config, ssl_context=context))
        print(f"TLS echo server on wss://{host}:{server.port}{PATH}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3443)
    parser.add_argument("--cert", help="PEM certificate chain")
    parser.add_argument("--key", help="PEM private key (default: in --cert)")
    args = parser.parse_args()
    ctx = server_context(args.cert, args.key, args.host, args.port)
    try:
        trio.run(main, args.host, args.port, ctx)
    except KeyboardInterrupt:
        pass
