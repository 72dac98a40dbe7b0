"""The first-party apps of apps/: installed (once, then upgraded) by --install-bundled, and
bolt-admin managing apps for a logged-in admin through the host's proxy on a real server."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_APPS
from bolt_host.testing import ADMIN_PASSWORD, running_host
from tests.servers import LiveServer, live_host

pytestmark = pytest.mark.timeout(120)


def _bump(folder: Path, version: str) -> None:
    manifest = json.loads((folder / "package.json").read_text())
    manifest["version"] = version
    (folder / "package.json").write_text(json.dumps(manifest))


async def test_bundled_apps_are_installed_once_then_upgraded(tmp_path: Path) -> None:
    bundled = tmp_path / "bundled"
    shutil.copytree(BUNDLED_APPS, bundled)
    settings = {"install_bundled": True, "bundled_apps": bundled}
    async with running_host(tmp_path / "data", **settings) as bolt:
        app = bolt.host.apps.get("bolt-admin")
        assert app is not None and app["system"] is True
        assert app["source"] == {"type": "bundled", "path": "bolt-admin"}
        assert (Path(app["folder"]) / "server.py").is_file()
    async with running_host(tmp_path / "data", **settings) as bolt:
        assert bolt.host.apps.get("bolt-admin") == app, "reinstalled although nothing changed"
    _bump(bundled / "bolt-admin", "1.0.1")
    async with running_host(tmp_path / "data", **settings) as bolt:
        upgraded = bolt.host.apps.get("bolt-admin")
        assert upgraded["version"] == "1.0.1" and upgraded["dateCreated"] == app["dateCreated"]
    async with running_host(tmp_path / "plain") as bolt:
        assert bolt.host.apps.get("bolt-admin") is None, "installed without being asked to"


async def test_an_app_of_the_same_name_from_elsewhere_is_left_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_APPS / "bolt-admin", repo / "bolt-admin")
    _bump(repo / "bolt-admin", "0.9.0")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "bolt-admin"})).status_code == 201
    async with running_host(tmp_path / "data", local_repo=repo, install_bundled=True) as bolt:
        kept = bolt.host.apps.get("bolt-admin")
        assert kept["version"] == "0.9.0" and kept["source"]["type"] == "local"


# bolt-admin on a real host ----------------------------------------------------------------
@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host(tmp_path / "data", install_bundled=True, stop_grace_seconds=5.0) as server:
        try:
            yield server
        finally:
            for context in server.host.supervisor.contexts():  # anything a failed test left running
                if context.get("pid") and psutil.pid_exists(context["pid"]):
                    os.kill(context["pid"], signal.SIGKILL)


def _token(live: LiveServer, name: str, password: str) -> str:
    login = httpx.post(f"{live.url}/api/users/login", json={"name": name, "password": password}, timeout=30)
    assert login.status_code == 200, login.text
    return login.json()["body"]["token"]


def test_bolt_admin_manages_apps_for_a_logged_in_admin(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as basic:
        started = basic.post("/api/apps/start", json={"name": "bolt-admin"})
        assert started.status_code == 200, started.text
        app_port = started.json()["body"]["port"]
        basic.post("/api/users", json={"name": "gus", "password": "gus-password"})
    headers = {"X-Bolt-User-Token": _token(live, "admin", ADMIN_PASSWORD)}
    with httpx.Client(base_url=f"{live.url}/x/bolt-admin", headers=headers, timeout=60) as admin:
        overview = admin.get("/api/overview").json()
        assert {"name": "bolt-admin", "status": "running", "system": True}.items() <= overview["apps"][0].items()
        assert {"hello-web", "notes", "ticker"} <= {entry["path"] for entry in overview["installable"]}
        assert admin.post("/api/install", json={"path": "ticker"}).status_code == 201
        running = admin.post("/api/apps/ticker/start")
        assert running.status_code == 200 and running.json()["status"] == "running", running.text
        assert live.host.supervisor.is_active("ticker")
        assert admin.post("/api/apps/ticker/uninstall").status_code == 200
        assert live.host.apps.get("ticker") is None and not live.host.supervisor.is_active("ticker")
        missing = admin.post("/api/apps/ghost/start")
        assert missing.status_code == 404 and missing.json()["code"] == errors.APP_NOT_FOUND
        assert admin.post("/api/install", json={"path": "../etc"}).status_code == 400
        form = admin.post("/actions", data={"action": "install", "path": "notes"}, follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "/x/bolt-admin/?done=installed+notes+1.0.0"
        assert live.host.apps.get("notes") is not None
        page = admin.get("/", params={"done": "installed notes 1.0.0"})  # the page the 303 leads to
        assert page.status_code == 200 and "notes" in page.text and 'action="/x/bolt-admin/actions"' in page.text
        assert '<p class="notice" role="status" id="notice">installed notes 1.0.0</p>' in page.text
        assert '<link rel="stylesheet" href="/dashboard/dashboard.css">' in page.text  # looks like the dashboard
    gus_headers = {"X-Bolt-User-Token": _token(live, "gus", "gus-password")}
    with httpx.Client(base_url=f"{live.url}/x/bolt-admin", headers=gus_headers, timeout=60) as gus:
        refused = gus.get("/api/overview")
        assert refused.status_code == 403 and refused.json()["code"] == errors.NO_ADMIN_RIGHT
        assert gus.post("/api/install", json={"path": "hello-web"}).json()["code"] == errors.NO_ADMIN_RIGHT
    assert live.host.apps.get("hello-web") is None
    alone = httpx.get(f"http://127.0.0.1:{app_port}/api/overview", timeout=30)  # no user behind the request
    assert alone.status_code == 401


def test_bolt_admin_works_from_a_browser_session(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as basic:
        assert basic.post("/api/apps/start", json={"name": "bolt-admin"}).status_code == 200
    with httpx.Client(base_url=live.url, timeout=60) as browser:
        login = browser.post("/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200
        page = browser.get("/x/bolt-admin/")
        assert page.status_code == 200 and "<h1>Bolt Admin</h1>" in page.text
        form = {"action": "install", "path": "hello-web"}
        forged = browser.post("/x/bolt-admin/actions", data=form, headers={"Sec-Fetch-Site": "same-site"})
        assert forged.status_code == 403 and live.host.apps.get("hello-web") is None  # another port's page
        as_a_browser_sends_it = {"Sec-Fetch-Site": "same-origin", "Origin": live.url}
        installed = browser.post(
            "/x/bolt-admin/actions", data=form, headers=as_a_browser_sends_it, follow_redirects=True
        )
        assert installed.status_code == 200 and "hello-web" in installed.text  # followed the 303 to the page
    assert live.host.apps.get("hello-web") is not None
