"""Kapua authentication and scope isolation on the device manager: access tokens
(signed JWT, refresh, logout), accounts as scopes, users in accounts, and a caller
that never sees or touches another scope's devices (403 in Kapua's body)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.fixtures.device.fleet import (
    ACCOUNTS,
    MANAGER_ID,
    PASSWORDS,
    EventLog,
    Fleet,
    Kapua,
    agent_config,
    device_host,
    sha256_of,
)
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO
from tests.fixtures.device.openapi import check_error, check_schema
from tests.fixtures.device.packages import pack_sample
from tests.fixtures.device.raw_device import RawDevice
from tests.helpers import wait_until

pytestmark = [
    NEEDS_MOSQUITTO,
    pytest.mark.timeout(120),
]


def test_login_returns_a_kapua_access_token(fleet: Fleet) -> None:
    token = check_schema(Kapua(fleet.manager.url).login("admin", ADMIN_PASSWORD), "accessToken")
    assert token["tokenId"].count(".") == 2 and token["scopeId"] == "AQ"
    assert token["expiresOn"] < token["refreshExpiresOn"]
    info = fleet.kapua.get("/authentication/info")
    assert info.status_code == 200 and check_schema(info.json(), "loginInfo")["accessToken"]["scopeId"] == "AQ"


@pytest.mark.parametrize("password", ["wrong-password", "", None])
def test_bad_credentials_are_401(fleet: Fleet, password: str | None) -> None:
    response = httpx.post(fleet.manager.url + "/v1/authentication/user",
                          json={"username": "admin", "password": password})
    assert response.status_code == 401
    assert response.json()["kapuaErrorCode"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-jwt", "Basic YWRtaW46eA==",
     "Bearer eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2lnbmF0dXJl"],
)
def test_calls_without_a_valid_token_are_401(fleet: Fleet, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(fleet.manager.url + "/v1/_/devices", headers=headers)
    assert response.status_code == 401
    assert response.json()["httpErrorCode"] == 401


def test_refresh_replaces_the_token_and_logout_ends_it(fleet: Fleet) -> None:
    client = Kapua(fleet.manager.url)
    first = client.login("admin", ADMIN_PASSWORD)
    response = client.post("/authentication/refresh",
                           json={"tokenId": first["tokenId"], "refreshToken": first["refreshToken"]})
    assert response.status_code == 200, response.text
    second = check_schema(response.json(), "accessToken")
    assert second["tokenId"] != first["tokenId"]
    assert client.get("/_/devices").status_code == 401  # the old token was invalidated
    again = client.post("/authentication/refresh",
                        json={"tokenId": first["tokenId"], "refreshToken": first["refreshToken"]})
    assert again.status_code == 401
    client.http.headers["Authorization"] = f"Bearer {second['tokenId']}"
    assert client.get("/_/devices").status_code == 200
    assert client.post("/authentication/logout").status_code == 204
    assert client.get("/_/devices").status_code == 401
    client.close()


def test_a_caller_never_sees_or_touches_another_scopes_devices(fleet: Fleet) -> None:
    root = fleet.kapua
    created = root.post("/AQ/accounts", json={"name": "acme", "organizationName": "ACME Inc.",
                                              "organizationEmail": "ops@acme.example"})
    assert created.status_code == 201, created.text
    acme = check_schema(created.json(), "account")
    assert acme["scopeId"] == "AQ" and acme["id"] != "AQ"
    assert check_schema(root.get("/AQ/accounts").json(), "accountListResult")["items"][0]["name"] == "acme"
    user = root.post(f"/{acme['id']}/users", json={"name": "acme-ops", "password": "acme-ops-password"})
    assert user.status_code == 201, user.text
    check_schema(user.json(), "user")

    with device_host(fleet.base / "acme-1", agent_config(fleet.broker.url, "acme-1", PASSWORDS["acme-1"], "acme")):
        ops = Kapua(fleet.manager.url)
        token = ops.login("acme-ops", "acme-ops-password")
        assert token["scopeId"] == acme["id"]
        acme_device = ops.wait_connected("acme-1")
        assert acme_device["scopeId"] == acme["id"]
        assert [d["clientId"] for d in ops.get("/_/devices").json()["items"]] == ["acme-1"]
        assert ops.get(f"/{acme['id']}/devices/{acme_device['id']}/packages").status_code == 200

        root_device = fleet.device_id("dev-1")
        for response in (
            ops.get("/AQ/devices"),
            ops.get(f"/AQ/devices/{root_device}"),
            ops.get(f"/AQ/devices/{root_device}/packages"),
            ops.post(f"/AQ/devices/{root_device}/packages/_uninstall", json={"name": "x", "version": "1"}),
            ops.get(f"/AQ/devices/{root_device}/operations"),
        ):
            assert response.status_code == 403, response.text
            body = check_error(response.json(), "subjectUnauthorized")
            assert body["kapuaErrorCode"] == "SUBJECT_UNAUTHORIZED"
        assert ops.get(f"/_/devices/{root_device}").status_code == 404  # not in my scope: unknown to me
        assert ops.post("/_/accounts", json={"name": "sub"}).status_code == 403  # not an admin

        assert "acme-1" not in [d["clientId"] for d in root.get("/_/devices").json()["items"]]
        assert root.get(f"/{acme['id']}/devices").status_code == 403
        assert root.get(f"/_/devices/{acme_device['id']}").status_code == 404
        ops.close()


def test_devices_of_an_unknown_account_are_ignored(fleet: Fleet) -> None:
    events = EventLog(fleet.manager.host)
    config = agent_config(fleet.broker.url, "stranger", PASSWORDS["stranger"], ACCOUNTS["stranger"])
    try:
        with device_host(fleet.base / "stranger", config):
            handled = wait_until(lambda: events.named("device-presence-ignored", clientId="stranger", event="BIRTH"),
                                 timeout=20, what="the manager to handle the stranger's BIRTH")
            assert handled[0].body["account"] == "nobody"
            assert "stranger" not in [d["clientId"] for d in fleet.kapua.get("/_/devices").json()["items"]]
            every_scope = fleet.manager.host.state["device"].devices.list()
            assert "stranger" not in [d["clientId"] for d in every_scope]
    finally:
        events.close()


# the broker ACL and who may answer -----------------------------------------------------
def test_a_device_cannot_read_another_devices_requests_nor_answer_for_it(fleet: Fleet) -> None:
    kapua = fleet.kapua
    silent = RawDevice(fleet.broker.port, "silent", PASSWORDS["silent"]).start()
    snoop = RawDevice(fleet.broker.port, "dev-3", PASSWORDS["dev-3"]).start()
    try:
        device_id = kapua.wait_connected("silent")["id"]
        for topic in ("#", "$EDC/#", "$EDC/kapua-sys/silent/DEPLOY-V2/+/+"):
            snoop.subscribe(topic)
        body = {"uri": fleet.files_url + "/files/private.tgz", "name": "notes", "version": "1.0.0",
                "username": "fetcher", "password": "device-only-pw"}
        with ThreadPoolExecutor(1) as pool:
            asking = pool.submit(kapua.post, f"/_/devices/{device_id}/packages/_download",
                                 json=body, params={"timeout": 5000})
            [request] = wait_until(lambda: silent.requests("download"), timeout=10, what="silent to get its request")
            assert request["dp.download.password"] == "device-only-pw"  # the addressed device gets it
            replies = f"$EDC/kapua-sys/{MANAGER_ID}/DEPLOY-V2/REPLY"
            forged = {"response.code": 200}
            snoop.publish(f"{replies}/silent/{request['request.id']}", forged)  # the broker drops it (ACL)
            snoop.publish(f"{replies}/dev-3/{request['request.id']}", forged)  # delivered; the manager ignores it
            answer = asking.result(timeout=30)
        assert answer.status_code == 500, answer.text
        assert answer.json()["type"] == "deviceManagementTimeoutExceptionInfo"
        # the PUBACKs above came after anything the broker would have routed to the snoop
        assert not [t for t in snoop.received if "/DEPLOY-V2/" in t], snoop.received

        with ThreadPoolExecutor(1) as pool:  # the device asked may answer, on its own reply topic
            asking = pool.submit(kapua.get, f"/_/devices/{device_id}/packages", params={"timeout": 10000})
            [request] = wait_until(lambda: silent.requests("packages"), timeout=10, what="silent to get its request")
            silent.publish(f"{replies}/silent/{request['request.id']}", {"response.code": 200},
                           body={"packages": [{"name": "raw-app", "version": "1.0.0"}]})
            answer = asking.result(timeout=30)
        assert answer.status_code == 200, answer.text
        assert [p["name"] for p in answer.json()["devicePackage"]] == ["raw-app"]
    finally:
        snoop.stop()
        silent.stop()


def test_a_hostile_job_id_is_refused_and_nothing_is_downloaded(fleet: Fleet) -> None:
    data, _ = pack_sample("notes")
    path = fleet.files.add("hostile.tgz", data)
    asked_before = len(fleet.files.auth_seen)
    operator = RawDevice(fleet.broker.port, "operator", PASSWORDS["operator"]).start(announce=False)
    try:
        operator.subscribe("$EDC/kapua-sys/operator/DEPLOY-V2/REPLY/+/+")
        hostile = "../../../../escaped"
        operator.publish("$EDC/kapua-sys/dev-1/DEPLOY-V2/EXEC/download", {
            "request.id": "hostile-1", "requester.client.id": "operator", "job.id": hostile, "dp.job.id": hostile,
            "dp.uri": fleet.files_url + path, "dp.name": "notes", "dp.version": "1.0.0",
            "dp.download.hash": sha256_of(data), "dp.install": False,
        })
        [reply] = wait_until(lambda: [b for t, b in operator.messages if t.endswith("/REPLY/dev-1/hostile-1")],
                             timeout=20, what="dev-1 to answer the hostile request")
    finally:
        operator.stop()
    metrics = reply["metrics"]
    assert metrics["response.code"] == 400 and "job.id" in metrics["response.exception.message"]
    assert len(fleet.files.auth_seen) == asked_before  # nothing was fetched
    assert fleet.agents["dev-1"].host.tasks.list(kind="download", module="notes") == []
    assert not list(fleet.base.parent.rglob("escaped*"))


def test_only_host_admins_change_devices(fleet: Fleet) -> None:
    root = fleet.kapua
    created = root.post("/AQ/users", json={"name": "viewer", "password": "viewer-password"})
    assert created.status_code == 201, created.text
    viewer = Kapua(fleet.manager.url)
    viewer.login("viewer", "viewer-password")
    dev1 = fleet.device_id("dev-1")
    operations_before = root.get(f"/_/devices/{dev1}/operations").json()["items"]
    try:
        for response in (
            viewer.post("/_/devices", json={"clientId": "viewer-device"}),
            viewer.post(f"/_/devices/{dev1}/packages/_download",
                        json={"uri": fleet.hello["dist"]["tarball"], "name": "hello-web", "version": "1.0.0"}),
            viewer.post(f"/_/devices/{dev1}/packages/_uninstall", json={"name": "hello-web", "version": "1.0.0"}),
        ):
            assert response.status_code == 403, response.text
            assert check_error(response.json(), "subjectUnauthorized")["kapuaErrorCode"] == "SUBJECT_UNAUTHORIZED"
        assert viewer.get("/_/devices").status_code == 200  # reading is fine
        assert viewer.get(f"/_/devices/{dev1}/packages").status_code == 200
        assert root.device_by_client("viewer-device") is None
        assert root.get(f"/_/devices/{dev1}/operations").json()["items"] == operations_before
    finally:
        viewer.close()
