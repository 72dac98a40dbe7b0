"""The smallest useful HTTP app: answers ``GET /health`` with 200 on 127.0.0.1:$PORT.

Only ``os`` and ``socket`` are imported (no ``http.server``), so the process
start cost is CPython's own and the same under every supervisor the
benchmark compares.  One connection at a time, ``Connection: close``;
SIGTERM keeps its default action (exit at once).
"""

from __future__ import annotations

import os
import socket

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_REQUEST = 8192


def answer(conn: socket.socket) -> None:
    conn.settimeout(5.0)
    request = b""
    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            return
        request += chunk
    parts = request.split(b" ", 2)
    healthy = len(parts) > 1 and parts[0] == b"GET" and parts[1] == b"/health"
    conn.sendall(OK if healthy else NOT_FOUND)


def main() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(os.environ["PORT"])))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        try:
            answer(conn)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
