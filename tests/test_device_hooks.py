"""The manager with its embedded broker (no Mosquitto needed), and the fleet hooks
(``list_devices``, ``install_on_device``, ``uninstall_from_device``) that other backends use to reach devices."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from bolt_device import DevicePlugin
from bolt_device.config import DeviceConfig, parse_broker_url

from bolt_host.plugins import call_first
from bolt_host.testing import running_host
from tests.fixtures.device.fleet import agent_config, device_host
from tests.fixtures.device.packages import pack_sample
from tests.helpers import async_wait_until, free_port
from tests.registry_server import RegistryServer
from tests.servers import LiveServer

pytestmark = pytest.mark.timeout(90)


def _end_apps(edge: LiveServer) -> None:
    """End, by pid, the apps the agent started (its host would stop them too)."""
    response = httpx.get(edge.url + "/api/apps/@live", auth=edge.admin_auth, timeout=10)
    for context in response.json()["body"]:
        if context.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(context["pid"], signal.SIGTERM)


async def test_embedded_broker_and_the_fleet_hooks(tmp_path: Path) -> None:
    port = free_port()
    manager_config = DeviceConfig(mode="manager", client_id="bolt-manager", manager_id="bolt-manager",
                                  embedded_broker_port=port)
    agent = agent_config(f"mqtt://127.0.0.1:{port}", "edge-1", "")
    agent = replace(agent, broker=parse_broker_url(f"mqtt://127.0.0.1:{port}"), topic_prefix="EDC")
    with RegistryServer() as registry:
        data, manifest = pack_sample("notes")
        registry.publish_tarball(manifest["name"], manifest["version"], data, manifest)
        async with running_host(tmp_path / "manager", plugins=[DevicePlugin(manager_config)],
                                disable_plugins=("device",), registry=registry.url) as bolt:
            host = bolt.host
            assert host.state["device"].broker is not None
            admin = {"user": "admin", "isAdmin": True}
            with device_host(tmp_path / "edge-1", agent) as edge:

                async def edge_connected() -> list:
                    found = await call_first(host.pm.hook.list_devices, host=host, actor=admin)
                    return [d for d in found if d["clientId"] == "edge-1" and d["connection"]["status"] == "CONNECTED"]

                device = (await async_wait_until(edge_connected, timeout=20, what="edge-1 connected"))[0]
                assert device["name"] == "Device edge-1" and device["type"] == "host"
                assert await call_first(host.pm.hook.list_devices, host=host, actor={"user": "nobody"}) == []

                package = {"name": "notes", "package": "notes", "version": "1.0.0", "source": {"type": "registry"}}
                operation = await call_first(
                    host.pm.hook.install_on_device, host=host, device_id=device["id"], package=package, actor=admin
                )
                assert operation["status"] == "RUNNING" and operation["resource"] == "download"
                props = {p["name"]: p["propertyValue"] for p in operation["operationProperties"]}
                assert props["kapua.package.download.file.hash"].startswith("SHA512:")
                operations = host.state["device"].operations

                async def ended() -> dict | None:
                    found = operations.get(device["scopeId"], device["id"], operation["id"])
                    return found if found["status"] != "RUNNING" else None

                try:
                    done = await async_wait_until(ended, timeout=30, what="the install to end")
                    assert done["status"] == "COMPLETED", done["log"]
                    operation = await call_first(
                        host.pm.hook.uninstall_from_device, host=host, device_id=device["id"], package=package,
                        actor=admin,
                    )
                    assert operation["resource"] == "uninstall"
                    done = await async_wait_until(ended, timeout=30, what="the uninstall to end")
                    assert done["status"] == "COMPLETED", done["log"]
                finally:
                    _end_apps(edge)
