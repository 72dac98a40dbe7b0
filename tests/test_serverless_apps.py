"""Server-less apps (issue 13): nothing to run, so start answers Bolt's bare context, their
public files are served, and the store backends count them as installed and running."""

from __future__ import annotations

from pathlib import Path

import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import running_host
from tests.helpers import private_port_range
from tests.registry_server import RegistryServer
from tests.robot_support import robot_host
from tests.test_market_support import market_host

pytestmark = pytest.mark.timeout(120)


async def test_start_answers_the_bare_context_and_public_files_are_served(tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", port_range=private_port_range()) as bolt:
        installed = await bolt.admin.post("/api/apps/local", json={"path": "static-docs"})
        assert installed.status_code == 201, installed.text
        app = installed.json()["body"]
        assert app["command"] is None and app["server"] is False
        assert app["startCommand"].startswith("nothing")

        started = await bolt.admin.post("/api/apps/start", json={"name": "static-docs"})
        assert started.status_code == 200, started.text
        context = started.json()["body"]
        assert set(context) == {"name", "path", "app"}
        assert (context["name"], context["path"]) == ("static-docs", app["path"])
        live = (await bolt.admin.get("/api/apps/@live")).json()["body"]
        assert [(c["name"], c["status"], c["pid"]) for c in live] == [("static-docs", "running", None)]

        page = await bolt.client.get("/public/static-docs/index.html")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert (await bolt.admin.post("/api/apps/stop", json={"name": "static-docs"})).status_code == 200
        assert (await bolt.admin.get("/api/apps/@live")).json()["body"] == []


def test_the_market_installs_it_as_running(tmp_path: Path) -> None:
    with RegistryServer() as registry, market_host(tmp_path) as market:
        registry.publish_dir(BUNDLED_LOCAL_REPO / "static-docs")
        source = {"id": "reg", "name": "Test registry", "type": "remote", "base_url": registry.url}
        assert market.admin.post("/settings/market-source", json=source).status_code == 200
        body = {"source": "reg", "app_name": "static-docs", "version": "1.0.0", "sync": True}
        answer = market.admin.post("/apps/static-docs/install", json=body)
        assert answer.status_code == 200, answer.text
        state = market.wait_state(market.admin, "static-docs", "running")
        assert state["state"] == "running"
        assert market.live.host.supervisor.is_active("static-docs")


def test_the_robot_installs_it_and_it_opens(tmp_path: Path) -> None:
    with RegistryServer() as registry, robot_host(tmp_path / "data", registry) as robot:
        registry.publish_dir(BUNDLED_LOCAL_REPO / "static-docs")
        client = robot.client
        client.refresh_app_store()
        client.wait_status("static-docs", "not_installed")
        download = client.app_store_download_packages(["static-docs"]).json()["static-docs"]
        client.wait_task("download", download["task_id"])
        installing = client.app_store_install_packages(["static-docs"]).json()["static-docs"]
        assert client.wait_task("install", installing["task_id"])["status"] == "succeeded"
        assert client.wait_status("static-docs", "up_to_date")["current_version"] == "1.0.0"
        started = robot.bolt("POST", "/api/apps/start", json={"name": "static-docs"})
        assert started.status_code == 200 and set(started.json()["body"]) == {"name", "path", "app"}
