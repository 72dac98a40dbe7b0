"""Apps running under a real host behind a real uvicorn server: start/stop API, proxy,
logs, event delivery, per-app data from a real app, the SSE stream."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.errors import BoltError
from bolt_host.web.processes import _fields_of_query
from tests.helpers import wait_until
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    monkeypatch.setenv("BOLT_TEST_SECRET", "must-not-leak")
    with live_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=5.0) as server:
        pids: list[int] = []
        server.started_pids = pids  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            for pid in pids:  # anything a failed test left behind, by pid
                if psutil.pid_exists(pid):
                    os.kill(pid, 9)


def _admin(live: LiveServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=live.admin_auth, headers=headers, timeout=60)


def _install_and_start(client: httpx.Client, live: LiveServer, path: str) -> dict:
    assert client.post("/api/apps/local", json={"path": path}).status_code == 201
    started = client.post("/api/apps/start", json={"name": path})
    assert started.status_code == 200, started.text
    context = started.json()["body"]
    live.started_pids.append(context["pid"])  # type: ignore[attr-defined]
    return context


def test_start_is_idempotent_and_stop_frees_everything(live: LiveServer) -> None:
    with _admin(live) as admin:
        context = _install_and_start(admin, live, "echo")
        assert context["status"] == "running" and context["port"] and context["pid"]
        assert "token" not in json.dumps(context).lower().replace("bolt_app_token", "")
        again = admin.post("/api/apps/start", json={"name": "echo"}).json()["body"]
        assert again["pid"] == context["pid"]
        live_list = admin.get("/api/apps/@live").json()["body"]
        assert [c["name"] for c in live_list] == ["echo"]
        assert {"cpu", "memory", "uptime"} <= set(live_list[0])
        stopped = admin.post("/api/apps/stop", json={"name": "echo"})
        assert stopped.json()["body"]["status"] == "stopped"
        assert not psutil.pid_exists(context["pid"]) or psutil.Process(context["pid"]).status() == "zombie"
        again = admin.post("/api/apps/stop", json={"name": "echo"})
        assert again.json()["code"] == errors.APP_NOT_RUNNING
        assert admin.get("/api/apps/@live").json()["body"] == []


def test_live_listing_with_fields_returns_only_those_members(live: LiveServer) -> None:
    with _admin(live) as admin:
        context = _install_and_start(admin, live, "echo")
        light = admin.get("/api/apps/@live", params={"fields": "name,status,pid"})
        assert light.status_code == 200
        assert light.json()["body"] == [{"name": "echo", "status": "running", "pid": context["pid"]}]
        some = admin.get("/api/apps/@live?fields=name,port,uptime").json()["body"]
        assert some[0]["port"] == context["port"] and set(some[0]) == {"name", "port", "uptime"}

        for bad in ("name,token", "env", ","):
            refused = admin.get("/api/apps/@live", params={"fields": bad})
            assert refused.status_code == 400 and refused.json()["code"] == errors.BAD_REQUEST, bad
        assert "token" in admin.get("/api/apps/@live?fields=token").json()["error"]["message"]
        spec = admin.get("/openapi.json").json()["paths"]["/api/apps/@live"]["get"]
        assert [p["name"] for p in spec["parameters"]] == ["fields"]
        admin.post("/api/apps/stop", json={"name": "echo"})


def test_a_fields_query_is_read_once_as_starlette_reads_it_and_a_refused_one_every_time() -> None:
    """A poller sends the same ``?fields=`` each time: it is parsed once (the parse was a tenth of
    a light call's Python), with Starlette's rules; a refusal is never remembered."""
    _fields_of_query.cache_clear()
    query = b"fields=name,%20status,pid"
    first = _fields_of_query(query)
    assert first == frozenset({"name", "status", "pid"}) and _fields_of_query(query) is first
    assert _fields_of_query.cache_info().hits == 1
    assert _fields_of_query(b"fields=name&fields=pid") == frozenset({"pid"})  # the last value, as QueryParams.get
    assert _fields_of_query(b"other=1") is None and _fields_of_query(b"fields=") is None
    for _ in range(2):
        with pytest.raises(BoltError) as refused:
            _fields_of_query(b"fields=name,token")
        assert refused.value.code == errors.BAD_REQUEST and "token" in refused.value.message


def test_start_unknown_app_and_missing_name(live: LiveServer) -> None:
    with _admin(live) as admin:
        assert admin.post("/api/apps/start", json={"name": "ghost"}).json()["code"] == errors.APP_NOT_FOUND
        assert admin.post("/api/apps/start", json={}).json()["code"] == errors.APP_NAME_MISSING
        assert admin.post("/api/apps/stop", json={"name": "ghost"}).json()["code"] == errors.APP_NOT_RUNNING


def test_app_environment_has_its_token_and_no_host_secrets(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        env = admin.get("/x/echo/env").json()
    assert env["BOLT_APP_NAME"] == "echo"
    assert env["ECHO_GREETING"] == "hi"
    assert env["BOLT_HOST_URL"] == live.url
    assert live.host.tokens.app_for(env["BOLT_APP_TOKEN"]) == "echo"
    assert "BOLT_TEST_SECRET" not in env and "BOLT_ADMIN_PASSWORD" not in env
    assert "must-not-leak" not in json.dumps(env)


def test_proxy_strips_host_credentials_and_streams_large_bodies(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        headers = admin.get("/x/echo/headers").json()
        assert "authorization" not in {k.lower() for k in headers}
        assert {k.lower(): v for k, v in headers.items()}.get("x-forwarded-prefix") == "/x/echo"
        size = 8 * 1024 * 1024
        body = os.urandom(size)
        echoed = admin.post("/x/echo/upload", content=body).json()
        assert echoed["received"] == size
        received = 0
        with admin.stream("GET", "/x/echo/big?mb=24") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += len(chunk)
        assert received == 24 * 1024 * 1024
    anonymous = httpx.get(live.url + "/x/echo/health")
    assert anonymous.status_code == 401


def test_proxy_passes_status_and_repeated_headers_but_never_host_cookies(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        answer = admin.get("/x/echo/cookies")
        missing = admin.get("/x/echo/nothing-here")
        request_headers = {k.lower(): v for k, v in admin.get("/x/echo/headers").json().items()}
    assert answer.status_code == 201 and answer.headers["x-echo"] == "yes"
    assert answer.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]  # apart, and no bolt_ cookie
    assert missing.status_code == 404
    assert "transfer-encoding" not in request_headers and "content-length" not in request_headers  # a GET has no body


def test_proxy_streams_a_response_as_the_app_sends_it(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        with admin.stream("GET", "/x/echo/drip") as response:
            chunks = response.iter_raw()
            first = next(chunks)  # arrives while the app still holds the rest back
            assert first == b"first\n"
            assert admin.post("/x/echo/release", content=b"").status_code == 200
            rest = b"".join(chunks)
    assert rest == b"last\n"


def test_cookie_writes_through_the_proxy_must_come_from_this_origin(live: LiveServer) -> None:
    """A page on another port of this machine is same-site: the SameSite cookie goes with its
    requests, so the proxy asks the browser where the page came from (or for the CSRF token)."""
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        login = browser.post("/api/users/login", json={"name": "admin", "password": live.admin_auth[1]})
        csrf = login.json()["body"]["csrfToken"]
        forged = browser.post("/x/echo/write", content=b"x", headers={"Sec-Fetch-Site": "same-site"})
        not_a_browser = browser.post("/x/echo/write", content=b"x")  # curl with a cookie jar
        own_page = browser.post("/x/echo/write", content=b"x", headers={"Sec-Fetch-Site": "same-origin"})
        old_browser = browser.post("/x/echo/write", content=b"x", headers={"Origin": live.url})
        with_token = browser.post("/x/echo/write", content=b"x", headers={"X-CSRF-Token": csrf})
        read = browser.get("/x/echo/health", headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403 and forged.json()["code"] == errors.CSRF_FAILED
    assert [r.status_code for r in (not_a_browser, own_page, old_browser, with_token, read)] == [200] * 5


def test_logs_follow_as_server_sent_events(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        with admin.stream("GET", "/api/apps/echo/logs?follow=true") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            seen = ""
            lines = stream.iter_lines()
            while "echo ready" not in seen:
                line = next(lines)
                if line.startswith("data: "):
                    seen += json.loads(line[len("data: ") :])
            admin.get("/x/echo/headers")  # the app logs the request: it must reach the open stream
            while "GET /headers" not in seen:
                line = next(lines)
                if line.startswith("data: "):
                    seen += json.loads(line[len("data: ") :])


def test_start_and_stop_several_apps_in_one_call(live: LiveServer) -> None:
    with _admin(live) as admin:
        for path in ("echo", "hello-web", "ticker"):
            assert admin.post("/api/apps/local", json={"path": path}).status_code == 201
        unknown = admin.post("/api/apps/start", json={"names": ["echo", "ghost"]})
        assert unknown.json()["code"] == errors.APP_NOT_FOUND
        assert live.host.supervisor.contexts() == []  # checked before anything started
        for bad in ([], ["echo", "echo"], "echo", [1], ["x"] * 1001):
            assert admin.post("/api/apps/start", json={"names": bad}).json()["code"] == errors.BAD_REQUEST, bad

        started = admin.post("/api/apps/start", json={"names": ["echo", "hello-web", "ticker"]})
        assert started.status_code == 200, started.text
        body = started.json()["body"]
        live.started_pids.extend(c["pid"] for c in body["started"])  # type: ignore[attr-defined]
        assert sorted(c["name"] for c in body["started"]) == ["echo", "hello-web", "ticker"]
        assert body["failed"] == {} and all(c["status"] == "running" for c in body["started"])
        assert admin.get("/x/hello-web/").status_code == 200

        assert admin.post("/api/apps/stop", json={"name": "ticker"}).status_code == 200
        stopped = admin.post("/api/apps/stop", json={"names": ["echo", "hello-web", "ticker"]}).json()["body"]
    assert sorted(c["name"] for c in stopped["stopped"]) == ["echo", "hello-web"]
    assert stopped["failed"] == {"ticker": {"code": errors.APP_NOT_RUNNING, "message": "App 'ticker' is not running"}}
    assert all(not psutil.pid_exists(c["pid"]) or psutil.Process(c["pid"]).status() == psutil.STATUS_ZOMBIE
               for c in body["started"])  # fmt: skip
    assert live.host.supervisor.contexts() == []


def test_restart_gives_a_new_process_and_counts_it(live: LiveServer) -> None:
    with _admin(live) as admin:
        first = _install_and_start(admin, live, "echo")
        restarted = admin.post("/api/apps/restart", json={"name": "echo"})
        assert restarted.status_code == 200, restarted.text
        second = restarted.json()["body"]
        live.started_pids.append(second["pid"])  # type: ignore[attr-defined]
        assert second["status"] == "running" and second["pid"] != first["pid"]
        assert second["restarts"] == first["restarts"] + 1
        assert admin.get("/x/echo/health").text == "ok"
        assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE


def test_logs_by_range_with_headers(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "echo")
        admin.get("/x/echo/health")
        whole = admin.get("/api/apps/echo/logs")
        assert whole.headers["content-type"].startswith("text/plain")
        assert "echo ready" in whole.text
        total = int(whole.headers["X-TEXT-SIZE"])
        first = admin.get("/api/apps/echo/logs?start=0&end=4")
        assert first.text == whole.text[:4] and first.headers["X-MORE-DATA"] == "true"
        assert admin.get(f"/api/apps/echo/logs?start={total}").text == ""
        assert admin.get("/api/apps/echo/logs?start=-1").status_code == 400


def test_events_reach_subscribed_apps_with_their_token(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "hello-web")
        events = wait_until(
            lambda: [e for e in admin.get("/x/hello-web/api/events").json() if e.get("name") == "app-started"],
            timeout=20,
            what="app-started delivered to hello-web",
        )
    assert events[0]["body"]["name"] == "hello-web"


def test_notes_app_stores_data_through_the_host(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "notes")
        created = admin.post("/x/notes/notes", json={"text": "buy milk"})
        assert created.status_code in (200, 201), created.text
        listed = admin.get("/x/notes/notes").json()
    texts = [n["text"] for n in (listed if isinstance(listed, list) else listed.get("notes", []))]
    assert "buy milk" in texts
    stored = live.host.appdb.find("notes", "notes", {})
    assert [d["text"] for d in stored] == ["buy milk"]


def test_system_app_acts_for_an_admin(live: LiveServer) -> None:
    with _admin(live) as admin:
        _install_and_start(admin, live, "app-admin")
        token = admin.post("/api/users/login", json={"name": "admin", "password": live.admin_auth[1]}).json()["body"][
            "token"
        ]
    with httpx.Client(base_url=live.url, headers={"X-Bolt-User-Token": token}) as browser:
        apps = browser.get("/x/app-admin/api/apps")
    assert apps.status_code == 200, apps.text
    assert "app-admin" in json.dumps(apps.json())


def test_event_stream_shows_installs(live: LiveServer) -> None:
    with _admin(live) as admin, admin.stream("GET", "/api/events/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        with _admin(live) as other:
            other.post("/api/apps/local", json={"path": "ticker"})
        for line in lines:
            if line.startswith("event: app-installed"):
                break
    anonymous = httpx.get(live.url + "/api/events/stream")
    assert anonymous.status_code == 401


def test_upgrade_restarts_a_running_app_and_delete_stops_it(live: LiveServer) -> None:
    with _admin(live) as admin:
        first = _install_and_start(admin, live, "echo")
        upgraded = admin.post("/api/apps/local", json={"path": "echo", "upgrade": True})
        assert upgraded.status_code == 201
        context = admin.get("/api/apps/@live").json()["body"][0]
        live.started_pids.append(context["pid"])  # type: ignore[attr-defined]
        assert context["status"] == "running" and context["pid"] != first["pid"]
        assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == "zombie"
        admin.request("DELETE", "/api/apps/echo", json={"deleteSourceFolder": True})
        assert admin.get("/api/apps/@live").json()["body"] == []
        assert not psutil.pid_exists(context["pid"]) or psutil.Process(context["pid"]).status() == "zombie"
