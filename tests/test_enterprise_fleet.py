"""The enterprise store installing on devices through the real device backend: Mosquitto
(with its ACL), a manager host running both the enterprise and the device manager,
and agent hosts, all real servers.  The store's routes drive everything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.fixtures.device.fleet import PASSWORDS, Fleet, agent_config, device_host, running_fleet
from tests.fixtures.device.mosquitto import MOSQUITTO
from tests.fixtures.device.raw_device import RawDevice
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt-get install mosquitto)"),
    pytest.mark.timeout(120),
]
REQUEST_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("store-fleet"), request_timeout_ms=REQUEST_TIMEOUT_MS) as running:
        yield running


@pytest.fixture(scope="module")
def store(fleet: Fleet) -> Iterator[httpx.Client]:
    """The manager's store as its admin (HTTP Basic), with apps installed from the local folder."""
    with httpx.Client(base_url=fleet.manager.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as client:
        for app in ("hello-web", "notes"):
            assert client.post("/api/apps/local", json={"path": app}).status_code == 201
        assert client.post("/api/users", json={"name": "bob", "password": "bob-password-1",
                                                "roles": ["guest"]}).status_code == 201
        yield client


def _asset(store: httpx.Client, name: str) -> str:
    apps = store.get("/api/v1/apps/mobile/list/tenant/carbon.super").json()["apps"]
    return next(a["id"] for a in apps if a["appName"] == name)


def _store_device(store: httpx.Client, client_id: str) -> dict[str, Any]:
    def listed() -> list[dict[str, Any]]:
        devices = store.get("/store/apis/enterprise/get-devices").json()
        return [d for d in devices if d["clientId"] == client_id and d["connection"]["status"] == "CONNECTED"]

    return wait_until(listed, timeout=20, what=f"{client_id} among the store's devices")[0]


def _app_names(fleet: Fleet, client_id: str) -> set[str]:
    agent = fleet.agents[client_id]
    response = httpx.get(agent.url + "/api/apps", auth=agent.admin_auth, timeout=10)
    assert response.status_code == 200, response.text
    return {app["name"] for app in response.json()["body"]}


def test_an_app_installed_from_a_folder_goes_to_a_device_and_comes_off_it(fleet: Fleet, store: httpx.Client) -> None:
    device = _store_device(store, "dev-1")
    assert {"id", "platform", "model", "name", "type"} <= set(device) and device["type"] == "host"
    hello = _asset(store, "hello-web")

    done = store.post(f"/store/apps/devices/{device['id']}/install", data={"asset": hello})
    assert done.status_code == 200, done.text
    operation = done.json()["operation"]
    assert operation["status"] == "RUNNING" and operation["resource"] == "download"
    props = {p["name"]: p["propertyValue"] for p in operation["operationProperties"]}
    package_url = props["kapua.package.download.uri"]
    assert package_url.startswith(fleet.manager.url + "/v1/device-packages/")
    assert props["kapua.package.download.file.hash"].startswith("SHA256:")
    assert httpx.get(package_url, timeout=10).status_code == 401  # only the device has the password
    assert httpx.get(package_url, auth=("x", "y"), timeout=10).status_code == 401

    running = wait_until(
        lambda: [c for c in fleet.live_apps("dev-1") if c["name"] == "hello-web" and c["status"] == "running"],
        timeout=60, what="hello-web running on dev-1",
    )
    assert httpx.get(f"http://127.0.0.1:{running[0]['port']}/health", timeout=10).status_code == 200
    assert fleet.kapua.wait_operation_end(device["id"], operation["id"])["status"] == "COMPLETED"

    removed = store.post("/store/apps/devices/uninstall", data={"asset": hello})
    assert removed.status_code == 200, removed.text
    assert removed.json()["removedFrom"] == [device["id"]] and removed.json()["stillOn"] == []
    wait_until(lambda: "hello-web" not in _app_names(fleet, "dev-1"), timeout=60, what="hello-web gone from dev-1")
    assert all(c["name"] != "hello-web" for c in fleet.live_apps("dev-1"))


def test_device_errors_keep_their_status_in_the_stores_format(fleet: Fleet, store: httpx.Client) -> None:
    notes = _asset(store, "notes")
    with device_host(fleet.base / "dev-3", agent_config(fleet.broker.url, "dev-3", PASSWORDS["dev-3"])):
        dev3 = _store_device(store, "dev-3")
        installed = store.post(f"/store/apps/devices/{dev3['id']}/install", data={"asset": notes})
        assert installed.status_code == 200, installed.text
        assert fleet.kapua.wait_operation_end(dev3["id"], installed.json()["operation"]["id"])["status"] == "COMPLETED"
    fleet.kapua.wait_status("dev-3", "DISCONNECTED")

    offline = store.post(f"/store/apps/devices/{dev3['id']}/install", data={"asset": notes})
    assert offline.status_code == 409, offline.text
    assert offline.json()["error"] is True and "not connected" in offline.json()["message"]
    stays = store.post("/store/apps/devices/uninstall", data={"asset": notes})
    assert stays.status_code == 200, stays.text
    assert stays.json()["stillOn"] == [dev3["id"]] and "not connected" in stays.json()["reasons"][dev3["id"]]

    silent = RawDevice(fleet.broker.port, "silent", PASSWORDS["silent"]).start()
    try:
        device = _store_device(store, "silent")
        late = store.post(f"/store/apps/devices/{device['id']}/install", data={"asset": notes})
    finally:
        silent.stop()
    assert late.status_code == 500, late.text
    assert f"did not answer within the timeout of {REQUEST_TIMEOUT_MS} ms" in late.json()["message"]
    records = fleet.manager.host.state["enterprise"].devices.records("notes")
    assert [r["device"] for r in records] == [dev3["id"]]  # the failed installs stored nothing


def test_a_user_who_may_not_change_devices_gets_none(fleet: Fleet, store: httpx.Client) -> None:
    dev1 = _store_device(store, "dev-1")
    operations = fleet.kapua.get(f"/_/devices/{dev1['id']}/operations").json()["items"]
    with httpx.Client(base_url=fleet.manager.url, auth=("bob", "bob-password-1"), timeout=30) as bob:
        assert bob.get("/store/apis/enterprise/get-devices").json() == []
        refused = bob.post(f"/store/apps/devices/{dev1['id']}/install", data={"asset": _asset(store, "hello-web")})
    assert refused.status_code == 404 and refused.json()["error"] is True
    assert fleet.kapua.get(f"/_/devices/{dev1['id']}/operations").json()["items"] == operations
