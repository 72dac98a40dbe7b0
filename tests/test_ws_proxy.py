"""WebSocket through /x/<app>/: a real ``websockets`` app behind a real host (uvicorn), a real
``websockets`` client in front.  Authentication and Origin are checked at the handshake,
frames go both ways, close codes are passed on, messages are capped, and the client's
connection ends when the app stops."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bolt_host import errors
from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import closed_by_server, wait_until
from tests.servers import LiveServer, live_host_with_app

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
CAP = 64 * 1024
pytestmark = pytest.mark.timeout(120)
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host_with_app(tmp_path, FIXTURE_APPS / "wsecho", max_ws_message_bytes=CAP) as server:
        yield server


def _ws_url(live: LiveServer, path: str = "/x/wsecho/ws") -> str:
    return "ws" + live.url.removeprefix("http") + path


def _open(live: LiveServer, headers: dict[str, str] | None = None, **options: Any) -> ClientConnection:
    return connect(_ws_url(live), additional_headers=headers if headers is not None else BASIC,
                   open_timeout=30, max_size=None, **options)


def _refusal(live: LiveServer, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as refused:
        _open(live, headers).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def test_frames_go_both_ways_through_the_proxy(live: LiveServer) -> None:
    with _open(live) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=30) == b"\x00\x01binary"
        ws.send("headers")
        seen = {key.lower(): value for key, value in json.loads(ws.recv(timeout=30))}
    assert "authorization" not in seen, "the host's credentials never reach the app"
    assert seen["x-forwarded-prefix"] == "/x/wsecho"


def test_the_handshake_needs_a_caller_who_may_use_the_app(live: LiveServer) -> None:
    status, body = _refusal(live, {})
    assert status == 401 and body["code"] == errors.NOT_LOGGED_IN and "errorTraceId" in body
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong-password").decode()}
    status, body = _refusal(live, wrong)
    assert status == 401


def test_a_handshake_from_another_origin_is_refused(live: LiveServer) -> None:
    status, body = _refusal(live, {**BASIC, "Origin": "http://evil.example"})
    assert status == 403 and body["code"] == errors.CSRF_FAILED
    status, body = _refusal(live, {**BASIC, "Origin": live.url, "Sec-Fetch-Site": "cross-site"})
    assert status == 403 and body["code"] == errors.CSRF_FAILED
    with _open(live, {**BASIC, "Origin": live.url}) as ws:  # the host's own pages
        ws.send("same origin")
        assert ws.recv(timeout=30) == "same origin"


def test_close_codes_are_passed_on_both_ways(live: LiveServer) -> None:
    with _open(live) as ws:
        ws.send("close:4001:app says bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert (ws.close_code, ws.close_reason) == (4001, "app says bye")

    with _open(live) as ws:
        ws.send("ping")
        assert ws.recv(timeout=30) == "ping"
        ws.close(4002, "client says bye")

    def last_close() -> dict[str, Any] | None:
        with _open(live) as probe:
            probe.send("last-close")
            seen = json.loads(probe.recv(timeout=30))
        return seen if seen["code"] == 4002 else None

    assert wait_until(last_close, timeout=30, what="the app to see the client's close")["reason"] == "client says bye"


def test_messages_over_the_cap_close_with_1009_either_way(live: LiveServer) -> None:
    with _open(live) as ws:
        ws.send(b"y" * (CAP + 1))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert ws.close_code == 1009
    with _open(live) as ws:
        ws.send(f"big:{CAP + 1}")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert ws.close_code == 1009
    with _open(live) as ws:  # the app is still there for others
        ws.send(f"big:{CAP - 100}")
        assert len(ws.recv(timeout=30)) == CAP - 100


def test_the_clients_connection_ends_when_the_app_stops(live: LiveServer) -> None:
    with _open(live) as ws:
        ws.send("before")
        assert ws.recv(timeout=30) == "before"
        with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as admin:
            assert admin.post("/api/apps/stop", json={"name": "wsecho"}).status_code == 200
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert ws.close_code in (1001, 1011)
    status, body = _refusal(live, BASIC)
    assert status == 409 and body["code"] == errors.APP_NOT_RUNNING


def test_a_handshake_for_a_host_name_the_server_does_not_answer_for_is_refused(live: LiveServer) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 opens a socket to the host."""
    address = urlsplit(live.url)
    handshake = (
        f"GET /x/wsecho/ws HTTP/1.1\r\nHost: evil.example:{address.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: {BASIC['Authorization']}\r\n\r\n"
    ).encode()
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(handshake)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


def test_open_websockets_count_against_their_address_cap(tmp_path: Path) -> None:
    # a header limit far beyond the waits below: only the cap can close the extra connection
    options = {"max_connections_per_ip": 3, "header_timeout_seconds": 600}
    with live_host_with_app(tmp_path, FIXTURE_APPS / "wsecho", **options) as live:
        sockets = [_open(live) for _ in range(3)]
        try:
            address = urlsplit(live.url)
            with socket.create_connection((address.hostname, address.port), timeout=10) as extra:
                wait_until(lambda: closed_by_server(extra), timeout=30, what="the fourth connection to be refused")
            sockets[0].send("still here")
            assert sockets[0].recv(timeout=30) == "still here", "an open WebSocket was pushed out"
            sockets.pop().close()
            wait_until(lambda: httpx.get(live.url + "/-/health", timeout=30).status_code == 200,
                       timeout=30, what="a connection to be admitted once a WebSocket closed")
        finally:
            for ws in sockets:
                ws.close()
