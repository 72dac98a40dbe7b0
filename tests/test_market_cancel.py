"""Cancelling Market operations while they wait in the queue and while they install.

These tests drive the real Starlette app through httpx's ASGI transport, in the
test's own event loop, so they can hold the host's per-app install lock: a real
contention (another operation on the same name) that keeps an install in its
``installing`` phase until the test lets it go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bolt_host.testing import running_host
from tests.helpers import async_wait_until
from tests.test_market_support import PREFIX, copy_repo

pytestmark = pytest.mark.timeout(120)

GREETING = [{"envName": "GREETING", "value": "hello"}]
INSTALL = {"source": "market.bolt", "app_name": "env-echo", "version": "1.0.0", "envs": GREETING}


async def _state(client: httpx.AsyncClient, name: str) -> str | None:
    body = (await client.get(PREFIX + "/market/state")).json()
    for source in body["data"]["user_data"]["sources"].values():
        for row in source["app_state_latest"]:
            if row["status"]["name"] == name:
                return row["status"]["state"]
    return None


async def _wait_state(client: httpx.AsyncClient, name: str, state: str) -> None:
    async def reached() -> bool:
        return await _state(client, name) == state

    await async_wait_until(reached, timeout=30, what=f"{name} {state}")


def _task_id(answer: httpx.Response) -> int:
    assert answer.status_code == 200, answer.text
    return int(answer.json()["data"]["task_id"])


def _nothing_left(host: Any, name: str) -> None:
    apps_dir = Path(host.settings.data_dir) / "apps"
    assert host.apps.get(name) is None
    assert not (apps_dir / name).exists()
    assert not host.supervisor.is_active(name)
    assert host.visibility.app_users(name) == []


async def test_cancel_while_queued_and_while_installing_leaves_nothing_behind(tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", local_repo=copy_repo(tmp_path)) as bolt:
        host, admin = bolt.host, bolt.admin
        lock = host.apps.lock_for("env-echo")
        await lock.acquire()  # env-echo's install will wait here, in its installing phase
        try:
            first = _task_id(await admin.post(PREFIX + "/apps/env-echo/install", json=INSTALL))
            await _wait_state(admin, "env-echo", "installing")
            clone = await admin.post(PREFIX + "/apps/env-echo/clone", json={**INSTALL, "title": "Second"})
            queued = _task_id(clone)
            assert host.tasks.get(queued)["status"] == "queued"  # one install at a time: it waits
            clone_name = host.tasks.get(queued)["meta"]["instance"]
            assert await _state(admin, clone_name) == "pending"

            cancel_queued = _task_id(await admin.request("DELETE", f"{PREFIX}/apps/{clone_name}/install",
                                                         json={"sync": True}))
            assert host.tasks.get(queued)["status"] == "canceled"
            assert host.tasks.get(cancel_queued)["status"] == "succeeded"
            assert await _state(admin, clone_name) == "pendingCanceled"
            _nothing_left(host, clone_name)

            cancel = _task_id(await admin.request("DELETE", PREFIX + "/apps/env-echo/install", json={}))
            await _wait_state(admin, "env-echo", "installingCanceling")
            # The cancel is a task too: its job asks the install to stop once its own start is on disk.
            await async_wait_until(lambda: "=== cancel requested" in host.tasks.read_log(first)[0], timeout=30,
                                   what="the cancel request to reach the install")
        finally:
            lock.release()  # the install finishes its step, sees the cancel and removes what it made
        final = await host.tasks.wait(cancel, timeout=30)
        assert final["status"] == "succeeded", final
        assert host.tasks.get(first)["status"] == "canceled"
        assert await _state(admin, "env-echo") == "installingCanceled"
        _nothing_left(host, "env-echo")
        assert list((Path(host.settings.data_dir) / "apps").glob(".staging-*")) == []
        logs = (await admin.get(PREFIX + "/logs", params={"app": "env-echo", "type": "install"})).json()
        assert [r["message"] for r in logs["data"]["records"] if r["status"] == "canceled"] == [
            "canceled while installing"]

        again = await admin.post(PREFIX + "/apps/env-echo/install", json={**INSTALL, "sync": True})
        assert again.status_code == 200, again.text
        assert await _state(admin, "env-echo") == "running"
        removed = await admin.request("DELETE", PREFIX + "/apps/env-echo", json={"sync": True})
        assert removed.status_code == 200, removed.text
