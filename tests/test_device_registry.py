"""Kapua's tracking and registry routes on the manager: ``_query`` / ``_count`` of devices,
operations and notifications, single notifications, deletes, device updates, the device
inventory, Kapua's paging (``limit=0``, ``askTotalCount``), and Kapua's error body for every
unknown path or method under /v1.  Real Mosquitto, manager and agents as in test_device_fleet;
every answer is validated against Kapua's OpenAPI."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.device.fleet import Fleet, Kapua, sha256_of
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO
from tests.fixtures.device.openapi import check_error, check_schema

pytestmark = [
    NEEDS_MOSQUITTO,
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def installed(fleet: Fleet) -> dict[str, Any]:
    """hello-web installed on dev-1 by a COMPLETED download operation, and one without install."""
    dev1 = fleet.device_id("dev-1")
    body = {"uri": fleet.hello["dist"]["tarball"], "name": fleet.hello["name"], "version": fleet.hello["version"],
            "fileHash": sha256_of(fleet.hello_bytes), "install": True}
    operations = []
    for changes in ({}, {"install": False}):
        response = fleet.kapua.post(f"/_/devices/{dev1}/packages/_download", json={**body, **changes})
        assert response.status_code == 200, response.text
        done = fleet.kapua.wait_operation_end(dev1, response.json()["id"])
        assert done["status"] == "COMPLETED", done["log"]
        operations.append(done)
    return {"device": dev1, "full": operations[0], "download_only": operations[1]}


def _ops(fleet: Fleet, device: str) -> str:
    return f"/_/devices/{device}/operations"


def test_operations_query_filters_sorts_and_pages(fleet: Fleet, installed: dict[str, Any]) -> None:
    kapua, path = fleet.kapua, _ops(fleet, installed["device"])
    everything = check_schema(kapua.post(path + "/_query", json={}).json(), "deviceOperationListResult")
    assert {o["id"] for o in everything["items"]} >= {installed["full"]["id"], installed["download_only"]["id"]}
    assert "totalCount" not in everything  # only when asked, as in Kapua

    by_property = {"type": "attributePredicate", "attributeName": "status", "attributeValue": "COMPLETED",
                   "operator": "EQUAL"}
    newest_first = {"type": "fieldSortCriteria", "attributeName": "createdOn", "sortOrder": "DESCENDING"}
    response = kapua.post(path + "/_query", json={"predicate": by_property, "sortCriteria": newest_first,
                                                  "askTotalCount": True, "limit": 1})
    assert response.status_code == 200, response.text
    page = check_schema(response.json(), "deviceOperationListResult")
    assert page["size"] == 1 and page["limitExceeded"] is True and page["totalCount"] >= 2
    assert page["items"][0]["id"] == installed["download_only"]["id"]  # the later one

    none_of_them = {"type": "andPredicate", "predicates": [
        by_property, {"type": "attributePredicate", "attributeName": "status", "attributeValue": "FAILED"}]}
    assert kapua.post(path + "/_query", json={"predicate": none_of_them}).json()["items"] == []
    counted = check_schema(kapua.post(path + "/_count", json={"predicate": by_property}).json(), "kapuaCountResult")
    assert counted["count"] == page["totalCount"]

    for bad in ({"limit": -1}, {"limit": "ten"}, {"askTotalCount": "yes"},
                {"predicate": {"type": "attributePredicate", "attributeName": "password", "attributeValue": "x"}},
                {"predicate": {"attributeName": "status", "operator": "SOUNDS_LIKE"}},
                {"sortCriteria": {"attributeName": "status", "sortOrder": "UP"}}):
        response = kapua.post(path + "/_query", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert check_error(response.json(), "illegalArgument")["kapuaErrorCode"] == "ILLEGAL_ARGUMENT"


def test_limit_zero_answers_no_items_but_says_more_exist(fleet: Fleet, installed: dict[str, Any]) -> None:
    path = _ops(fleet, installed["device"])
    for response in (fleet.kapua.get(path, params={"limit": 0, "askTotalCount": "true"}),
                     fleet.kapua.post(path + "/_query", json={"limit": 0, "askTotalCount": True})):
        assert response.status_code == 200, response.text
        body = check_schema(response.json(), "deviceOperationListResult")
        assert body["items"] == [] and body["size"] == 0 and body["limitExceeded"] is True and body["totalCount"] >= 2


def test_notifications_can_be_read_queried_counted_and_deleted(fleet: Fleet, installed: dict[str, Any]) -> None:
    kapua = fleet.kapua
    path = f"{_ops(fleet, installed['device'])}/{installed['full']['id']}/notifications"
    listed = check_schema(kapua.get(path).json(), "deviceNotificationListResult")["items"]
    install_steps = [n for n in listed if n["resource"] == "install"]
    assert install_steps and len(install_steps) < len(listed)
    one = check_schema(kapua.get(f"{path}/{install_steps[-1]['id']}").json(), "deviceNotification")
    assert one == install_steps[-1]

    by_resource = {"type": "attributePredicate", "attributeName": "resource", "attributeValue": "install"}
    queried = kapua.post(path + "/_query", json={"predicate": by_resource})
    assert queried.status_code == 200, queried.text
    assert check_schema(queried.json(), "deviceNotificationListResult")["items"] == install_steps
    assert kapua.post(path + "/_count", json={"predicate": by_resource}).json()["count"] == len(install_steps)
    at_least_half = {"attributeName": "progress", "attributeValue": 50, "operator": "GREATER_THAN_OR_EQUAL"}
    assert all(n["progress"] >= 50 for n in kapua.post(path + "/_query", json={"predicate": at_least_half}).json()
               ["items"])

    assert kapua.http.delete(f"{path}/{one['id']}").status_code == 204
    gone = kapua.get(f"{path}/{one['id']}")
    assert gone.status_code == 404 and check_error(gone.json(), "entityNotFound")["entityId"] == one["id"]
    assert kapua.post(path + "/_count", json={}).json()["count"] == len(listed) - 1


def test_an_operation_can_be_deleted(fleet: Fleet, installed: dict[str, Any]) -> None:
    kapua, path = fleet.kapua, _ops(fleet, installed["device"])
    target = installed["download_only"]["id"]
    assert kapua.http.delete(f"{path}/{target}").status_code == 204
    assert kapua.get(f"{path}/{target}").status_code == 404
    assert kapua.get(f"{path}/{target}/notifications").status_code == 404
    assert target not in {o["id"] for o in kapua.get(path).json()["items"]}
    assert kapua.http.delete(f"{path}/{target}").status_code == 404


def test_the_inventory_lists_the_deployment_packages_and_their_state(fleet: Fleet, installed: dict[str, Any]) -> None:
    response = fleet.kapua.get(f"/_/devices/{installed['device']}/inventory/packages")
    assert response.status_code == 200, response.text
    inventory = check_schema(response.json(), "deviceInventoryDeploymentPackages")
    assert inventory["type"] == "deviceInventoryDeploymentPackages"
    hello = next(p for p in inventory["deploymentPackages"] if p["name"] == "hello-web")
    assert hello["version"] == "1.0.0"
    for bundle in hello["packageBundles"]:
        check_schema(bundle, "deviceInventoryBundle")
    assert [b["status"] for b in hello["packageBundles"]] == ["ACTIVE"]  # the app runs
    dev2 = check_schema(fleet.kapua.get(f"/_/devices/{fleet.device_id('dev-2')}/inventory/packages").json(),
                        "deviceInventoryDeploymentPackages")
    assert all(p["name"] != "hello-web" for p in dev2["deploymentPackages"])


def test_devices_query_count_update_and_delete(fleet: Fleet) -> None:
    kapua = fleet.kapua
    connected = {"type": "attributePredicate", "attributeName": "connection.status", "attributeValue": "CONNECTED"}
    found = check_schema(kapua.post("/_/devices/_query", json={"predicate": connected}).json(), "deviceListResult")
    assert {"dev-1", "dev-2"} <= {d["clientId"] for d in found["items"]}
    by_client = {"type": "orPredicate", "predicates": [
        {"attributeName": "clientId", "attributeValue": "dev-2"},
        {"attributeName": "clientId", "attributeValue": "dev-", "operator": "STARTS_WITH"}]}
    descending = {"attributeName": "clientId", "sortOrder": "DESCENDING"}
    ordered = kapua.post("/_/devices/_query", json={"predicate": by_client, "sortCriteria": descending}).json()
    assert [d["clientId"] for d in ordered["items"]][:2] == ["dev-2", "dev-1"]
    assert kapua.post("/_/devices/_count", json={"predicate": connected}).json()["count"] == found["size"]

    created = kapua.post("/_/devices", json={"clientId": "spare-1"}).json()
    path = f"/_/devices/{created['id']}"
    response = kapua.http.put(path, json={**created, "displayName": "The spare", "status": "DISABLED"})
    assert response.status_code == 200, response.text
    updated = check_schema(response.json(), "device")
    assert updated["displayName"] == "The spare" and updated["status"] == "DISABLED"
    assert updated["optlock"] == created["optlock"] + 1
    stale = kapua.http.put(path, json={**created, "displayName": "Lost update"})
    assert stale.status_code == 409
    assert check_error(stale.json(), "kapuaError")["kapuaErrorCode"] == "OPTIMISTIC_LOCKING"
    renamed = kapua.http.put(path, json={"clientId": "another-name"})
    assert renamed.status_code == 400
    assert kapua.get(path).json()["displayName"] == "The spare"

    assert kapua.http.delete(path).status_code == 204
    assert kapua.get(path).status_code == 404
    assert kapua.device_by_client("spare-1") is None


def test_a_reader_may_query_but_not_delete(fleet: Fleet, installed: dict[str, Any]) -> None:
    created = fleet.kapua.post("/AQ/users", json={"name": "registry-reader", "password": "reader-password"})
    assert created.status_code == 201, created.text
    reader = Kapua(fleet.manager.url)
    try:
        reader.login("registry-reader", "reader-password")
        path = _ops(fleet, installed["device"])
        assert reader.post(path + "/_count", json={}).status_code == 200
        for response in (reader.http.delete(f"{path}/{installed['full']['id']}"),
                         reader.http.delete(f"/_/devices/{installed['device']}"),
                         reader.http.put(f"/_/devices/{installed['device']}", json={"displayName": "mine"})):
            assert response.status_code == 403, response.text
            check_error(response.json(), "subjectUnauthorized")
        assert fleet.kapua.operation(installed["device"], installed["full"]["id"])["status"] == "COMPLETED"
    finally:
        reader.close()


# Kapua's error body for everything else under /v1 ----------------------------------
def _anonymous(fleet: Fleet, method: str, path: str) -> httpx.Response:
    return httpx.request(method, fleet.manager.url + "/v1" + path, timeout=30)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/no/such/thing"), ("PATCH", "/_/devices"), ("DELETE", "/authentication/info"),
    ("GET", "/_/devices/x/inventory/bundles"), ("POST", "/_/devices/x/events/_query"),
])
def test_without_a_token_every_unknown_route_is_kapuas_401(fleet: Fleet, method: str, path: str) -> None:
    response = _anonymous(fleet, method, path)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["kapuaErrorCode"] == "UNAUTHENTICATED" and body["httpErrorCode"] == 401 and "code" not in body
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_unknown_path_is_kapuas_404(fleet: Fleet) -> None:
    for path in ("/no/such/thing", "/_/devices/x/inventory/bundles", "/_/devices/x/operations/y/notifications/z/w"):
        response = fleet.kapua.get(path)
        assert response.status_code == 404, response.text
        body = check_error(response.json(), "kapuaError")
        assert body["kapuaErrorCode"] == "NOT_FOUND" and "code" not in body


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PATCH", "/_/devices", {"GET", "HEAD", "POST"}),
    ("DELETE", "/authentication/user", {"POST"}),
    ("POST", "/_/devices/x/operations/y", {"GET", "HEAD", "DELETE"}),
    ("GET", "/_/devices/_count", {"POST"}),
])
def test_a_wrong_method_is_kapuas_405_with_allow(fleet: Fleet, method: str, path: str, allowed: set[str]) -> None:
    response = fleet.kapua.http.request(method, path)
    assert response.status_code == 405, response.text
    assert check_error(response.json(), "kapuaError")["kapuaErrorCode"] == "METHOD_NOT_ALLOWED"
    assert set(response.headers["allow"].split(", ")) == allowed


def test_timeout_zero_is_kapuas_timeout_and_sends_nothing(fleet: Fleet) -> None:
    dev2 = fleet.device_id("dev-2")
    tasks_before = len(fleet.agents["dev-2"].host.tasks.list())
    operations_before = fleet.kapua.post(f"/_/devices/{dev2}/operations/_count", json={}).json()["count"]
    for response in (
        fleet.kapua.get(f"/_/devices/{dev2}/packages", params={"timeout": 0}),
        fleet.kapua.post(f"/_/devices/{dev2}/packages/_uninstall", params={"timeout": 0},
                         json={"name": "hello-web", "version": "1.0.0"}),
    ):
        assert response.status_code == 500, response.text
        body = response.json()
        assert body["type"] == "deviceManagementTimeoutExceptionInfo" and body["timeout"] == 0
    assert fleet.kapua.post(f"/_/devices/{dev2}/operations/_count", json={}).json()["count"] == operations_before
    assert len(fleet.agents["dev-2"].host.tasks.list()) == tasks_before


@pytest.mark.parametrize(("path", "params"), [
    ("/_/devices", {"tagId": ""}), ("/_/devices", {"tagId": "not an id!"}), ("/_/devices", {"limit": ""}),
    ("/_/devices/{dev}/packages", {"timeout": ""}), ("/_/devices", {"sortParam": "password"}),
    ("/_/devices", {"askTotalCount": "maybe"}),
])
def test_empty_and_malformed_parameters_are_400(fleet: Fleet, path: str, params: dict[str, str]) -> None:
    response = fleet.kapua.get(path.format(dev=fleet.device_id("dev-2")), params=params)
    assert response.status_code == 400, response.text
    assert check_error(response.json(), "illegalArgument")["argumentName"] == next(iter(params))


def test_device_list_parameters_work_as_in_kapua(fleet: Fleet) -> None:
    kapua = fleet.kapua
    assert kapua.get("/_/devices", params={"tagId": "AQ"}).json()["items"] == []  # no device carries tags
    by_term = kapua.get("/_/devices", params={"matchTerm": "dev-", "sortParam": "clientId", "sortDir": "DESCENDING",
                                              "askTotalCount": "true"})
    body = check_schema(by_term.json(), "deviceListResult")
    names = [d["clientId"] for d in body["items"]]
    assert names == sorted(names, reverse=True) and body["totalCount"] == len(names) >= 2


def test_a_body_over_the_hosts_cap_is_kapuas_413(fleet: Fleet) -> None:
    """The host refuses it before any route runs; under /v1 it still answers Kapua's body."""
    limit = fleet.manager.host.settings.max_body_bytes
    response = fleet.kapua.post("/_/devices/_query", content=b" " * (limit + 1),
                                headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    body = check_error(response.json(), "kapuaError")
    assert body["httpErrorCode"] == 413 and "code" not in body and str(limit) in body["message"]
