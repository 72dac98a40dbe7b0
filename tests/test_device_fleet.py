"""The device backend end to end: Mosquitto (password auth), one manager host and
agent hosts as real uvicorn servers, apps installed from a real npm-protocol registry.

Every response of the Kapua API is validated against Kapua's own OpenAPI schemas.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import psutil
import pytest

from tests.fixtures.device.fleet import Fleet, sha256_of
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO
from tests.fixtures.device.openapi import check_error, check_schema
from tests.fixtures.device.packages import pack_sample
from tests.helpers import wait_until

pytestmark = [
    NEEDS_MOSQUITTO,
    pytest.mark.timeout(120),
]

def _download(fleet: Fleet, device_id: str, body: dict[str, Any], timeout: int | None = None) -> httpx.Response:
    params = {"timeout": timeout} if timeout else None
    return fleet.kapua.post(f"/_/devices/{device_id}/packages/_download", json=body, params=params)


def _hello_request(fleet: Fleet, **changes: Any) -> dict[str, Any]:
    body = {
        "uri": fleet.hello["dist"]["tarball"],
        "name": fleet.hello["name"],
        "version": fleet.hello["version"],
        "fileHash": sha256_of(fleet.hello_bytes),
        "install": True,
    }
    body.update(changes)
    return body


# registration and listing --------------------------------------------------------
def test_agents_register_themselves_and_are_listed_as_connected(fleet: Fleet) -> None:
    response = fleet.kapua.get("/_/devices")
    assert response.status_code == 200
    listing = check_schema(response.json(), "deviceListResult")
    by_client = {d["clientId"]: d for d in listing["items"]}
    assert {"dev-1", "dev-2"} <= set(by_client)
    for client_id in ("dev-1", "dev-2"):
        device = by_client[client_id]
        assert device["scopeId"] == fleet.kapua.scope == "AQ"
        assert device["connection"]["status"] == "CONNECTED"
        assert device["displayName"] == f"Device {client_id}"
        assert device["lastEvent"]["resource"] == "BIRTH"
        assert device["lastSeenOn"]
        single = fleet.kapua.get(f"/AQ/devices/{device['id']}")
        assert check_schema(single.json(), "device")["clientId"] == client_id


def test_a_device_can_be_registered_before_it_ever_connects(fleet: Fleet) -> None:
    response = fleet.kapua.post("/_/devices", json={"clientId": "dev-later", "displayName": "Later"})
    assert response.status_code == 201, response.text
    device = check_schema(response.json(), "device")
    assert device["connection"]["status"] == "DISCONNECTED"
    again = fleet.kapua.post("/_/devices", json={"clientId": "dev-later"})
    assert again.status_code == 400
    check_error(again.json(), "illegalArgument")
    missing = fleet.kapua.post("/_/devices", json={"displayName": "no client id"})
    assert missing.status_code == 400 and missing.json()["kapuaErrorCode"] == "ILLEGAL_NULL_ARGUMENT"


def test_packages_are_listed_on_each_device(fleet: Fleet) -> None:
    for client_id in ("dev-1", "dev-2"):
        device_id = fleet.device_id(client_id)
        response = fleet.kapua.get(f"/_/devices/{device_id}/packages", params={"timeout": 10000})
        assert response.status_code == 200, response.text
        packages = check_schema(response.json(), "devicePackages")
        assert packages["type"] == "devicePackages"
        assert isinstance(packages["devicePackage"], list)


# download, install, run, uninstall --------------------------------------------------
def test_download_installs_and_starts_the_app_then_uninstall_removes_it(fleet: Fleet) -> None:
    kapua = fleet.kapua
    dev1, dev2 = fleet.device_id("dev-1"), fleet.device_id("dev-2")
    response = _download(fleet, dev1, _hello_request(fleet))
    assert response.status_code == 200, response.text
    operation = check_schema(response.json(), "deviceOperation")
    assert operation["status"] == "RUNNING" and operation["resource"] == "download"
    assert operation["appId"] == "DEPLOY" and operation["action"] == "EXECUTE"

    done = kapua.wait_operation_end(dev1, operation["id"])
    assert done["status"] == "COMPLETED", done["log"]
    assert done["endedOn"]
    check_schema(done, "deviceOperation")
    notes = kapua.get(f"/_/devices/{dev1}/operations/{operation['id']}/notifications").json()
    check_schema(notes, "deviceNotificationListResult")
    steps = [(n["resource"], n["status"]) for n in notes["items"]]
    assert steps[0] == ("download", "RUNNING")
    assert ("download", "COMPLETED") in steps and steps[-1] == ("install", "COMPLETED")

    running = wait_until(
        lambda: [c for c in fleet.live_apps("dev-1") if c["name"] == "hello-web" and c["status"] == "running"],
        timeout=30, what="hello-web running on dev-1",
    )
    page = httpx.get(f"http://127.0.0.1:{running[0]['port']}/health", timeout=10)
    assert page.status_code == 200
    listed = check_schema(kapua.get(f"/_/devices/{dev1}/packages").json(), "devicePackages")
    assert {"name": "hello-web", "version": "1.0.0"}.items() <= listed["devicePackage"][0].items()
    other = kapua.get(f"/_/devices/{dev2}/packages").json()
    assert all(p["name"] != "hello-web" for p in other["devicePackage"])

    response = kapua.post(f"/_/devices/{dev1}/packages/_uninstall", json={"name": "hello-web", "version": "1.0.0"})
    assert response.status_code == 200, response.text
    removal = check_schema(response.json(), "deviceOperation")
    assert removal["resource"] == "uninstall"
    assert kapua.wait_operation_end(dev1, removal["id"])["status"] == "COMPLETED"
    pid = running[0]["pid"]
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               timeout=20, what="the app process to end")
    assert all(c["name"] != "hello-web" for c in fleet.live_apps("dev-1"))
    assert kapua.get(f"/_/devices/{dev1}/packages").json()["devicePackage"] == []

    listing = kapua.get(f"/_/devices/{dev1}/operations").json()
    check_schema(listing, "deviceOperationListResult")
    assert {o["id"] for o in listing["items"]} >= {operation["id"], removal["id"]}


def test_download_without_install_completes_on_the_download_step(fleet: Fleet) -> None:
    dev2 = fleet.device_id("dev-2")
    response = _download(fleet, dev2, _hello_request(fleet, install=False))
    assert response.status_code == 200, response.text
    done = fleet.kapua.wait_operation_end(dev2, response.json()["id"])
    assert done["status"] == "COMPLETED"
    assert fleet.kapua.get(f"/_/devices/{dev2}/packages").json()["devicePackage"] == []


def test_a_hash_mismatch_fails_the_operation_with_the_reason(fleet: Fleet) -> None:
    dev2 = fleet.device_id("dev-2")
    wrong = "SHA256:" + "0" * 64
    response = _download(fleet, dev2, _hello_request(fleet, fileHash=wrong))
    assert response.status_code == 200, response.text
    done = fleet.kapua.wait_operation_end(dev2, response.json()["id"])
    assert done["status"] == "FAILED"
    assert "hash mismatch" in done["log"]
    notes = fleet.kapua.get(f"/_/devices/{dev2}/operations/{done['id']}/notifications").json()
    failed = [n for n in notes["items"] if n["status"] == "FAILED"]
    assert failed and failed[0]["resource"] == "download" and "hash mismatch" in failed[0]["message"]
    assert all(c["name"] != "hello-web" for c in fleet.live_apps("dev-2"))


def test_a_package_that_names_itself_otherwise_fails_to_install(fleet: Fleet) -> None:
    dev2 = fleet.device_id("dev-2")
    response = _download(fleet, dev2, _hello_request(fleet, name="notes"))
    done = fleet.kapua.wait_operation_end(dev2, response.json()["id"])
    assert done["status"] == "FAILED" and "names itself" in done["log"]


# arguments and errors --------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"uri": None}, "packageDownloadRequest.uri"),
        ({"uri": "ftp://example.org/x.tgz"}, "packageDownloadRequest.uri"),
        ({"uri": "http://x/" + "a" * 2100}, "packageDownloadRequest.uri"),
        ({"name": ""}, "packageDownloadRequest.name"),
        ({"version": None}, "packageDownloadRequest.version"),
        ({"fileHash": "MD5:0d04154164145cd6b2167fdd457ed28f"}, "packageDownloadRequest.fileHash"),
        ({"fileHash": "SHA256:abc"}, "packageDownloadRequest.fileHash"),
        ({"install": "yes"}, "packageDownloadRequest.install"),
        ({"rebootDelay": -1}, "packageDownloadRequest.rebootDelay"),
    ],
)
def test_invalid_download_arguments_are_400(fleet: Fleet, changes: dict[str, Any], argument: str) -> None:
    dev1 = fleet.device_id("dev-1")
    before = len(fleet.kapua.get(f"/_/devices/{dev1}/operations").json()["items"])
    response = _download(fleet, dev1, _hello_request(fleet, **changes))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["argumentName"] == argument and body["httpErrorCode"] == 400
    check_error(body, "illegalArgument" if body["kapuaErrorCode"] == "ILLEGAL_ARGUMENT" else "illegalNullArgument")
    if changes.get("fileHash", "").startswith("MD5"):
        assert "too weak" in body["message"]
    assert len(fleet.kapua.get(f"/_/devices/{dev1}/operations").json()["items"]) == before


def test_bad_timeouts_and_bodies_are_400(fleet: Fleet) -> None:
    dev1 = fleet.device_id("dev-1")
    assert fleet.kapua.get(f"/_/devices/{dev1}/packages", params={"timeout": "soon"}).status_code == 400
    assert fleet.kapua.get(f"/_/devices/{dev1}/packages", params={"timeout": -1}).status_code == 400
    response = fleet.kapua.post(f"/_/devices/{dev1}/packages/_download", content=b"not json")
    assert response.status_code == 400
    check_error(response.json(), "illegalArgument")


def test_an_unknown_device_is_404(fleet: Fleet) -> None:
    for path in ("", "/packages", "/operations"):
        response = fleet.kapua.get(f"/_/devices/NoSuchDevice{path}")
        assert response.status_code == 404, path
        body = check_error(response.json(), "entityNotFound")
        assert body["kapuaErrorCode"] == "ENTITY_NOT_FOUND" and body["entityId"] == "NoSuchDevice"
    response = _download(fleet, "NoSuchDevice", _hello_request(fleet))
    assert response.status_code == 404


def test_credentials_are_used_for_the_download_but_never_echoed(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dev2 = fleet.device_id("dev-2")
    secret = "top-secret-pw"
    data = pack_sample("notes")[0]
    path = fleet.files.add("notes.tgz", data, auth=("fetcher", secret))
    body = {"uri": fleet.files_url + path, "name": "notes", "version": "1.0.0", "fileHash": sha256_of(data),
            "install": False, "username": "fetcher", "password": secret}

    wrong = _download(fleet, dev2, {**body, "password": "not-the-password"})
    assert wrong.status_code == 200, wrong.text
    refused = fleet.kapua.wait_operation_end(dev2, wrong.json()["id"])
    assert refused["status"] == "FAILED" and "HTTP 401" in refused["log"]  # the server checks them

    response = _download(fleet, dev2, body)
    assert response.status_code == 200, response.text
    assert secret not in response.text and "fetcher" not in response.text
    done = fleet.kapua.wait_operation_end(dev2, response.json()["id"])
    assert done["status"] == "COMPLETED", done["log"]

    operations = fleet.kapua.get(f"/_/devices/{dev2}/operations").json()["items"]
    shown = [fleet.kapua.get(f"/_/devices/{dev2}/operations").text]
    shown += [fleet.kapua.get(f"/_/devices/{dev2}/operations/{o['id']}/notifications").text for o in operations]
    shown.append(json.dumps(fleet.agents["dev-2"].host.tasks.list()))  # the device's task records
    assert "HTTP 401" in caplog.text  # the capture sees the device's log lines (its failed task)
    shown.append(caplog.text)  # every log line of the hosts, the manager's and the devices'
    for text in shown:
        assert secret not in text
    for host in ("dev-2", "manager"):  # db.json, runtime.json, task and app logs, caches
        for file in (fleet.base / host).rglob("*"):
            if file.is_file():
                assert secret.encode() not in file.read_bytes(), file
