"""Secrets never leak: passwords, session ids, user tokens, app tokens and registry credentials.

A real host (uvicorn) runs with a known admin password (also in the process environment as
``BOLT_ADMIN_PASSWORD``) and a registry URL that carries credentials.  The test logs in
(and fails a login), creates a user, installs and starts apps (a system one too), runs
registry installs as tasks (one that fails), uses the proxy, follows the event stream and
reads every parameterless GET route of the host and its store backends.  Then it greps:

* every response body and header it received (a login's own answer may carry that
  login's session id and token, by design - nothing else may);
* the host's log records, every app log and every task log;
* ``db.json`` (passwords are hashed, sessions and app tokens stored as digests);
* every running app's environment (``/proc/<pid>/environ``): an app holds its own token
  and nothing of the host's or of other apps;
* the start-up banner the CLI prints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.web.meta import iter_endpoints
from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
ADMIN_SECRET = "Adm1n-S3cret-pw-7f3a"
BOB_SECRET = "B0b-S3cret-pw-91c2"
WRONG_SECRET = "Wr0ng-Guess-pw-55d1"
REGISTRY_USER = "reg-user-4e1b"
REGISTRY_SECRET = "Reg1stry-S3cret-0b9e"

pytestmark = pytest.mark.timeout(180)


@dataclass
class Seen:
    """Everything the clients received, and where each secret may legitimately appear."""

    responses: list[tuple[str, str]] = field(default_factory=list)  # (what, text)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # secret -> whats that may hold it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, response: httpx.Response) -> None:
        response.read()
        what = f"{response.request.method} {response.request.url.path}#{len(self.responses)}"
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        with self.lock:
            self.responses.append((what, headers + "\n\n" + response.text))

    def last(self) -> str:
        return self.responses[-1][0]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("BOLT_ADMIN_PASSWORD", ADMIN_SECRET)
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    with RegistryServer() as registry:
        registry.publish_dir(BUNDLED_LOCAL_REPO / "ticker")
        url = registry.url.replace("http://", f"http://{REGISTRY_USER}:{REGISTRY_SECRET}@")
        with live_host(
            tmp_path / "data", local_repo=repo, registry=url, admin_password=ADMIN_SECRET, stop_grace_seconds=3.0
        ) as live:
            try:
                yield {"live": live, "data": tmp_path / "data", "registry_url": url}
            finally:
                for context in live.host.supervisor.contexts():
                    if context.get("pid") and psutil.pid_exists(context["pid"]):
                        os.kill(context["pid"], 9)


def _follow_events(url: str, token: str, sink: list[str], stop: threading.Event) -> None:
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=httpx.Timeout(5, read=2)) as client,
        client.stream("GET", "/api/events/stream") as stream,
    ):
        for line in stream.iter_lines():
            sink.append(line)
            if stop.is_set():
                return


def _exercise(live: LiveServer, seen: Seen, data: Path) -> dict[str, str]:
    """Drive the host the way its users would; return the session secrets it handed out."""
    hooks = {"response": [seen.hook]}
    secrets: dict[str, str] = {}
    with httpx.Client(base_url=live.url, timeout=60, event_hooks=hooks) as anon:
        assert anon.post("/api/users/login", json={"name": "admin", "password": WRONG_SECRET}).status_code == 401
        login = anon.post("/api/users/login", json={"name": "admin", "password": ADMIN_SECRET})
        assert login.status_code == 200
        body = login.json()["body"]
        secrets["admin session id"] = login.cookies["bolt_session"]
        secrets["admin user token"] = body["token"]
        for key in ("admin session id", "admin user token"):
            seen.allowed.setdefault(secrets[key], set()).add(seen.last())
        csrf = body["csrfToken"]

    basic = httpx.Client(base_url=live.url, auth=("admin", ADMIN_SECRET), timeout=60, event_hooks=hooks)
    token = httpx.Client(
        base_url=live.url, headers={"X-Bolt-User-Token": secrets["admin user token"]}, timeout=60, event_hooks=hooks
    )
    session = httpx.Client(
        base_url=live.url,
        cookies={"bolt_session": secrets["admin session id"]},
        headers={"X-CSRF-Token": csrf},
        timeout=60,
        event_hooks=hooks,
    )
    events: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=_follow_events, args=(live.url, secrets["admin user token"], events, stop))
    follower.start()
    try:
        with basic, token, session:
            assert basic.post("/api/users", json={"name": "bob", "password": BOB_SECRET}).status_code == 201
            with httpx.Client(base_url=live.url, timeout=60, event_hooks=hooks) as anon:
                bob = anon.post("/api/users/login", json={"name": "bob", "password": BOB_SECRET})
                secrets["bob session id"] = bob.cookies["bolt_session"]
                secrets["bob user token"] = bob.json()["body"]["token"]
                for key in ("bob session id", "bob user token"):
                    seen.allowed.setdefault(secrets[key], set()).add(seen.last())
                anon.get("/api/apps", auth=("bob", WRONG_SECRET))
            for path, system in (("echo", False), ("app-admin", True), ("notes", False)):
                assert session.post("/api/apps/local", json={"path": path, "system": system}).status_code == 201
            for name in ("echo", "app-admin"):
                assert token.post("/api/apps/start", json={"name": name}).status_code == 200
            # the proxy: the app must see none of the caller's credentials
            headers_seen = session.get("/x/echo/headers")
            assert headers_seen.status_code == 200
            basic.get("/x/echo/headers")
            token.post("/x/echo/upload", content=b"x" * 100)
            # registry installs as tasks, one that fails
            ok = token.post("/api/apps/install-task", json={"name": "ticker"}).json()["body"]["id"]
            bad = token.post("/api/apps/install-task", json={"name": "no-such-package"}).json()["body"]["id"]
            for task_id in (ok, bad):
                wait_until(
                    lambda task_id=task_id: token.get(f"/api/tasks/{task_id}").json()["body"]["status"]
                    in ("succeeded", "failed"),
                    timeout=30,
                    what=f"task {task_id}",
                )
                token.get(f"/api/tasks/{task_id}/log")
            token.post("/api/apps/package", json={"name": "no-such-package"})
            token.post("/api/apps", json={"name": "no-such-package"})
            # every parameterless read of the host and its store backends
            for path, method, _ in iter_endpoints(live.app.routes):
                if method == "GET" and "{" not in path and path not in ("/api/events/stream",):
                    basic.get(path)
            for name in ("echo", "app-admin"):
                basic.get(f"/api/apps/{name}/logs")
            basic.get("/api/apps/@live")
            basic.get("/api/system")
    finally:
        stop.set()
        with contextlib.suppress(httpx.HTTPError):  # one more event wakes the stream reader
            httpx.post(live.url + "/api/roles", auth=("admin", ADMIN_SECRET), json={"name": "wake"}, timeout=30)
        follower.join(timeout=30)
    seen.responses.append(("the event stream", "\n".join(events)))
    assert any("app-started" in line for line in events), "the event stream was read"
    return secrets


def _app_environments(live: LiveServer) -> dict[str, dict[str, str]]:
    return {
        context["name"]: psutil.Process(context["pid"]).environ()
        for context in live.host.supervisor.contexts()
        if context.get("pid")
    }


def test_no_secret_in_responses_logs_task_logs_db_or_app_environments(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    live: LiveServer = world["live"]
    data: Path = world["data"]
    seen = Seen()
    session_secrets = _exercise(live, seen, data)
    environments = _app_environments(live)
    app_tokens = {f"{name}'s app token": env["BOLT_APP_TOKEN"] for name, env in environments.items()}
    assert set(app_tokens) == {"echo's app token", "app-admin's app token"}

    from bolt_host.cli import _print_banner

    _print_banner(live.host.settings, None)
    banner = capsys.readouterr().err

    secrets = {
        "admin password": ADMIN_SECRET,
        "bob's password": BOB_SECRET,
        "a wrong password tried": WRONG_SECRET,
        "the registry password": REGISTRY_SECRET,
        **session_secrets,
        **app_tokens,
    }
    places: list[tuple[str, str]] = list(seen.responses)
    # The host's records (bolt_host, the store backends, uvicorn); httpx/httpcore DEBUG traces are
    # the test clients' own wire dumps (they show the cookies the test itself sent).
    host_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name.startswith("bolt_host") for r in host_records)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in host_records)
    places.append(("the host's log records", text))
    places += [(f"app log {p.name}", p.read_text(errors="replace")) for p in (data / "logs" / "apps").glob("*")]
    places += [(f"task log {p.name}", p.read_text(errors="replace")) for p in (data / "logs" / "tasks").glob("*")]
    assert any(name.startswith("task log") for name, _ in places)
    places.append(("db.json", (data / "db.json").read_text()))
    places.append(("the start-up banner", banner))

    leaks = []
    for label, secret in secrets.items():
        for what, text in places:
            if secret in text and what not in seen.allowed.get(secret, set()):
                leaks.append(f"{label} in {what}")
    for name, env in environments.items():
        blob = json.dumps(env)
        for label, secret in secrets.items():
            if secret in blob and secret != env.get("BOLT_APP_TOKEN"):
                leaks.append(f"{label} in the environment of {name}")
        assert "BOLT_ADMIN_PASSWORD" not in env
    assert not leaks, "secrets leaked:\n  " + "\n  ".join(leaks)
    assert REGISTRY_USER not in banner and "127.0.0.1" in banner
