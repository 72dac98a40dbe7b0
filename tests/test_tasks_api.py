"""Tasks over HTTP (list, show, log, cancel, remove), registry installs as tasks, the catalog route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.tasks import TaskHandle
from bolt_host.testing import RunningHost, running_host
from tests.helpers import async_wait_until
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        server.publish_tree(BUNDLED_LOCAL_REPO)
        yield server


@pytest.fixture
async def bolt_r(tmp_path: Path, registry: RegistryServer) -> AsyncIterator[RunningHost]:
    async with running_host(tmp_path / "data", registry=registry.url) as bolt:
        yield bolt


def gated(gate: asyncio.Event, lines: tuple[str, ...] = ()) -> Any:
    async def job(task: TaskHandle) -> dict[str, Any]:
        for line in lines:
            task.log(line)
        task.progress(0.5)
        await async_wait_until(lambda: gate.is_set() or task.cancelled, timeout=60, what="the gate or a cancel")
        task.check_cancelled()
        return {"done": True}

    return job


async def _guest(bolt: RunningHost) -> Any:
    created = await bolt.admin.post("/api/users", json={"name": "gina", "password": "guest-password", "roles": []})
    assert created.status_code == 201, created.text
    return bolt.client_as("gina", "guest-password")


async def test_list_show_and_filter_tasks(bolt: RunningHost) -> None:
    gate = asyncio.Event()
    first = bolt.host.tasks.submit("download", "notes", "1.0.0", gated(gate))
    second = bolt.host.tasks.submit("install", "ticker", None, gated(gate))
    # "running" is on the record before the job runs (it starts once that is on disk): wait for the job itself
    await async_wait_until(lambda: bolt.host.tasks.get(first["id"])["progress"] == 0.5, what="first's job running")
    listed = (await bolt.admin.get("/api/tasks")).json()
    assert listed["code"] == 0
    assert [t["id"] for t in listed["body"]] == [second["id"], first["id"]]
    by_kind = (await bolt.admin.get("/api/tasks?kind=download")).json()["body"]
    assert [t["id"] for t in by_kind] == [first["id"]]
    by_module = (await bolt.admin.get("/api/tasks?module=ticker")).json()["body"]
    assert [t["module"] for t in by_module] == ["ticker"]
    running = (await bolt.admin.get("/api/tasks?status=running&kind=download")).json()["body"]
    assert [t["progress"] for t in running] == [0.5]
    bad = await bolt.admin.get("/api/tasks?colour=red")
    assert bad.status_code == 400 and bad.json()["code"] == errors.BAD_REQUEST
    shown = (await bolt.admin.get(f"/api/tasks/{first['id']}")).json()["body"]
    assert shown["kind"] == "download" and shown["status"] == "running" and shown["version"] == "1.0.0"
    gate.set()
    done = await bolt.host.tasks.wait(first["id"], timeout=10)
    assert done["status"] == "succeeded"
    shown = (await bolt.admin.get(f"/api/tasks/{first['id']}")).json()["body"]
    assert shown["progress"] == 1.0 and shown["result"] == {"done": True}


async def test_unknown_tasks_are_404_in_the_envelope(bolt: RunningHost) -> None:
    for method, path in [
        ("GET", "/api/tasks/999"),
        ("GET", "/api/tasks/abc"),
        ("GET", "/api/tasks/999/log"),
        ("POST", "/api/tasks/999/cancel"),
        ("DELETE", "/api/tasks/999"),
    ]:
        response = await bolt.admin.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == errors.ENDPOINT_NOT_FOUND
        assert response.json()["errorTraceId"]


async def test_task_log_by_character_range(bolt: RunningHost) -> None:
    gate = asyncio.Event()
    record = bolt.host.tasks.submit("download", "notes", "1.0.0", gated(gate, ("=== héllo wörld",)))
    whole = await async_wait_until(
        lambda: _log_with(bolt, record["id"], "héllo"), timeout=10, what="the job's log line"
    )
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["X-MORE-DATA"] == "true"  # still running: the log may grow
    total = int(whole.headers["X-TEXT-SIZE"])
    assert total == len(whole.text)
    part = await bolt.admin.get(f"/api/tasks/{record['id']}/log?start=0&end=4")
    assert part.text == whole.text[:4] and part.headers["X-MORE-DATA"] == "true"
    assert (await bolt.admin.get(f"/api/tasks/{record['id']}/log?start=-1")).status_code == 400
    assert (await bolt.admin.get(f"/api/tasks/{record['id']}/log?start=5&end=2")).status_code == 400
    gate.set()
    await bolt.host.tasks.wait(record["id"], timeout=10)
    final = await bolt.admin.get(f"/api/tasks/{record['id']}/log")
    assert final.headers["X-MORE-DATA"] == "false"
    assert final.text.startswith(whole.text) and "succeeded" in final.text
    tail = await bolt.admin.get(f"/api/tasks/{record['id']}/log?start={len(final.text)}")
    assert tail.text == "" and tail.headers["X-MORE-DATA"] == "false"


async def _log_with(bolt: RunningHost, task_id: int, needle: str) -> Any:
    response = await bolt.admin.get(f"/api/tasks/{task_id}/log")
    return response if needle in response.text else None


async def test_cancel_running_and_queued_tasks_then_remove(bolt: RunningHost) -> None:
    gate = asyncio.Event()
    running = bolt.host.tasks.submit("install", "notes", None, gated(gate))
    queued = bolt.host.tasks.submit("install", "ticker", None, gated(gate))
    await async_wait_until(lambda: bolt.host.tasks.get(running["id"])["status"] == "running", what="running")
    busy = await bolt.admin.delete(f"/api/tasks/{running['id']}")
    assert busy.status_code == 409 and "still running" in busy.json()["error"]["message"]
    canceled = (await bolt.admin.post(f"/api/tasks/{queued['id']}/cancel")).json()["body"]
    assert canceled["status"] == "canceled"
    asked = await bolt.admin.post(f"/api/tasks/{running['id']}/cancel")
    assert asked.status_code == 200
    done = await bolt.host.tasks.wait(running["id"], timeout=10)
    assert done["status"] == "canceled"
    removed = await bolt.admin.delete(f"/api/tasks/{running['id']}")
    assert removed.status_code == 200 and removed.json()["body"]["id"] == running["id"]
    assert (await bolt.admin.get(f"/api/tasks/{running['id']}")).status_code == 404


async def test_tasks_are_for_admins_only(bolt: RunningHost) -> None:
    record = bolt.host.tasks.submit("download", "notes", None, gated(asyncio.Event()))
    guest = await _guest(bolt)
    async with guest:
        for method, path in [
            ("GET", "/api/tasks"),
            ("GET", f"/api/tasks/{record['id']}"),
            ("GET", f"/api/tasks/{record['id']}/log"),
            ("POST", f"/api/tasks/{record['id']}/cancel"),
            ("DELETE", f"/api/tasks/{record['id']}"),
            ("GET", "/api/catalog"),
            ("GET", "/api/system"),
        ]:
            anonymous = await bolt.client.request(method, path)
            assert anonymous.status_code == 401, (method, path)
            refused = await guest.request(method, path)
            assert refused.status_code == 403 and refused.json()["code"] == errors.NO_ADMIN_RIGHT, (method, path)
        post = await guest.post("/api/apps/install-task", json={"name": "notes"})
        assert post.status_code == 403
    assert bolt.host.tasks.get(record["id"])["status"] in ("queued", "running")


async def test_install_task_downloads_with_progress_and_installs(bolt_r: RunningHost) -> None:
    response = await bolt_r.admin.post("/api/apps/install-task", json={"name": "notes", "system": False})
    assert response.status_code == 201, response.text
    record = response.json()["body"]
    assert record["kind"] == "install" and record["module"] == "notes" and record["status"] in ("queued", "running")
    done = await bolt_r.host.tasks.wait(record["id"], timeout=30)
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["result"]["name"] == "notes"
    log = (await bolt_r.admin.get(f"/api/tasks/{record['id']}/log")).text
    assert "=== downloaded" in log and "=== installed notes 1.0.0" in log
    app = (await bolt_r.admin.get("/api/apps/notes")).json()["body"]
    assert app["source"]["type"] == "registry" and app["system"] is False
    taken = await bolt_r.admin.post("/api/apps/install-task", json={"name": "notes"})
    assert taken.status_code == 409 and taken.json()["code"] == errors.APP_NAME_TAKEN
    upgraded = await bolt_r.admin.post("/api/apps/install-task", json={"name": "notes", "upgrade": True})
    assert upgraded.status_code == 201
    assert (await bolt_r.host.tasks.wait(upgraded.json()["body"]["id"], timeout=30))["status"] == "succeeded"


async def test_install_task_failures(bolt_r: RunningHost, registry: RegistryServer) -> None:
    registry.publish_dir(BUNDLED_LOCAL_REPO / "ticker", version="9.0.0", tamper=True)
    response = await bolt_r.admin.post("/api/apps/install-task", json={"name": "ticker", "version": "9.0.0"})
    assert response.status_code == 201
    done = await bolt_r.host.tasks.wait(response.json()["body"]["id"], timeout=30)
    assert done["status"] == "failed" and "integrity" in done["error"]
    assert (await bolt_r.admin.get("/api/apps/ticker")).status_code == 404
    for body, code in [
        ({}, errors.APP_NAME_MISSING),
        ({"name": "../evil"}, errors.APP_NAME_INVALID),
        ({"name": "notes", "colour": "red"}, errors.BAD_REQUEST),
        ({"name": "notes", "version": 3}, errors.BAD_REQUEST),
    ]:
        refused = await bolt_r.admin.post("/api/apps/install-task", json=body)
        assert refused.json()["code"] == code, (body, refused.text)


async def test_install_task_without_a_registry_says_so(bolt: RunningHost) -> None:
    refused = await bolt.admin.post("/api/apps/install-task", json={"name": "notes"})
    assert refused.json()["code"] == errors.DOWNLOAD_FAILED
    assert "registry" in refused.json()["error"]["message"]
    assert bolt.host.tasks.list() == []


async def test_catalog_lists_local_and_registry_packages_and_previews_one(bolt_r: RunningHost) -> None:
    listed = (await bolt_r.admin.get("/api/catalog?refresh=true")).json()["body"]
    names = {e["name"]: e for e in listed["entries"]}
    assert {"notes", "hello-web", "ticker"} <= set(names)
    assert set(names["notes"]["sources"]) == {"local", "registry"}
    assert {"local", "registry", "uploads"} <= set(listed["sources"]) and listed["errors"] == {}
    preview = (await bolt_r.admin.get("/api/catalog/package?name=hello-web")).json()["body"]
    assert preview["manifest"]["name"] == "hello-web" and preview["manifest"]["bolt"]["main"] == "server.py"
    assert preview["readme"].startswith("# hello-web")
    missing = await bolt_r.admin.get("/api/catalog/package?name=ghost")
    assert missing.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    assert (await bolt_r.admin.get("/api/catalog/package")).json()["code"] == errors.APP_NAME_MISSING
