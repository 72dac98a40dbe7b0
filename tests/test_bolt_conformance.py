"""Conformance: the Bolt "Apps (API)" document's endpoints, in its order, against a real
host, as a client written from that document alone sends them: "standard Bolt requests"
from a system app (``X-Bolt-App-Token``) for a logged-in admin (``X-Bolt-User-Token``),
checking ``code == 0`` and the body the document promises."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from tests.registry_server import RegistryServer
from tests.servers import LiveServer, live_host

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def bolt_server(tmp_path: Path) -> Iterator[tuple[LiveServer, RegistryServer]]:
    repo = tmp_path / "node_modules"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    with RegistryServer() as registry:
        registry.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="1.1")
        with live_host(tmp_path / "data", local_repo=repo, registry=registry.url) as live:
            yield live, registry


def _body(response: httpx.Response) -> Any:
    envelope = response.json()
    assert envelope["code"] == 0, envelope
    return envelope["body"]


def test_the_documents_endpoints_in_order(bolt_server: tuple[LiveServer, RegistryServer]) -> None:
    live, _ = bolt_server
    started_pids: list[int] = []
    # Setting up the system app the client acts as: an admin installs and starts it.
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as setup:
        assert setup.post("/api/apps/local", json={"path": "app-admin", "system": True}).status_code == 201
    app_token = live.host.tokens.issue("app-admin")  # what the app finds in BOLT_APP_TOKEN
    with httpx.Client(base_url=live.url, timeout=60) as anonymous:
        login = anonymous.post("/api/users/login", json={"name": "admin", "password": live.admin_auth[1]})
        user_token = _body(login)["token"]
    bolt = httpx.Client(
        base_url=live.url, timeout=60, headers={"X-Bolt-App-Token": app_token, "X-Bolt-User-Token": user_token}
    )
    try:
        # POST /api/apps/local-package and local-readme: {path} relative to node_modules
        package = _body(bolt.post("/api/apps/local-package", json={"path": "hello-web"}))
        assert package["name"] == "hello-web" and "bolt" in package
        readme = _body(bolt.post("/api/apps/local-readme", json={"path": "hello-web"}))
        assert isinstance(readme, str) and readme.startswith("#")

        # POST /api/apps/local: {path, system}
        app = _body(bolt.post("/api/apps/local", json={"path": "hello-web", "system": False}))
        assert (app["name"], app["system"], app["module"], app["path"]) == ("hello-web", False, False, "hello-web")
        assert _body(bolt.post("/api/apps/local-package", json={"path": app["path"]}))["name"] == "hello-web"

        # POST /api/apps/package and readme, then POST /api/apps {name, system} from the registry
        assert _body(bolt.post("/api/apps/package", json={"name": "notes"}))["version"] == "1.1"
        assert isinstance(_body(bolt.post("/api/apps/readme", json={"name": "notes"})), str)
        notes = _body(bolt.post("/api/apps", json={"name": "notes", "system": False}))
        assert (notes["name"], notes["version"], notes["path"]) == ("notes", "1.1", "notes")

        # GET /api/apps?version=1.1, ?tags=settings, Bolt's admin query ?module=false
        assert [a["name"] for a in _body(bolt.get("/api/apps?version=1.1"))] == ["notes"]
        assert [a["name"] for a in _body(bolt.get("/api/apps?tags=settings"))] == ["app-admin"]
        assert {a["name"] for a in _body(bolt.get("/api/apps?module=false"))} == {"app-admin", "hello-web", "notes"}

        # GET /api/apps/<name>
        assert _body(bolt.get("/api/apps/hello-web"))["displayName"] == "Hello Web"

        # POST /api/apps/start {name}: a context; port = a server, pid = another process; once only
        context = _body(bolt.post("/api/apps/start", json={"name": "hello-web"}))
        started_pids.append(context["pid"])
        assert (context["name"], context["path"], context["app"]["name"]) == ("hello-web", "hello-web", "hello-web")
        assert context["port"] and context["pid"]
        assert _body(bolt.post("/api/apps/start", json={"name": "hello-web"}))["pid"] == context["pid"]

        # GET /api/apps/@live: the running contexts
        assert [c["name"] for c in _body(bolt.get("/api/apps/@live"))] == ["hello-web"]

        # POST /api/apps/stop {name}: the context; stopping what is not running is code 420
        stopped = _body(bolt.post("/api/apps/stop", json={"name": "hello-web"}))
        assert (stopped["name"], stopped["pid"], stopped["port"]) == ("hello-web", context["pid"], context["port"])
        assert bolt.post("/api/apps/stop", json={"name": "hello-web"}).json()["code"] == 420

        # DELETE /api/apps/<name> and DELETE /api/apps?version=1.1
        deleted = _body(bolt.request("DELETE", "/api/apps/hello-web", json={"deleteSourceFolder": True}))
        assert deleted["name"] == "hello-web"
        assert bolt.get("/api/apps/hello-web").json()["code"] == 403
        assert [a["name"] for a in _body(bolt.request("DELETE", "/api/apps?version=1.1", json={}))] == ["notes"]

        # Security: only system apps (and an admin) install or delete
        plain = live.host.tokens.issue("hello-web")
        refused = bolt.post("/api/apps/local", json={"path": "ticker"}, headers={"X-Bolt-App-Token": plain})
        assert refused.json()["code"] == 504
    finally:
        bolt.close()
        for pid in started_pids:
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                os.kill(pid, 9)
