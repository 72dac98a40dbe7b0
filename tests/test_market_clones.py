"""Clones side by side, and cancelling an install while its tarball is still downloading."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bolt_host.services.ports import is_port_free
from tests.registry_server import RegistryServer
from tests.test_market_support import REPO, app_get, market_host

pytestmark = pytest.mark.timeout(180)

GREETING = [{"envName": "GREETING", "value": "hello"}]


def test_clone_runs_beside_the_original_with_its_own_envs_and_port(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        installed = admin.post("/apps/env-echo/install", json={
            "source": "market.bolt", "app_name": "env-echo", "version": "1.0.0", "sync": True, "envs": GREETING})
        assert installed.status_code == 200, installed.text

        host = market.live.host
        low, high = host.settings.port_range
        wanted = next(p for p in range(high, low, -1) if is_port_free(p))  # the pool hands out from the low end
        taken = host.supervisor.context("env-echo")["port"]

        def clone_body(port: int) -> dict:
            return {"source": "market.bolt", "app_name": "env-echo", "title": "Echo Two", "sync": True,
                    "envs": [{"env_name": "GREETING", "env_value": "bonjour"}, {"envName": "COLOR", "value": "red"}],
                    "entrances": [{"name": "web", "port": port, "protocol": "http"}]}

        outside = admin.post("/apps/env-echo/clone", json=clone_body(low - 1))
        assert outside.status_code == 400
        assert outside.json()["message"] == f"Port {low - 1} is outside this host's port range {low}-{high}"
        in_use = admin.post("/apps/env-echo/clone", json=clone_body(taken))
        assert in_use.status_code == 400 and in_use.json()["message"] == f"Port {taken} is in use on this host"
        two_ports = {**clone_body(wanted), "entrances": [{"name": "a", "port": wanted},
                                                          {"name": "b", "port": wanted - 1}]}
        assert "one port" in admin.post("/apps/env-echo/clone", json=two_ports).json()["message"]

        body = clone_body(wanted)
        cloned = admin.post("/apps/env-echo/clone", json=body)
        assert cloned.status_code == 200, cloned.text
        assert cloned.json()["message"] == "App clone installation completed successfully"
        clone = cloned.json()["data"]["name"]
        assert clone.startswith("env-echo") and len(clone) == len("env-echo") + 6

        assert host.apps.get(clone)["displayName"] == "Echo Two"
        assert host.supervisor.context(clone)["port"] == wanted  # the requested entrance port, honoured
        assert app_get(market, "env-echo")["GREETING"] == "hello"
        assert app_get(market, clone) == {"BOLT_APP_NAME": clone, "GREETING": "bonjour", "COLOR": "red",
                                          "PORT": str(host.supervisor.context(clone)["port"])}
        state = market.state(admin, clone)
        assert state["title"] == "Echo Two" and state["cloneOf"] == "env-echo"
        assert state["requestedEntrances"] == [{"name": "web", "port": wanted, "protocol": "http"}]

        same_again = admin.post("/apps/env-echo/clone", json=body)
        assert same_again.status_code == 400 and "running" in same_again.json()["message"]
        no_title = admin.post("/apps/env-echo/clone", json={"source": "market.bolt", "app_name": "env-echo"})
        assert no_title.status_code == 400 and "title" in no_title.json()["message"]

        stopped = admin.post("/apps/stop", json={"appName": "env-echo", "all": True})
        assert stopped.status_code == 200, stopped.text
        assert not host.supervisor.is_active("env-echo") and not host.supervisor.is_active(clone)

        removed = admin.request("DELETE", "/apps/env-echo", json={"sync": True, "all": True})
        assert removed.status_code == 200, removed.text
        assert host.apps.get("env-echo") is None and host.apps.get(clone) is None


class GatedRegistry(RegistryServer):
    """Serves the first bytes of every tarball, then holds the rest until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Event()

    async def _dispatch(self, request: Request) -> Response:
        response = await super()._dispatch(request)
        if "/-/" not in request.path_params["path"] or response.status_code != 200:
            return response
        data = bytes(response.body)

        async def slowly():
            yield data[:512]
            self.started.set()
            await asyncio.to_thread(self.gate.wait, 60)
            yield data[512:]

        return StreamingResponse(slowly(), media_type="application/octet-stream")


def test_cancel_during_download_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = GatedRegistry()
    with registry, market_host(tmp_path) as market:
        try:
            registry.publish_dir(REPO / "env-echo")
            admin = market.admin
            added = admin.post("/settings/market-source",
                               json={"id": "slow", "type": "remote", "base_url": registry.url})
            assert added.status_code == 200, added.text
            started = admin.post("/apps/env-echo/install", json={
                "source": "slow", "app_name": "env-echo", "version": "1.0.0", "sync": True, "timeout": 0,
                "envs": GREETING})
            assert started.status_code == 202, started.text  # the bounded sync wait ran out
            assert started.json()["message"] == "Task is still running, query task status for result"
            install_task = started.json()["data"]["task_id"]
            assert registry.started.wait(30)
            assert market.wait_state(admin, "env-echo", "downloading")["opType"] == "install"

            canceled = admin.request("DELETE", "/apps/env-echo/install", json={"sync": True})
            assert canceled.status_code == 200, canceled.text
            assert canceled.json()["message"] == "App installation cancellation completed successfully"
            assert market.task(install_task)["status"] == "canceled"
            assert market.state(admin, "env-echo")["state"] == "downloadingCanceled"

            host = market.live.host
            data_dir = Path(host.settings.data_dir)
            assert host.apps.get("env-echo") is None
            assert not (data_dir / "apps" / "env-echo").exists()
            assert list((data_dir / "cache").rglob("*.part")) == []
            assert not host.supervisor.is_active("env-echo")

            not_now = admin.request("DELETE", "/apps/env-echo/install", json={"sync": True})
            assert not_now.status_code == 400 and "downloadingCanceled" in not_now.json()["message"]

            registry.gate.set()
            again = admin.post("/apps/env-echo/install", json={
                "source": "slow", "app_name": "env-echo", "version": "1.0.0", "sync": True, "envs": GREETING})
            assert again.status_code == 200, again.text
            assert market.state(admin, "env-echo")["state"] == "running"
        finally:
            registry.gate.set()
