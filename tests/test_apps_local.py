from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.errors import BoltError
from bolt_host.testing import RunningHost, running_host
from tests.helpers import data_dir_snapshot, settled_snapshot


def _make_app(repo: Path, folder: str, package: dict | str | None, readme: str | None = "# hi\n") -> Path:
    path = repo / folder
    path.mkdir(parents=True)
    if package is not None:
        text = package if isinstance(package, str) else json.dumps(package)
        (path / "package.json").write_text(text)
    if readme is not None:
        (path / "README.md").write_text(readme)
    return path


@pytest.fixture
async def repo_host(tmp_path: Path) -> AsyncIterator[RunningHost]:
    """A host whose local repo holds the bundled samples plus crafted bad packages."""
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    _make_app(repo, "no-manifest", None)
    _make_app(repo, "broken-json", "{oops")
    _make_app(repo, "bad-name", {"name": "Bad Name!", "version": "1.0.0"})
    _make_app(repo, "no-name", {"version": "1.0.0"})
    _make_app(repo, "reserved", {"name": "bolt", "version": "1.0.0"})
    _make_app(repo, "escaping-main", {"name": "escaper", "version": "1.0.0", "bolt": {"main": "../../etc/passwd"}})
    (repo / "link-out").symlink_to(tmp_path)
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        yield bolt


def _apps_dir(bolt: RunningHost) -> Path:
    return bolt.host.settings.data_dir / "apps"


def _installed_dirs(bolt: RunningHost) -> list[str]:
    return sorted(p.name for p in _apps_dir(bolt).iterdir())


async def test_install_local_app_copies_files_and_public_folder(repo_host: RunningHost) -> None:
    bolt = repo_host
    response = await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    assert response.status_code == 201, response.text
    app = response.json()["body"]
    assert app["name"] == "hello-web" and app["version"] == "1.0.0"
    assert app["displayName"] == "Hello Web" and app["tags"] == ["demo", "web"]
    assert app["system"] is False and app["source"] == {"type": "local", "path": "hello-web"}
    assert (_apps_dir(bolt) / "hello-web" / "server.py").is_file()
    logo = await bolt.client.get("/public/hello-web/logo.svg")
    assert logo.status_code == 200 and logo.headers["content-type"] == "image/svg+xml"
    assert (await bolt.client.get("/public/hello-web/../../db.json")).status_code == 404
    assert (await bolt.admin.get("/api/apps/hello-web")).json()["body"]["name"] == "hello-web"
    assert _installed_dirs(bolt) == ["hello-web"], "staging leftovers"


async def test_system_flag_from_request_overrides_manifest(repo_host: RunningHost) -> None:
    app = (await repo_host.admin.post("/api/apps/local", json={"path": "app-admin", "system": "false"})).json()
    assert app["body"]["system"] is False
    other = (await repo_host.admin.post("/api/apps/local", json={"path": "notes", "system": True})).json()
    assert other["body"]["system"] is True


async def test_taken_name_is_401_and_upgrade_replaces(repo_host: RunningHost) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    taken = await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    assert taken.status_code == 409 and taken.json()["code"] == errors.APP_NAME_TAKEN
    upgraded = await bolt.admin.post("/api/apps/local", json={"path": "hello-web", "upgrade": True})
    assert upgraded.status_code == 201
    assert _installed_dirs(bolt) == ["hello-web"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, errors.APP_PATH_MISSING),
        ({"path": ""}, errors.APP_PATH_MISSING),
        ({"path": 5}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "../"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "/etc"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "hello-web/../../.."}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "link-out"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "nope"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "no-manifest"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "broken-json"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "bad-name"}, errors.APP_NAME_INVALID),
        ({"path": "no-name"}, errors.APP_NAME_MISSING),
        ({"path": "reserved"}, errors.APP_NAME_TAKEN),
        ({"path": "escaping-main"}, errors.LOCAL_PACKAGE_FAILED),
        ({"path": "hello-web", "surprise": 1}, errors.BAD_REQUEST),
        ({"path": "hello-web", "system": "maybe"}, errors.BAD_REQUEST),
    ],
)
async def test_bad_local_installs_fail_with_the_right_code_and_change_nothing(
    repo_host: RunningHost, body: dict, code: int
) -> None:
    response = await repo_host.admin.post("/api/apps/local", json=body)
    assert response.json()["code"] == code, response.text
    assert response.status_code >= 400
    assert _installed_dirs(repo_host) == []
    assert repo_host.host.apps.list() == []


