"""Ask wstest's fuzzingserver to write its report (stdlib only, no trio_gws).

The client testee normally ends with /updateReports itself. When it crashed or hung
part way, ``run`` calls this instead, so the cases that did run still get judged
(and the summary says how many are missing) rather than leaving no report at all.

    python3 update_reports.py ws://127.0.0.1:9004 trio-gws-client
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import sys
from urllib.parse import quote, urlsplit


def update_reports(base_url: str, agent: str, timeout: float = 120.0) -> bool:
    """Open /updateReports?agent=AGENT and wait until wstest closes; True on success."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /updateReports?agent={quote(agent)} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        if not data.startswith(b"HTTP/1.1 101"):
            return False
        # wstest writes the reports before it answers 101, then sends a close frame
        # and drops the connection (often with a reset): answer the close, then
        # read until the connection ends, however it ends.
        data = data.split(b"\r\n\r\n", 1)[1]
        try:
            while True:
                if len(data) >= 2 and data[0] & 0x0F == 0x8:
                    sock.sendall(struct.pack("!BB", 0x88, 0x80) + os.urandom(4))
                    data = b""
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ok = update_reports(argv[0], argv[1])
    except OSError as exc:
        print(f"update_reports: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
