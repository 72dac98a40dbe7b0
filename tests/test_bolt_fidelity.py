"""Bolt's app objects and rules as a Bolt client relies on them: ``module``, ``files``,
``checks``/``appHash``, ``path``, case-insensitive names, stop of an unknown app, and the
app token checked before the user."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.apps import TABLE as APPS_TABLE
from bolt_host.services.apps import Apps
from bolt_host.storage import INITIAL_SCHEMA, Database
from bolt_host.testing import RunningHost, running_host
from tests.helpers import async_wait_until

pytestmark = pytest.mark.timeout(120)

CHECKED = {
    "name": "guarded",
    "version": "1.0.0",
    "bolt": {
        "main": "worker.py",
        "server": False,
        "checks": ["worker.py", "conf/settings.json"],
        "files": {"icon": "conf/icon.txt", "index": "conf/settings.json"},
    },
}


@pytest.fixture
async def repo_host(tmp_path: Path) -> AsyncIterator[RunningHost]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    guarded = repo / "guarded"
    (guarded / "conf").mkdir(parents=True)
    (guarded / "package.json").write_text(json.dumps(CHECKED))
    (guarded / "worker.py").write_text("import signal\nsignal.pause()\n")
    (guarded / "conf" / "settings.json").write_text('{"mode": "safe"}')
    (guarded / "conf" / "icon.txt").write_text("*")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        yield bolt


async def _install(bolt: RunningHost, path: str) -> dict:
    answer = await bolt.admin.post("/api/apps/local", json={"path": path})
    assert answer.status_code == 201, answer.text
    return answer.json()["body"]


async def test_apps_carry_module_files_and_checks_and_bolts_module_query_lists_them(repo_host: RunningHost) -> None:
    bolt = repo_host
    app = await _install(bolt, "guarded")
    assert app["module"] is False
    assert app["files"] == CHECKED["bolt"]["files"] and app["checks"] == CHECKED["bolt"]["checks"]
    assert len(app["appHash"]) == 128
    await _install(bolt, "notes")
    listed = (await bolt.admin.get("/api/apps?module=false")).json()["body"]
    assert [a["name"] for a in listed] == ["guarded", "notes"]
    assert (await bolt.admin.get("/api/apps?module=true")).json()["body"] == []
    notes = (await bolt.admin.get("/api/apps/notes")).json()["body"]
    assert "appHash" not in notes and notes["checks"] == [] and notes["files"] == {}


async def test_a_checked_file_that_changed_stops_the_start(repo_host: RunningHost) -> None:
    bolt = repo_host
    app = await _install(bolt, "guarded")
    (Path(app["folder"]) / "conf" / "settings.json").write_text('{"mode": "evil"}')
    refused = await bolt.admin.post("/api/apps/start", json={"name": "guarded"})
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == errors.APP_INTEGRITY_FAILED == 404
    assert body["errorUserMessage"] == "Could not start app due to security concerns"
    assert bolt.host.supervisor.contexts() == []

    (Path(app["folder"]) / "conf" / "settings.json").write_text('{"mode": "safe"}')
    started = await bolt.admin.post("/api/apps/start", json={"name": "guarded"})
    assert started.status_code == 200, started.text
    (Path(app["folder"]) / "worker.py").unlink()
    (Path(app["folder"]) / "worker.py").symlink_to(Path(app["folder"]) / "conf" / "icon.txt")
    restarted = await bolt.admin.post("/api/apps/restart", json={"name": "guarded"})
    assert restarted.json()["code"] == errors.APP_INTEGRITY_FAILED
    assert (await bolt.admin.post("/api/apps/stop", json={"name": "guarded"})).status_code == 200


async def test_a_crash_restart_is_refused_too_once_a_checked_file_changed(repo_host: RunningHost) -> None:
    bolt = repo_host
    app = await _install(bolt, "guarded")
    started = (await bolt.admin.post("/api/apps/start", json={"name": "guarded"})).json()["body"]
    (Path(app["folder"]) / "worker.py").write_text("print('not what was installed')\n")
    os.kill(started["pid"], signal.SIGKILL)  # the test's own app process, by pid

    def refused() -> dict | None:
        context = bolt.host.supervisor.context("guarded")
        return context if context and "bolt.checks" in (context.get("reason") or "") else None

    context = await async_wait_until(refused, timeout=60, what="the restart refused")
    assert context["status"] in ("crashed", "backoff", "failed") and context["pid"] is None
    assert "not what was installed" not in bolt.host.supervisor.log_path("guarded").read_text()
    await bolt.admin.post("/api/apps/stop", json={"name": "guarded"})  # no more restarts


async def test_a_checked_file_must_be_inside_the_app(repo_host: RunningHost, tmp_path: Path) -> None:
    package = tmp_path / "repo" / "guarded" / "package.json"
    package.write_text(json.dumps({**CHECKED, "bolt": {**CHECKED["bolt"], "checks": ["../notes/package.json"]}}))
    refused = await repo_host.admin.post("/api/apps/local", json={"path": "guarded"})
    assert refused.json()["code"] == errors.LOCAL_PACKAGE_FAILED
    assert repo_host.host.apps.get("guarded") is None


async def test_path_is_where_the_app_came_from_and_the_folder_is_for_admins_only(repo_host: RunningHost) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/users", json={"name": "viewer", "password": "viewer-password"})
    seen_events: list = []

    async def listener(event: object) -> None:
        seen_events.append(event)

    bolt.host.events.subscribe(listener)
    app = await _install(bolt, "notes")
    await bolt.host.events.drain()
    installed = [e.body["app"] for e in seen_events if e.name == "app-installed"]
    assert installed and installed[0]["path"] == "notes" and "folder" not in installed[0]  # apps get events too
    assert app["path"] == "notes" and Path(app["folder"]).is_dir()
    again = await bolt.admin.post("/api/apps/local-package", json={"path": app["path"]})
    assert again.json()["body"]["name"] == "notes"
    async with bolt.client_as("viewer", "viewer-password") as viewer:
        seen = (await viewer.get("/api/apps/notes")).json()["body"]
        listed = (await viewer.get("/api/apps")).json()["body"]
    assert seen["path"] == "notes" and "folder" not in seen
    assert all("folder" not in a for a in listed)
    assert bolt.host.settings.data_dir.as_posix() not in json.dumps([seen, listed])


async def test_app_names_are_case_insensitive(repo_host: RunningHost) -> None:
    bolt = repo_host
    await _install(bolt, "ticker")
    got = await bolt.admin.get("/api/apps/TICKER")
    assert got.status_code == 200 and got.json()["body"]["name"] == "ticker"
    started = await bolt.admin.post("/api/apps/start", json={"name": "Ticker"})
    assert started.status_code == 200, started.text
    assert started.json()["body"]["name"] == "ticker"
    twice = await bolt.admin.post("/api/apps/start", json={"names": ["ticker", "TICKER"]})
    assert twice.json()["code"] == errors.BAD_REQUEST
    stopped = await bolt.admin.post("/api/apps/stop", json={"name": "TiCkEr"})
    assert stopped.status_code == 200 and stopped.json()["body"]["status"] == "stopped"
    changed = await bolt.admin.put("/api/apps/TICKER", json={"displayName": "Big Ticker"})
    assert changed.status_code == 200 and bolt.host.apps.get("ticker")["displayName"] == "Big Ticker"
    deleted = await bolt.admin.request("DELETE", "/api/apps/Ticker", json={})
    assert deleted.status_code == 200 and bolt.host.apps.get("ticker") is None


async def test_stop_of_an_unknown_app_is_420_and_stop_answers_with_the_pid_and_port_it_had(
    repo_host: RunningHost,
) -> None:
    bolt = repo_host
    unknown = await bolt.admin.post("/api/apps/stop", json={"name": "ghost"})
    assert unknown.json()["code"] == errors.APP_NOT_RUNNING == 420
    await _install(bolt, "hello-web")
    started = (await bolt.admin.post("/api/apps/start", json={"name": "hello-web"})).json()["body"]
    assert started["pid"] and started["port"]
    stopped = (await bolt.admin.post("/api/apps/stop", json={"name": "hello-web"})).json()["body"]
    assert stopped["status"] == "stopped"
    assert (stopped["pid"], stopped["port"]) == (started["pid"], started["port"])
    assert bolt.host.supervisor.contexts() == []


async def test_a_plain_apps_token_is_refused_before_any_user_is_looked_at(repo_host: RunningHost) -> None:
    bolt = repo_host
    await _install(bolt, "notes")
    token = bolt.host.tokens.issue("notes")
    async with bolt.client_with(**{"X-Bolt-App-Token": token}) as app_only:
        for path, body in (("/api/apps/local", {"path": "ticker"}), ("/api/apps", {"name": "x"})):
            answer = await app_only.post(path, json=body)
            assert answer.json()["code"] == errors.NOT_SYSTEM_APP, path
        assert (await app_only.delete("/api/apps/notes")).json()["code"] == errors.NOT_SYSTEM_APP
    async with bolt.client_as("admin", "wrong-password", **{"X-Bolt-App-Token": token}) as bad_user:
        assert (await bad_user.post("/api/apps/local", json={"path": "ticker"})).json()["code"] == 504
    assert bolt.host.apps.get("ticker") is None and bolt.host.apps.get("notes") is not None


async def test_apps_recorded_before_path_was_bolts_are_migrated(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    db.migrate(APPS_TABLE, INITIAL_SCHEMA)
    folder = str(tmp_path / "apps" / "notes")
    old = {"name": "notes", "version": "1.0.0", "path": folder, "source": {"type": "local", "path": "notes"}}
    db.table(APPS_TABLE).insert(old)
    db.table(APPS_TABLE).insert({"name": "pkg", "path": "/x/pkg", "source": {"type": "registry", "package": "pkg"}})

    async def publish(event: str, body: object) -> None:
        return None

    apps = Apps(db, tmp_path, tmp_path / "repo", publish)
    notes, pkg = apps.get("NOTES"), apps.get("pkg")
    assert (notes["path"], notes["folder"], notes["module"]) == ("notes", folder, False)
    assert (pkg["path"], pkg["folder"]) == ("pkg", "/x/pkg")
    db.close()


async def test_user_names_keep_their_case_and_match_in_any_case(repo_host: RunningHost) -> None:
    bolt = repo_host
    created = await bolt.admin.post("/api/users", json={"name": "Carol", "password": "carol-password"})
    assert created.status_code == 201 and created.json()["body"]["name"] == "Carol"
    again = await bolt.admin.post("/api/users", json={"name": "CAROL", "password": "carol-password"})
    assert again.json()["code"] == errors.USER_EXISTS
    login = await bolt.client.post("/api/users/login", json={"name": "carol", "password": "carol-password"})
    assert login.status_code == 200 and login.json()["body"]["user"]["name"] == "Carol"
    assert (await bolt.admin.get("/api/users/cArOl")).json()["body"]["name"] == "Carol"
    assert [u["name"] for u in bolt.host.users.list() if u["name"].lower() == "carol"] == ["Carol"]
    token = login.json()["body"]["token"]
    assert (await bolt.admin.delete("/api/users/CAROL")).status_code == 200
    async with bolt.client_with(**{"X-Bolt-User-Token": token}) as carol:
        assert (await carol.get("/api/users/@current")).status_code == 401  # her sessions ended with her


async def test_a_server_less_app_is_checked_before_its_bare_context(repo_host: RunningHost, tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "docs-only"
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps({"name": "docs-only", "version": "1.0.0",
                                                     "bolt": {"checks": ["index.html"]}}))
    (folder / "index.html").write_text("<h1>docs</h1>")
    app = await _install(repo_host, "docs-only")
    (Path(app["folder"]) / "index.html").write_text("<h1>changed</h1>")
    refused = await repo_host.admin.post("/api/apps/start", json={"name": "docs-only"})
    assert refused.json()["code"] == errors.APP_INTEGRITY_FAILED
    assert repo_host.host.supervisor.contexts() == []
