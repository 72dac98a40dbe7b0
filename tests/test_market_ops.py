"""Market operations through a real uvicorn server: install -> open -> stop -> resume -> upgrade -> uninstall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.registry_server import RegistryServer
from tests.test_market_support import REPO, Market, app_get, market_host, with_version

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def registry(tmp_path: Path):
    with RegistryServer() as server:
        server.publish_dir(REPO / "env-echo")
        server.publish_dir(with_version(REPO / "env-echo", "1.1.0", tmp_path / "env-echo-1.1.0"))
        yield server


@pytest.fixture
def market(tmp_path: Path, registry: RegistryServer):
    with market_host(tmp_path) as running:
        answer = running.admin.post("/settings/market-source", json={
            "id": "reg", "name": "Test registry", "type": "remote", "base_url": registry.url,
        })
        assert answer.status_code == 200, answer.text
        yield running


def _install_body(version: str = "1.0.0", sync: bool = True, **extra):
    return {"source": "reg", "app_name": "env-echo", "version": version, "sync": sync,
            "envs": [{"envName": "GREETING", "value": "hello"}], **extra}


def _run_cycle(market: Market, sync: bool) -> None:
    admin = market.admin

    def finish(answer) -> None:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True and body["data"]["task_id"]
        if not sync:
            assert market.wait_task(body["data"]["task_id"])["status"] == "succeeded"

    finish(admin.post("/apps/env-echo/install", json=_install_body(sync=sync)))
    state = market.wait_state(admin, "env-echo", "running")
    assert state["rawAppName"] == "env-echo" and state["source"] == "reg"
    assert app_get(market, "env-echo") == {
        "BOLT_APP_NAME": "env-echo", "GREETING": "hello", "COLOR": "blue",
        "PORT": str(market.live.host.supervisor.context("env-echo")["port"]),
    }

    opened = admin.post("/apps/open", json={"id": "env-echo"})
    assert opened.status_code == 200, opened.text
    assert opened.json()["data"]["path"] == "/x/env-echo/"

    stopped = admin.post("/apps/stop", json={"appName": "env-echo"})
    assert stopped.status_code == 200, stopped.text
    assert market.state(admin, "env-echo")["state"] == "stopped"
    assert not market.live.host.supervisor.is_active("env-echo")
    stopped_again = admin.post("/apps/stop", json={"appName": "env-echo"})
    assert stopped_again.status_code == 200  # stopping a stopped app is idempotent

    resumed = admin.post("/apps/resume", json={"appName": "env-echo"})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["data"]["appName"] == "env-echo"
    assert market.state(admin, "env-echo")["state"] == "running"

    again = admin.post("/apps/env-echo/install", json=_install_body())
    assert again.status_code == 400 and "running" in again.json()["message"]

    finish(admin.put("/apps/env-echo/upgrade", json={"source": "reg", "app_name": "env-echo", "version": "1.1.0",
                                                      "sync": sync}))
    state = market.wait_state(admin, "env-echo", "running")
    assert market.live.host.apps.get("env-echo")["version"] == "1.1.0"
    assert app_get(market, "env-echo")["GREETING"] == "hello"  # envs survive the upgrade

    finish(admin.request("DELETE", "/apps/env-echo", json={"sync": sync}))
    market.wait_state(admin, "env-echo", "uninstalled")
    assert market.live.host.apps.get("env-echo") is None
    assert not market.live.host.supervisor.is_active("env-echo")

    logs = admin.get("/logs", params={"app": "env-echo"}).json()["data"]
    kinds = {(r["type"], r["status"]) for r in logs["records"]}
    assert {("install", "succeeded"), ("upgrade", "succeeded"), ("uninstall", "succeeded"), ("stop", "succeeded"),
            ("resume", "succeeded")} <= kinds


def test_full_cycle_sync(market: Market) -> None:
    _run_cycle(market, sync=True)


def test_full_cycle_async(market: Market) -> None:
    _run_cycle(market, sync=False)


def _publish_broken(market: Market, registry: RegistryServer, tmp_path: Path, version: str) -> None:
    """Publish an env-echo ``version`` that the registry lists but the host refuses to install (bad bolt.restart)."""
    folder = with_version(REPO / "env-echo", version, tmp_path / f"env-echo-{version}-broken")
    manifest = json.loads((folder / "package.json").read_text())
    manifest["bolt"]["restart"] = "sometimes"
    (folder / "package.json").write_text(json.dumps(manifest))
    registry.publish_dir(folder, tag=None)
    assert market.admin.post("/reload").status_code == 200  # the source lists what was published since


def test_failed_downloads_and_installs_show_their_failure_state(
    tmp_path: Path, market: Market, registry: RegistryServer
) -> None:
    admin = market.admin
    _publish_broken(market, registry, tmp_path, "1.2.0")
    registry.set_response("/env-echo/-/env-echo-1.1.0.tgz", 500, b"registry on fire")

    download = admin.post("/apps/env-echo/install", json=_install_body("1.1.0"))
    assert download.status_code == 500 and download.json()["message"].startswith("Installation failed:")
    assert market.state(admin, "env-echo")["state"] == "downloadFailed"

    install = admin.post("/apps/env-echo/install", json=_install_body("1.2.0"))
    assert install.status_code == 500, install.text
    failed = market.state(admin, "env-echo")
    assert failed["state"] == "installFailed" and "bolt.restart" in failed["reason"]
    assert market.live.host.apps.get("env-echo") is None  # nothing of it is on the host, and it still says so

    assert admin.post("/apps/env-echo/install", json=_install_body("1.0.0")).status_code == 200
    assert market.state(admin, "env-echo")["state"] == "running"
    assert admin.request("DELETE", "/apps/env-echo", json={"sync": True}).status_code == 200


def test_an_upgrades_envs_are_kept_only_when_it_succeeds(
    tmp_path: Path, market: Market, registry: RegistryServer
) -> None:
    admin = market.admin
    _publish_broken(market, registry, tmp_path, "1.2.0")
    assert admin.post("/apps/env-echo/install", json=_install_body("1.0.0")).status_code == 200

    def upgrade(version: str, greeting: str | None = None) -> int:
        body: dict = {"source": "reg", "app_name": "env-echo", "version": version, "sync": True}
        if greeting is not None:
            body["envs"] = [{"envName": "GREETING", "value": greeting}]
        return admin.put("/apps/env-echo/upgrade", json=body).status_code

    assert upgrade("1.1.0", "bonjour") == 200
    assert app_get(market, "env-echo")["GREETING"] == "bonjour"  # the restarted new version has the new envs

    assert upgrade("1.2.0", "never-applied") == 500
    assert market.state(admin, "env-echo")["state"] == "upgradeFailed"
    assert upgrade("1.0.0") == 200  # restarts the app: with the envs of the last upgrade that worked
    assert app_get(market, "env-echo")["GREETING"] == "bonjour"
    assert market.live.host.apps.get("env-echo")["version"] == "1.0.0"
    assert admin.request("DELETE", "/apps/env-echo", json={"sync": True}).status_code == 200
