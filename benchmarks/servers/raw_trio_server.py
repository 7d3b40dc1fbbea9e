"""Trio's ceiling: a raw WebSocket echo on Trio with no WebSocket library.

Not a usable server: it checks nothing (no UTF-8 validation, no limits, no protocol
errors, no extensions), parses just enough of the framing to echo each frame back
unmasked, and writes everything one read produced in one ``send_all``. What it costs
per message is what Trio itself (a task per connection, ``SocketStream``, the
scheduler) costs plus the unavoidable minimum of framing, so each trio-gws figure is
also a fraction of what Trio can do on the same machine. Unmasking uses trio-gws's
compiled ``apply_mask`` when it is built (the fastest XOR at hand), the same code as
trio-gws's server, so the comparison is of everything else.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from functools import partial

import trio

from _common import parse_args, raise_fd_limit, ready, unsupported
from trio_gws._mask import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_SIZE = 64 * 1024
_short = struct.Struct("!H")
_long = struct.Struct("!Q")


def header(b0: int, length: int) -> bytes:
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return bytes((b0, 126)) + _short.pack(length)
    return bytes((b0, 127)) + _long.pack(length)


async def handshake(stream: trio.SocketStream) -> bytes | None:
    """Read the request, answer 101; what came after the request (or None: gone)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                          + b"\r\n\r\n")
    return rest


async def echo(stream: trio.SocketStream) -> None:
    try:
        buf = await handshake(stream)
        if buf is None:
            return
        buf = bytearray(buf)
        while True:
            out: list[bytes] = []
            pos, end, closing = 0, len(buf), False
            while end - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                length, hlen = b1 & 0x7F, 2
                if length == 126:
                    if end - pos < 4:
                        break
                    (length,) = _short.unpack_from(buf, pos + 2)
                    hlen = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    (length,) = _long.unpack_from(buf, pos + 2)
                    hlen = 10
                if b1 & 0x80:
                    hlen += 4
                if end - pos < hlen + length:
                    break
                start = pos + hlen
                with memoryview(buf) as view:
                    payload = (apply_mask(view[start:start + length], bytes(buf[start - 4:start]))
                               if b1 & 0x80 else bytes(view[start:start + length]))
                pos = start + length
                opcode = b0 & 0x0F
                if opcode == 0x9:            # ping: pong
                    b0 = 0x8A
                out.append(header(b0, length))
                out.append(payload)
                if opcode == 0x8:            # close: echo it, then end
                    closing = True
                    break
            if out:
                await stream.send_all(b"".join(out))
            if closing:
                # As a WebSocket server closes: our FIN, then wait for the peer's.
                await stream.send_eof()
                with trio.move_on_after(5):
                    while await stream.receive_some(READ_SIZE):
                        pass
                return
            del buf[:pos]
            data = await stream.receive_some(READ_SIZE)
            if not data:
                return
            buf += data
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_tcp, echo, port, host=host))
        ready(port)


if __name__ == "__main__":
    args = parse_args(__doc__)
    if args.compress:
        unsupported("no permessage-deflate in a raw echo")
    raise_fd_limit()
    trio.run(main, args.host, args.port)
