"""A fleet past one broker: the manager on a core Mosquitto, a device on an edge Mosquitto
bridged to it (docs/device.md, "A fleet past one broker").  The edge enforces the device ACL;
the core gives the bridge exactly the rights of the devices behind it, so a request for a
device on another edge never crosses and the edge cannot speak for devices it does not hold."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.fixtures.device.fleet import MANAGER_ID, Kapua, agent_config, device_host, manager_config, sha256_of
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO, Mosquitto, device_rules
from tests.fixtures.device.openapi import check_schema
from tests.fixtures.device.packages import pack_sample
from tests.fixtures.device.raw_device import RawDevice
from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.servers import LiveServer

pytestmark = [
    NEEDS_MOSQUITTO,
    pytest.mark.timeout(120),
]

PASSWORDS = {MANAGER_ID: "core-manager", "bridge-edge-1": "bridge-secret", "edge-dev": "edge-dev-secret",
             "edge-raw": "edge-raw-secret", "edge-operator": "edge-operator-secret", "other-dev": "other-dev-secret"}
EDGE_DEVICES = ("edge-dev", "edge-raw")  # the devices behind the bridge: its rights on the core


def edge_bridge(core: Mosquitto, name: str, password: str) -> list[str]:
    """The edge side of the bridge: device traffic out, requests and the manager's status in."""
    return [
        f"connection {name}",
        f"address 127.0.0.1:{core.port}",
        f"remote_clientid {name}",
        f"remote_username {name}",
        f"remote_password {password}",
        "cleansession true",
        "restart_timeout 1 5",
        "topic $EDC/+/+/MQTT/+ out 1",
        "topic $EDC/+/+/DEPLOY-V2/REPLY/+/+ out 1",
        "topic $EDC/+/+/DEPLOY-V2/NOTIFY/+/+ out 1",
        "topic $EDC/+/+/DEPLOY-V2/+/+ in 1",
        "topic bolt/manager/+/status in 1",
    ]


@dataclass
class BridgedFleet:
    core: Mosquitto
    edge: Mosquitto
    manager: LiveServer
    kapua: Kapua
    registry: RegistryServer


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgedFleet]:
    base: Path = tmp_path_factory.mktemp("bridge")
    bridge_rules = [rule for device in EDGE_DEVICES for rule in device_rules(device)]
    core_users = {name: PASSWORDS[name] for name in (MANAGER_ID, "bridge-edge-1", "other-dev")}
    edge_users = {name: PASSWORDS[name] for name in (*EDGE_DEVICES, "edge-operator")}
    with contextlib.ExitStack() as stack:
        core = stack.enter_context(Mosquitto(base / "core", core_users, rules={"bridge-edge-1": bridge_rules}))
        edge = stack.enter_context(Mosquitto(
            base / "edge", edge_users, managers=("edge-operator",),
            extra_config=edge_bridge(core, "bridge-edge-1", PASSWORDS["bridge-edge-1"])))
        registry = stack.enter_context(RegistryServer())
        manager = stack.enter_context(device_host(base / "manager", manager_config(core.url, PASSWORDS[MANAGER_ID]),
                                                  registry=registry.url))
        stack.enter_context(device_host(base / "edge-dev", agent_config(edge.url, "edge-dev", PASSWORDS["edge-dev"])))
        kapua = Kapua(manager.url)
        stack.callback(kapua.close)
        kapua.login("admin", ADMIN_PASSWORD)
        yield BridgedFleet(core, edge, manager, kapua, registry)


def test_a_device_behind_a_bridge_is_managed_like_any_other(bridged: BridgedFleet) -> None:
    device = bridged.kapua.wait_connected("edge-dev", timeout=30)
    data, manifest = pack_sample("notes")
    published = bridged.registry.publish_tarball(manifest["name"], manifest["version"], data, manifest)
    body = {"uri": published["dist"]["tarball"], "name": manifest["name"], "version": manifest["version"],
            "fileHash": sha256_of(data), "install": False}
    response = bridged.kapua.post(f"/_/devices/{device['id']}/packages/_download", json=body)
    assert response.status_code == 200, response.text
    done = bridged.kapua.wait_operation_end(device["id"], response.json()["id"])
    assert done["status"] == "COMPLETED", done["log"]
    listed = bridged.kapua.get(f"/_/devices/{device['id']}/packages")
    assert listed.status_code == 200, listed.text
    check_schema(listed.json(), "devicePackages")


def test_the_will_of_a_device_behind_a_bridge_reaches_the_manager(bridged: BridgedFleet) -> None:
    raw = RawDevice(bridged.edge.port, "edge-raw", PASSWORDS["edge-raw"]).start()
    try:
        bridged.kapua.wait_connected("edge-raw", timeout=30)
    finally:
        raw.vanish()
    device = bridged.kapua.wait_status("edge-raw", "DISCONNECTED", timeout=30)
    assert device["lastEvent"]["resource"] == "LWT"


def test_the_bridge_carries_only_the_traffic_of_its_own_devices(bridged: BridgedFleet) -> None:
    """Requests for a device elsewhere never reach the edge, and the edge cannot announce a
    device it does not hold (the core's ACL for the bridge user), while its own still pass."""
    other = RawDevice(bridged.core.port, "other-dev", PASSWORDS["other-dev"]).start()
    watcher = RawDevice(bridged.edge.port, "edge-operator", PASSWORDS["edge-operator"]).start(announce=False)
    try:
        watcher.subscribe("$EDC/#")
        other_id = bridged.kapua.wait_connected("other-dev", timeout=30)["id"]
        edge_id = bridged.kapua.wait_connected("edge-dev", timeout=30)["id"]
        assert bridged.kapua.get(f"/_/devices/{other_id}/packages", params={"timeout": 500}).status_code == 500
        assert other.requests("packages"), "the request reached other-dev on the core"
        assert bridged.kapua.get(f"/_/devices/{edge_id}/packages").status_code == 200
        # the edge saw edge-dev's request, which crossed the bridge after other-dev's: that one never came
        assert watcher.requests("packages") and all("other-dev" not in topic for topic in watcher.received)

        watcher.publish("$EDC/kapua-sys/intruder/MQTT/BIRTH", {"session": "x"})  # dropped by the core's ACL
        watcher.publish("$EDC/kapua-sys/edge-raw/MQTT/BIRTH", {"session": "y"})  # the control: it passes
        wait_until(lambda: bridged.kapua.device_by_client("edge-raw")["connection"]["status"] == "CONNECTED",
                   timeout=30, what="the control BIRTH to cross the bridge")
        assert bridged.kapua.device_by_client("intruder") is None
    finally:
        watcher.stop()
        other.stop()