async def test_local_previews(repo_host: RunningHost) -> None:
    package = (await repo_host.admin.post("/api/apps/local-package", json={"path": "notes"})).json()["body"]
    assert package["name"] == "notes" and "bolt-app" in package["keywords"]
    readme = (await repo_host.admin.post("/api/apps/local-readme", json={"path": "notes"})).json()["body"]
    assert readme.startswith("#")
    missing = await repo_host.admin.post("/api/apps/local-readme", json={"path": "no-manifest/../../"})
    assert missing.json()["code"] == errors.LOCAL_README_FAILED
    catalog = (await repo_host.admin.get("/api/apps/local")).json()["body"]
    assert {"hello-web", "notes", "ticker", "app-admin"} <= {entry["path"] for entry in catalog}


async def test_list_criteria_and_together(repo_host: RunningHost) -> None:
    bolt = repo_host
    for path in ("hello-web", "notes", "app-admin", "ticker"):
        assert (await bolt.admin.post("/api/apps/local", json={"path": path})).status_code == 201
    names = lambda r: sorted(a["name"] for a in r.json()["body"])  # noqa: E731
    assert names(await bolt.admin.get("/api/apps?tags=demo")) == ["hello-web", "notes", "ticker"]
    assert names(await bolt.admin.get("/api/apps?system=true")) == ["app-admin"]
    assert names(await bolt.admin.get("/api/apps?tags=demo&server=false")) == ["ticker"]
    assert names(await bolt.admin.get("/api/apps?version=9.9")) == []
    missing = await bolt.admin.get("/api/apps/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == errors.APP_NOT_FOUND


async def test_update_changes_only_allowed_fields(repo_host: RunningHost) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/apps/local", json={"path": "notes"})
    changed = await bolt.admin.put("/api/apps/notes", json={"displayName": "My Notes", "tags": ["x"], "order": 3})
    assert changed.json()["body"]["displayName"] == "My Notes"
    assert bolt.host.apps.get("notes")["order"] == 3
    for bad in ({"path": "/tmp"}, {"order": "first"}, {"system": "yes"}, {}):
        response = await bolt.admin.put("/api/apps/notes", json=bad)
        assert response.status_code == 400, bad
    notes = bolt.host.apps.get("notes")
    assert notes["folder"].endswith("apps/notes") and notes["path"] == "notes"
    unknown = await bolt.admin.put("/api/apps/ghost", json={"displayName": "x"})
    assert unknown.json()["code"] == errors.APP_NOT_FOUND


@pytest.mark.parametrize("truthy", [True, "true"])
async def test_delete_with_flags_as_booleans_or_strings(repo_host: RunningHost, truthy: object) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    bolt.host.appdb.insert("hello-web", "things", {"a": 1})
    deleted = await bolt.admin.request(
        "DELETE",
        "/api/apps/hello-web",
        json={"deleteDatabase": truthy, "deletePublicFolder": truthy, "deleteSourceFolder": truthy},
    )
    assert deleted.json()["body"]["name"] == "hello-web"
    data = bolt.host.settings.data_dir
    assert not (data / "apps" / "hello-web").exists()
    assert not (data / "public" / "hello-web").exists()
    assert not (data / "databases" / "hello-web.json").exists()


async def test_delete_without_flags_keeps_files(repo_host: RunningHost) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    await bolt.admin.delete("/api/apps/hello-web")
    assert (bolt.host.settings.data_dir / "apps" / "hello-web").is_dir()
    assert bolt.host.apps.get("hello-web") is None
    again = await bolt.admin.delete("/api/apps/hello-web")
    assert again.json()["code"] == errors.APP_NOT_FOUND


async def test_bulk_delete_needs_criteria(repo_host: RunningHost) -> None:
    bolt = repo_host
    for path in ("hello-web", "notes", "app-admin"):
        await bolt.admin.post("/api/apps/local", json={"path": path})
    refused = await bolt.admin.delete("/api/apps")
    assert refused.json()["code"] == errors.BULK_DELETE_CRITERIA
    assert len(bolt.host.apps.list()) == 3
    deleted = await bolt.admin.delete("/api/apps?tags=demo")
    assert sorted(a["name"] for a in deleted.json()["body"]) == ["hello-web", "notes"]
    assert [a["name"] for a in bolt.host.apps.list()] == ["app-admin"]


async def test_install_permissions(repo_host: RunningHost) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/users", json={"name": "gus", "password": "gus-password"})
    await bolt.admin.post("/api/apps/local", json={"path": "notes"})
    await bolt.admin.post("/api/apps/local", json={"path": "app-admin"})
    async with bolt.client_as("gus", "gus-password") as gus:
        refused = await gus.post("/api/apps/local", json={"path": "hello-web"})
        assert refused.json()["code"] == errors.NO_ADMIN_RIGHT
    plain_token = bolt.host.tokens.issue("notes")
    async with bolt.client_as("admin", bolt.admin_password, **{"X-Bolt-App-Token": plain_token}) as as_app:
        refused = await as_app.post("/api/apps/local", json={"path": "hello-web"})
        assert refused.json()["code"] == errors.NOT_SYSTEM_APP
    system_token = bolt.host.tokens.issue("app-admin")
    async with bolt.client_with(**{"X-Bolt-App-Token": system_token}) as app_only:
        refused = await app_only.post("/api/apps/local", json={"path": "hello-web"})
        assert refused.json()["code"] == errors.NOT_LOGGED_IN
    assert bolt.host.apps.get("hello-web") is None
    async with bolt.client_as("admin", bolt.admin_password, **{"X-Bolt-App-Token": system_token}) as system:
        allowed = await system.post("/api/apps/local", json={"path": "hello-web"})
        assert allowed.status_code == 201


async def test_registry_install_without_registry_is_a_clear_error(repo_host: RunningHost) -> None:
    response = await repo_host.admin.post("/api/apps", json={"name": "hello-web"})
    assert response.json()["code"] == errors.DOWNLOAD_FAILED
    assert "--registry" in response.json()["error"]["message"]
    preview = await repo_host.admin.post("/api/apps/package", json={"name": "hello-web"})
    assert "--registry" in preview.json()["error"]["message"]


async def test_install_events_reach_plugins(tmp_path: Path) -> None:
    seen: list[tuple[str, object]] = []

    class Recorder:
        from bolt_host import hookimpl

        @hookimpl
        def on_event(self, host, event):
            seen.append((event.name, event.body))

    async with running_host(tmp_path, plugins=[Recorder()]) as bolt:
        await bolt.admin.post("/api/apps/local", json={"path": "notes"})
        await bolt.admin.post("/api/apps/local", json={"path": "notes", "upgrade": True})
        await bolt.admin.delete("/api/apps/notes")
        await bolt.host.events.drain()
    names = [name for name, _ in seen if name.startswith("app-")]
    assert names == ["app-installed", "app-updated", "app-uninstalling", "app-uninstalled"]


@pytest.mark.parametrize("path", ["/api/apps", "/api/apps/local", "/api/apps/install-task"])
async def test_anonymous_installs_are_401_before_the_body_is_read(repo_host: RunningHost, path: str) -> None:
    malformed = await repo_host.client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 401 and malformed.json()["code"] == errors.NOT_LOGGED_IN, malformed.text
    as_admin = await repo_host.admin.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert as_admin.status_code == 400 and as_admin.json()["code"] == errors.BAD_REQUEST


async def _stop_raising_bolt_error(name: str) -> dict:
    raise BoltError(errors.UNKNOWN, "the stop timed out")


async def _stop_on_a_full_disk(name: str) -> dict:
    raise OSError(errno.ENOSPC, "No space left on device")  # the stop could not be recorded


async def _stop_that_does_nothing(name: str) -> dict:
    return {"name": name}


@pytest.mark.parametrize(
    ("failing_stop", "code"),
    [
        (_stop_raising_bolt_error, errors.APP_STOP_FAILED),
        (_stop_that_does_nothing, errors.APP_STOP_FAILED),
        (_stop_on_a_full_disk, errors.STORAGE_FULL),
    ],
)
async def test_a_delete_whose_stop_fails_changes_nothing(
    repo_host: RunningHost, monkeypatch: pytest.MonkeyPatch, failing_stop: object, code: int
) -> None:
    bolt = repo_host
    await bolt.admin.post("/api/apps/local", json={"path": "ticker"})
    started = await bolt.admin.post("/api/apps/start", json={"name": "ticker"})
    pid = started.json()["body"]["pid"]
    try:
        before = await settled_snapshot(bolt.host)
        with monkeypatch.context() as patch:
            patch.setattr(bolt.host.supervisor, "stop_app", failing_stop)
            for target in ("/api/apps/ticker", "/api/apps?name=ticker"):
                refused = await bolt.admin.request("DELETE", target, json={"deleteSourceFolder": True})
                assert refused.json()["code"] == code, refused.text
                assert refused.status_code >= 500
        assert bolt.host.apps.get("ticker") is not None
        assert await settled_snapshot(bolt.host) == before
        assert psutil.pid_exists(pid) and bolt.host.supervisor.is_active("ticker")
        deleted = await bolt.admin.request("DELETE", "/api/apps/ticker", json={"deleteSourceFolder": True})
        assert deleted.status_code == 200
        assert not bolt.host.supervisor.is_active("ticker")
        assert not (_apps_dir(bolt) / "ticker").exists()
    finally:
        if psutil.pid_exists(pid) and bolt.host.supervisor.is_active("ticker"):
            os.kill(pid, signal.SIGKILL)


async def test_bulk_delete_takes_the_flags_and_refuses_bad_ones(repo_host: RunningHost) -> None:
    bolt = repo_host
    for path in ("hello-web", "notes", "app-admin"):
        await bolt.admin.post("/api/apps/local", json={"path": path})
    bolt.host.appdb.insert("notes", "things", {"a": 1})
    data = bolt.host.settings.data_dir
    before = data_dir_snapshot(data)
    for bad in ({"deleteDatabase": "maybe"}, {"deleteSourceFolder": 1}, {"deletePublicFolder": ["true"]}):
        refused = await bolt.admin.request("DELETE", "/api/apps?tags=demo", json=bad)
        assert refused.status_code == 400 and refused.json()["code"] == errors.BAD_REQUEST, bad
        assert data_dir_snapshot(data) == before, bad
    flags = {"deleteDatabase": "true", "deletePublicFolder": True, "deleteSourceFolder": "true"}
    deleted = await bolt.admin.request("DELETE", "/api/apps?tags=demo", json=flags)
    assert sorted(a["name"] for a in deleted.json()["body"]) == ["hello-web", "notes"]
    assert not (data / "apps" / "hello-web").exists() and not (data / "apps" / "notes").exists()
    assert not (data / "public" / "hello-web").exists() and not (data / "databases" / "notes.json").exists()
    assert (data / "apps" / "app-admin").is_dir()
    kept = await bolt.admin.request("DELETE", "/api/apps?system=true", json={"deleteSourceFolder": "false"})
    assert [a["name"] for a in kept.json()["body"]] == ["app-admin"]
    assert (data / "apps" / "app-admin").is_dir() and bolt.host.apps.list() == []


@pytest.mark.parametrize(
    "bad",
    [{"displayName": 5}, {"tags": "abc"}, {"order": "1"}, {"system": "maybe"}, {"path": "/tmp"},
     {"controlledVisibility": 1}, {"description": ["x"]}, {"displayName": "ok", "version": "9.9.9"}],
)  # fmt: skip
async def test_bad_updates_change_nothing_on_disk_or_in_the_db(repo_host: RunningHost, bad: dict) -> None:
    await repo_host.admin.post("/api/apps/local", json={"path": "notes"})
    before = await settled_snapshot(repo_host.host)
    response = await repo_host.admin.put("/api/apps/notes", json=bad)
    assert response.status_code == 400 and response.json()["code"] == errors.BAD_REQUEST, response.text
    assert await settled_snapshot(repo_host.host) == before


async def test_version_criterion_matches(repo_host: RunningHost) -> None:
    for path in ("hello-web", "notes"):
        await repo_host.admin.post("/api/apps/local", json={"path": path})
    await repo_host.admin.post("/api/apps/local", json={"path": "notes", "upgrade": True})
    found = (await repo_host.admin.get("/api/apps?version=1.0.0")).json()["body"]
    assert sorted(a["name"] for a in found) == ["hello-web", "notes"]
    both = (await repo_host.admin.get("/api/apps?version=1.0.0&name=notes")).json()["body"]
    assert [a["name"] for a in both] == ["notes"]
