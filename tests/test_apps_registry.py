"""Installs through POST /api/apps from a real npm-protocol server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bolt_host import errors, hookimpl
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import RunningHost, running_host
from tests.registry_server import RegistryServer


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        server.publish_tree(BUNDLED_LOCAL_REPO)
        yield server


@pytest.fixture
async def bolt_r(tmp_path: Path, registry: RegistryServer) -> AsyncIterator[RunningHost]:
    async with running_host(tmp_path / "data", registry=registry.url) as bolt:
        yield bolt


def _tarball(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _manifest(name: str, version: str, **bolt: object) -> str:
    return json.dumps({"name": name, "version": version, "keywords": ["bolt-app"], "bolt": {"main": "s.py", **bolt}})


def _state(bolt: RunningHost) -> tuple[list[str], list[dict]]:
    folders = sorted(p.name for p in (bolt.host.settings.data_dir / "apps").iterdir())
    return folders, bolt.host.apps.list()


async def test_install_latest_and_a_pinned_version(bolt_r: RunningHost, registry: RegistryServer) -> None:
    registry.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="1.1.0")
    latest = await bolt_r.admin.post("/api/apps", json={"name": "notes"})
    assert latest.status_code == 201, latest.text
    assert latest.json()["body"]["version"] == "1.1.0"
    assert latest.json()["body"]["source"]["type"] == "registry"
    pinned = await bolt_r.admin.post("/api/apps", json={"name": "hello-web", "version": "1.0.0", "system": True})
    assert pinned.json()["body"]["system"] is True
    assert (bolt_r.host.settings.data_dir / "public" / "hello-web" / "logo.svg").is_file()


async def test_scoped_package_becomes_name_at_scope(bolt_r: RunningHost, registry: RegistryServer) -> None:
    registry.publish_tarball(
        "@acme/widget",
        "2.0.0",
        _tarball({"package/package.json": _manifest("@acme/widget", "2.0.0"), "package/s.py": ""}),
    )
    response = await bolt_r.admin.post("/api/apps", json={"name": "@acme/widget"})
    assert response.json()["body"]["name"] == "widget@acme"
    assert (await bolt_r.admin.get("/api/apps/widget@acme")).json()["body"]["package"] == "@acme/widget"


async def test_previews_from_the_registry(bolt_r: RunningHost) -> None:
    package = await bolt_r.admin.post("/api/apps/package", json={"name": "ticker"})
    assert package.json()["body"]["bolt"]["server"] is False
    readme = await bolt_r.admin.post("/api/apps/readme", json={"name": "ticker"})
    assert readme.json()["body"].startswith("#")
    unknown = await bolt_r.admin.post("/api/apps/package", json={"name": "no-such-app"})
    assert unknown.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    bad = await bolt_r.admin.post("/api/apps/readme", json={"name": "../etc"})
    assert bad.json()["code"] == errors.APP_NAME_INVALID


async def test_upgrade_swaps_and_failed_upgrades_keep_the_old_version(
    bolt_r: RunningHost, registry: RegistryServer
) -> None:
    assert (await bolt_r.admin.post("/api/apps", json={"name": "notes"})).status_code == 201
    before = _state(bolt_r)
    registry.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="2.0.0", tamper=True)
    tampered = await bolt_r.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
    assert tampered.json()["code"] == errors.DOWNLOAD_FAILED
    assert "integrity" in tampered.json()["error"]["message"].lower()
    registry.publish_tarball("notes", "2.0.1", _tarball({"package/README.md": "no manifest"}))
    broken = await bolt_r.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
    assert broken.json()["code"] == errors.LOCAL_PACKAGE_FAILED
    registry.publish_tarball("notes", "2.0.2", _tarball({"package/package.json": _manifest("other", "2.0.2")}))
    renamed = await bolt_r.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
    assert renamed.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    registry.set_down(True)
    down = await bolt_r.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
    assert down.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    assert _state(bolt_r) == before
    assert bolt_r.host.apps.get("notes")["version"] == "1.0.0"
    registry.set_down(False)
    registry.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="3.0.0")
    upgraded = await bolt_r.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
    assert upgraded.json()["body"]["version"] == "3.0.0"
    assert _state(bolt_r)[0] == ["notes"]


@pytest.mark.parametrize(
    "members",
    [
        {"package/package.json": _manifest("evil", "1.0.0"), "../../escape.txt": "x"},
        {"package/package.json": _manifest("evil", "1.0.0"), "/tmp/absolute.txt": "x"},
        {"package/package.json": _manifest("evil", "1.0.0", main="../../outside.py")},
    ],
)
async def test_hostile_tarballs_change_nothing(
    bolt_r: RunningHost, registry: RegistryServer, tmp_path: Path, members: dict
) -> None:
    registry.publish_tarball("evil", "1.0.0", _tarball(members))
    response = await bolt_r.admin.post("/api/apps", json={"name": "evil"})
    assert response.status_code >= 400
    assert response.json()["code"] in (errors.DOWNLOAD_FAILED, errors.LOCAL_PACKAGE_FAILED)
    assert _state(bolt_r) == ([], [])
    assert not (tmp_path / "escape.txt").exists()


async def test_bad_install_requests(bolt_r: RunningHost) -> None:
    assert (await bolt_r.admin.post("/api/apps", json={})).json()["code"] == errors.APP_NAME_MISSING
    assert (await bolt_r.admin.post("/api/apps", json={"name": 7})).json()["code"] == errors.APP_NAME_INVALID
    assert (await bolt_r.admin.post("/api/apps", json={"name": "bolt"})).json()["code"] == errors.APP_NAME_TAKEN
    for path in ("/api/apps", "/api/apps/package", "/api/apps/readme", "/api/apps/install-task"):
        for version in (3, "", ["1.0.0"]):
            wrong_version = await bolt_r.admin.post(path, json={"name": "notes", "version": version})
            assert wrong_version.status_code == 400, (path, version)
            assert wrong_version.json()["code"] == errors.BAD_REQUEST, (path, version)
    missing_version = await bolt_r.admin.post("/api/apps", json={"name": "notes", "version": "9.9.9"})
    assert missing_version.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    await bolt_r.admin.post("/api/apps", json={"name": "notes"})
    taken = await bolt_r.admin.post("/api/apps", json={"name": "notes"})
    assert taken.json()["code"] == errors.APP_NAME_TAKEN
    assert _state(bolt_r)[0] == ["notes"]


async def test_a_registry_install_announces_app_downloaded_before_app_installed(
    tmp_path: Path, registry: RegistryServer
) -> None:
    seen: list[tuple[str, object]] = []

    class Recorder:
        @hookimpl
        def on_event(self, host, event):
            if event.name.startswith("app-"):
                seen.append((event.name, event.body))

    async with running_host(tmp_path / "data", registry=registry.url, plugins=[Recorder()]) as bolt:
        assert (await bolt.admin.post("/api/apps", json={"name": "notes"})).status_code == 201
        await bolt.host.events.drain()
    assert [name for name, _ in seen] == ["app-downloaded", "app-installed"]
    assert seen[0][1] == {"name": "notes", "version": "1.0.0"}


async def test_a_package_without_readme_is_417(bolt_r: RunningHost, registry: RegistryServer) -> None:
    registry.publish_tarball("bare", "1.0.0", _tarball({"package/package.json": _manifest("bare", "1.0.0")}))
    response = await bolt_r.admin.post("/api/apps/readme", json={"name": "bare"})
    assert response.status_code == 502 and response.json()["code"] == errors.REGISTRY_README_FAILED, response.text
    assert "no readme" in response.json()["error"]["message"]
    pinned = await bolt_r.admin.post("/api/apps/readme", json={"name": "bare", "version": "1.0.0"})
    assert pinned.json()["code"] == errors.REGISTRY_README_FAILED
    unknown_version = await bolt_r.admin.post("/api/apps/readme", json={"name": "notes", "version": "7.7.7"})
    assert unknown_version.json()["code"] == errors.REGISTRY_README_FAILED
