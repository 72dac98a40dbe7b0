"""Errors that tell the truth: a start that lost a race with a delete, a package without a
manifest, a registry tarball that is not the version the registry listed."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host import errors, hookimpl
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.trees import remove_tree
from bolt_host.testing import RunningHost, running_host
from tests.registry_server import RegistryServer

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
pytestmark = pytest.mark.timeout(120)


def _tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class DeleteWinsTheRace:
    """Removes the app's folder while its start is under way (between the checks and the spawn)."""

    @hookimpl
    async def requested_port(self, host: Any, app: dict[str, Any]) -> None:
        remove_tree(app["folder"])


@pytest.fixture
async def echo_host(tmp_path: Path) -> AsyncIterator[RunningHost]:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    async with running_host(tmp_path / "data", local_repo=repo, plugins=[DeleteWinsTheRace()]) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "echo"})).status_code == 201
        yield bolt


async def test_a_start_that_loses_a_race_with_a_delete_says_the_app_was_removed(echo_host: RunningHost) -> None:
    answer = await echo_host.admin.post("/api/apps/start", json={"name": "echo"})
    assert answer.json()["code"] == errors.APP_START_FAILED, answer.text
    message = answer.json()["error"]["message"]
    assert "'echo' was removed" in message
    assert "Could not run" not in message and str(echo_host.host.settings.data_dir) not in message
    assert echo_host.host.supervisor.context("echo")["status"] == "failed"


async def test_a_package_without_a_manifest_names_no_temp_folder(tmp_path: Path) -> None:
    async with running_host(tmp_path / "data") as bolt:
        answer = await bolt.admin.post(
            "/api/apps/upload", content=_tarball({"README.md": "no manifest", "lib/x.js": ""}),
            headers={"Content-Type": "application/gzip"},
        )
    assert answer.json()["code"] == errors.LOCAL_PACKAGE_FAILED, answer.text
    message = answer.json()["error"]["message"]
    assert "No package.json" in message
    assert ".extract-" not in message and ".staging-" not in message


async def test_a_registry_tarball_of_another_version_is_refused(tmp_path: Path) -> None:
    with RegistryServer() as registry:
        registry.publish_dir(BUNDLED_LOCAL_REPO / "notes")
        async with running_host(tmp_path / "data", registry=registry.url) as bolt:
            assert (await bolt.admin.post("/api/apps", json={"name": "notes"})).status_code == 201
            manifest = json.dumps({"name": "notes", "version": "9.9.9"})
            registry.publish_tarball("notes", "2.0.0", _tarball({"package/package.json": manifest}))
            answer = await bolt.admin.post("/api/apps", json={"name": "notes", "upgrade": True})
            assert answer.json()["code"] == errors.REGISTRY_PACKAGE_FAILED, answer.text
            assert "mismatch" in answer.json()["error"]["message"]
            assert bolt.host.apps.get("notes")["version"] == "1.0.0"
            fresh = await bolt.admin.post("/api/apps", json={"name": "notes", "version": "2.0.0", "upgrade": True})
            assert fresh.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
