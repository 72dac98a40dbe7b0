"""The /x/<app>/ proxy against a real uvicorn and a real app speaking HTTP by hand:
RFC 9112 6.3 framing both ways, upstream failures as 502/504, the host's forwarding headers."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bolt_host import errors
from bolt_host.testing import ADMIN_PASSWORD
from tests.servers import LiveServer, live_host_with_app

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("proxy")
    with live_host_with_app(base, FIXTURE_APPS / "wire", proxy_timeout_seconds=1.0, stop_grace_seconds=2.0) as server:
        yield server


def _admin(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30)


def _raw_exchange(live: LiveServer, request: bytes) -> bytes:
    """Send ``request`` as given on a fresh socket; the whole answer (the request asks for close)."""
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _basic() -> str:
    return "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()


def test_a_request_with_both_lengths_reaches_the_app_chunked_only(live: LiveServer) -> None:
    host = urlsplit(live.url).netloc
    request = (
        f"POST /x/wire/echo HTTP/1.1\r\nHost: {host}\r\nAuthorization: {_basic()}\r\nConnection: close\r\n"
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"
    ).encode()
    answer = _raw_exchange(live, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    seen = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])
    names = [key.lower() for key, _ in seen["headers"]]
    assert seen["body"] == "hello world"
    assert "content-length" not in names and names.count("transfer-encoding") == 1


def test_an_answer_with_both_lengths_reaches_the_client_whole(live: LiveServer) -> None:
    with _admin(live) as admin:
        answer = admin.get("/x/wire/both")
    assert answer.status_code == 200
    assert answer.content == b"hello world"
    assert "content-length" not in answer.headers


@pytest.mark.parametrize("path", ["garbage", "close"])
def test_an_app_that_breaks_http_is_a_502(live: LiveServer, path: str) -> None:
    with _admin(live) as admin:
        answer = admin.get(f"/x/wire/{path}")
    assert answer.status_code == 502, answer.text
    assert answer.json()["code"] == errors.APP_BAD_GATEWAY
    assert "errorTraceId" in answer.json()


def test_an_app_that_does_not_answer_in_time_is_a_504(live: LiveServer) -> None:
    with _admin(live) as admin:
        answer = admin.get("/x/wire/silent")
        assert answer.status_code == 504, answer.text
        assert answer.json()["code"] == errors.APP_GATEWAY_TIMEOUT
        assert admin.get("/x/wire/health").text == "ok"  # the app itself still serves


def test_forwarding_headers_are_the_hosts_alone(live: LiveServer) -> None:
    planted = {
        "X-Forwarded-Prefix": "/evil",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-User": "admin",
        "Forwarded": "for=6.6.6.6;host=evil.example",
        "X-Real-IP": "6.6.6.6",
        "Connection": "x-hop",
        "X-Hop": "for this connection only",
        "X-App-Header": "kept",
    }
    with _admin(live) as admin:
        seen = admin.get("/x/wire/echo", headers=planted).json()
    headers: dict[str, list[str]] = {}
    for key, value in seen["headers"]:
        headers.setdefault(key.lower(), []).append(value)
    assert headers["x-forwarded-prefix"] == ["/x/wire"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-host"] == [urlsplit(live.url).netloc]
    assert headers["x-forwarded-proto"] == ["http"]
    for gone in ("x-forwarded-user", "forwarded", "x-real-ip", "x-hop", "authorization"):
        assert gone not in headers, gone
    assert headers["x-app-header"] == ["kept"]
