"""Slowloris against a real uvicorn: 300 sockets on 127.0.0.1 that never finish their headers.

Normal requests keep being answered, no more connections than the per-address cap stay
open, and the slow ones are closed once the header time limit has passed.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import closed_by_server, wait_until
from tests.servers import LiveServer, live_host

SLOW = 300
CAP = 50
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host(tmp_path / "data", header_timeout_seconds=1.0, max_connections_per_ip=CAP) as server:
        yield server


def _slow_sockets(live: LiveServer, count: int) -> list[socket.socket]:
    address = urlsplit(live.url)
    opened = []
    for _ in range(count):
        sock = socket.create_connection((address.hostname, address.port), timeout=10)
        sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
        opened.append(sock)
    return opened


def test_slow_headers_neither_starve_others_nor_stay_open(live: LiveServer) -> None:
    slow = _slow_sockets(live, SLOW)
    try:
        answer = httpx.get(live.url + "/-/health", timeout=30)
        assert answer.status_code == 200
        connections = live.server.server_state.connections
        assert len(connections) <= CAP, f"{len(connections)} connections open from one address"

        still_open = list(slow)

        def all_closed() -> bool:
            still_open[:] = [sock for sock in still_open if not closed_by_server(sock)]
            return not still_open

        wait_until(all_closed, timeout=30, what="the server to close every slow connection")
        assert httpx.get(live.url + "/-/health", timeout=30).status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_connection_that_answered_gets_the_same_limit_for_its_next_headers(live: LiveServer) -> None:
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /-/health HTTP/1.1\r\n")  # the next request, never finished
        wait_until(lambda: closed_by_server(sock), timeout=30, what="the server to close the connection")



def test_a_kept_alive_connection_keeps_one_header_timer_across_its_answers(tmp_path: Path) -> None:
    """Each answer moves the deadline of the connection's pending timer instead of cancelling it
    and making another (a timer per call on a polled connection); the limit itself is the test above."""
    # a limit far beyond the calls below: the timer never fires early and re-arms during them
    with live_host(tmp_path / "data", header_timeout_seconds=600) as live:
        _answers_on_one_connection(live)


def _answers_on_one_connection(live: LiveServer) -> None:
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        mine = sock.getsockname()[1]
        timers = []
        for _ in range(5):
            sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _one_answer(sock).startswith(b"HTTP/1.1 200")
            wait_until(lambda: _protocol_of(live, mine)._header_timer is not None, timeout=10, what="a timer")
            timers.append(_protocol_of(live, mine)._header_timer)
        assert all(timer is timers[0] for timer in timers)


def _one_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)
    return answer


def _protocol_of(live: LiveServer, client_port: int) -> Any:
    return next(c for c in list(live.server.server_state.connections) if c.client and c.client[1] == client_port)


def test_a_new_connection_is_refused_when_every_one_of_its_address_is_busy(tmp_path: Path) -> None:
    # a header limit far beyond the wait below: only the refusal can close the fourth connection
    with live_host(tmp_path / "data", max_connections_per_ip=3, header_timeout_seconds=600) as live:
        address = urlsplit(live.url)
        auth = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        busy = []
        try:
            for _ in range(3):  # event streams: each holds its connection with a request in progress
                sock = socket.create_connection((address.hostname, address.port), timeout=10)
                head = f"GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n"
                sock.sendall(head.encode())
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                busy.append(sock)
            with socket.create_connection((address.hostname, address.port), timeout=10) as extra:
                wait_until(lambda: closed_by_server(extra), timeout=30, what="the fourth connection to be refused")
            assert all(not closed_by_server(sock) for sock in busy), "a busy connection was pushed out"
        finally:
            for sock in busy:
                sock.close()


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def test_a_request_body_that_stops_arriving_is_cut_off_and_a_trickling_one_is_not(tmp_path: Path) -> None:
    with live_host(tmp_path / "data", body_idle_timeout_seconds=1.0, header_timeout_seconds=600) as live:
        address = urlsplit(live.url)
        body = f'{{"name": "admin", "password": "{ADMIN_PASSWORD}"}}'.encode()
        head = (
            "POST /api/users/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((address.hostname, address.port), timeout=10) as stalled:
            stalled.sendall(head + body[:5])  # and never the rest
            wait_until(lambda: closed_by_server(stalled), timeout=30, what="the stalled upload to be cut off")

        pace = threading.Event()  # never set: its wait paces the sender, it does not wait for the server
        with socket.create_connection((address.hostname, address.port), timeout=10) as trickle:
            trickle.sendall(head)
            step = max(1, len(body) // 8)
            for start in range(0, len(body), step):  # ~3 s in all, each gap under the 1 s limit
                pace.wait(0.4)
                assert not closed_by_server(trickle), "a body still arriving was cut off"
                trickle.sendall(body[start : start + step])
            assert _read_answer(trickle).startswith(b"HTTP/1.1 200")
