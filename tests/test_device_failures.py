"""The device backend when things go wrong: offline and silent devices, the broker
restarting mid-operation, a package already in flight, and a reboot that restarts the
device's host service.  Real Mosquitto, manager and agents as in test_device_fleet.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
from bolt_device import wire
from bolt_device.kapua import KapuaError

from tests.fixtures.device.fleet import (
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


def _file_request(fleet: Fleet, sample: str, gated: bool = False, **changes: Any) -> dict[str, Any]:
    data, manifest = pack_sample(sample)
    path = fleet.files.add(f"{sample}.tgz", data, gated=gated)
    body = {"uri": fleet.files_url + path, "name": manifest["name"], "version": manifest["version"],
            "fileHash": sha256_of(data), "install": True}
    body.update(changes)
    return body


def _running(fleet: Fleet, client_id: str, app: str) -> list[dict[str, Any]]:
    return [c for c in fleet.live_apps(client_id) if c["name"] == app and c["status"] == "running"]


def test_an_offline_device_is_409_and_gets_no_operation(fleet: Fleet) -> None:
    kapua = fleet.kapua
    with device_host(fleet.base / "dev-3", agent_config(fleet.broker.url, "dev-3", PASSWORDS["dev-3"])):
        device_id = kapua.wait_connected("dev-3")["id"]
    device = kapua.wait_status("dev-3", "DISCONNECTED")
    assert device["lastEvent"]["resource"] == "DC"
    for response in (
        kapua.get(f"/_/devices/{device_id}/packages"),
        kapua.post(f"/_/devices/{device_id}/packages/_download", json=_file_request(fleet, "notes")),
        kapua.post(f"/_/devices/{device_id}/packages/_uninstall", json={"name": "notes", "version": "1.0.0"}),
    ):
        assert response.status_code == 409, response.text
        body = check_error(response.json())
        assert body["kapuaErrorCode"] == "DEVICE_NOT_CONNECTED" and body["deviceId"] == device_id
    assert kapua.get(f"/_/devices/{device_id}/operations").json()["items"] == []


def test_a_disabled_device_is_refused_as_kapua_refuses_it(fleet: Fleet) -> None:
    """Kapua's broker refuses a DISABLED device's connection, so every call to one is 409
    DEVICE_NOT_CONNECTED; here the device is still on the broker, and the manager refuses it
    the same way before creating an operation or sending anything.  Enabled again, it works."""
    kapua = fleet.kapua
    device = kapua.wait_connected("dev-2")
    path = f"/_/devices/{device['id']}"
    before = kapua.get(path + "/operations").json()["items"]
    disabled = kapua.http.put(path, json={"status": "DISABLED"})
    assert disabled.status_code == 200 and disabled.json()["status"] == "DISABLED", disabled.text
    try:
        for response in (
            kapua.post(path + "/packages/_download", json=_file_request(fleet, "notes")),
            kapua.post(path + "/packages/_uninstall", json={"name": "notes", "version": "1.0.0"}),
            kapua.get(path + "/packages"),
        ):
            assert response.status_code == 409, response.text
            body = check_error(response.json())
            assert body["kapuaErrorCode"] == "DEVICE_NOT_CONNECTED" and body["deviceId"] == device["id"]
            assert "DISABLED" in body["message"] and body["connectionStatus"] == "CONNECTED"
        assert kapua.get(path + "/operations").json()["items"] == before
    finally:
        enabled = kapua.http.put(path, json={"status": "ENABLED"})
    assert enabled.status_code == 200 and enabled.json()["status"] == "ENABLED", enabled.text
    assert kapua.get(path + "/packages").status_code == 200


def test_a_device_that_vanishes_is_marked_disconnected_by_its_will(fleet: Fleet) -> None:
    raw = RawDevice(fleet.broker.port, "silent", PASSWORDS["silent"]).start()
    try:
        fleet.kapua.wait_connected("silent")
    finally:
        raw.vanish()
    device = fleet.kapua.wait_status("silent", "DISCONNECTED")
    assert device["lastEvent"]["resource"] == "LWT"


def test_a_device_that_does_not_answer_gets_the_timeout_body(fleet: Fleet) -> None:
    raw = RawDevice(fleet.broker.port, "silent", PASSWORDS["silent"]).start()
    try:
        device_id = fleet.kapua.wait_connected("silent")["id"]
        response = fleet.kapua.get(f"/_/devices/{device_id}/packages", params={"timeout": 300})
        assert response.status_code == 500
        body = check_error(response.json())
        assert body["type"] == "deviceManagementTimeoutExceptionInfo" and body["timeout"] == 300
        response = fleet.kapua.post(f"/_/devices/{device_id}/packages/_download", params={"timeout": 300},
                                    json=_file_request(fleet, "notes"))
        assert response.status_code == 500 and response.json()["timeout"] == 300
        operations = fleet.kapua.get(f"/_/devices/{device_id}/operations").json()["items"]
        assert [o["status"] for o in operations] == ["FAILED"]
        assert "did not answer" in operations[0]["log"]
        assert any(topic.endswith("/DEPLOY-V2/EXEC/download") for topic in raw.received)
    finally:
        raw.stop()


def test_a_job_request_still_unanswered_is_sent_again_when_the_device_reannounces(fleet: Fleet) -> None:
    """What a broker restart loses (the request, or the reply) is asked again once the device is
    back (its BIRTH): the same request id and job id, so the device answers the same job."""
    raw = RawDevice(fleet.broker.port, "silent", PASSWORDS["silent"]).start()
    try:
        device_id = fleet.kapua.wait_connected("silent")["id"]
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(fleet.kapua.post, f"/_/devices/{device_id}/packages/_download",
                               params={"timeout": 60000}, json=_file_request(fleet, "notes"))
            first = wait_until(lambda: raw.requests("download"), timeout=20, what="the download request")[0]
            raw.publish(raw._topic("BIRTH"), {"session": raw.session, "display_name": "raw"})  # back again
            again = wait_until(lambda: raw.requests("download")[1:], timeout=20, what="the request sent again")[0]
            assert (again["request.id"], again["job.id"]) == (first["request.id"], first["job.id"])
            reply = f"$EDC/kapua-sys/{first['requester.client.id']}/DEPLOY-V2/REPLY/silent/{first['request.id']}"
            raw.publish(reply, {"response.code": 200})
            response = call.result(timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "RUNNING" and response.json()["operationId"] == first["job.id"]
        assert len(raw.requests("download")) == 2
    finally:
        raw.stop()


def test_an_agent_answers_a_job_it_knows_again_without_doing_it_twice(fleet: Fleet) -> None:
    data, _ = pack_sample("notes", rename="twice-notes")
    path = fleet.files.add("twice-notes.tgz", data)
    asked_before = len(fleet.files.auth_seen)
    operator = RawDevice(fleet.broker.port, "operator", PASSWORDS["operator"]).start(announce=False)
    try:
        operator.subscribe("$EDC/kapua-sys/operator/DEPLOY-V2/REPLY/+/+")
        operator.subscribe("$EDC/kapua-sys/operator/DEPLOY-V2/NOTIFY/+/+")
        request = {"requester.client.id": "operator", "job.id": "twice-1", "dp.job.id": "twice-1",
                   "dp.uri": fleet.files_url + path, "dp.name": "twice-notes", "dp.version": "1.0.0",
                   "dp.download.hash": sha256_of(data), "dp.install": False}
        operator.publish("$EDC/kapua-sys/dev-2/DEPLOY-V2/EXEC/download", {**request, "request.id": "twice-a"})

        def completed() -> list[dict[str, Any]]:
            return [b for t, b in operator.messages
                    if t.endswith("/NOTIFY/dev-2/download") and b["metrics"].get("dp.download.status") == "COMPLETED"]

        wait_until(completed, timeout=30, what="the download to complete")
        operator.publish("$EDC/kapua-sys/dev-2/DEPLOY-V2/EXEC/download", {**request, "request.id": "twice-b"})
        replies = wait_until(lambda: [b for t, b in operator.messages if "/REPLY/dev-2/twice-" in t][1:] and
                             [b for t, b in operator.messages if "/REPLY/dev-2/twice-" in t],
                             timeout=20, what="both replies")
        wait_until(lambda: len(completed()) >= 2, timeout=20, what="the last notification sent again")
    finally:
        operator.stop()
    assert [r["metrics"]["response.code"] for r in replies] == [200, 200]
    assert len(fleet.files.auth_seen) == asked_before + 1  # fetched once
    assert len(fleet.agents["dev-2"].host.tasks.list(kind="download", module="twice-notes")) == 1


def test_a_second_request_for_a_package_in_flight_is_refused(fleet: Fleet) -> None:
    kapua, dev1 = fleet.kapua, fleet.device_id("dev-1")
    fleet.files.gate.clear()
    fleet.files.requested.clear()
    body = _file_request(fleet, "ticker", gated=True)
    first = kapua.post(f"/_/devices/{dev1}/packages/_download", json=body)
    assert first.status_code == 200, first.text
    wait_until(fleet.files.requested.is_set, timeout=20, what="the device to start downloading")
    second = kapua.post(f"/_/devices/{dev1}/packages/_download", json=body)
    assert second.status_code == 500
    refused = check_error(second.json())
    assert refused["type"] == "deviceManagementResponseCodeExceptionInfo"
    assert "already in progress" in refused["message"]
    fleet.files.release()
    assert kapua.wait_operation_end(dev1, first.json()["id"])["status"] == "COMPLETED"
    statuses = {o["id"]: o["status"] for o in kapua.get(f"/_/devices/{dev1}/operations").json()["items"]}
    assert statuses[first.json()["id"]] == "COMPLETED" and list(statuses.values()).count("FAILED") >= 1


def test_the_broker_restarting_mid_operation_does_not_lose_it(fleet: Fleet) -> None:
    kapua, dev2 = fleet.kapua, fleet.device_id("dev-2")
    fleet.files.gate.clear()
    fleet.files.requested.clear()
    response = kapua.post(f"/_/devices/{dev2}/packages/_download", json=_file_request(fleet, "notes", gated=True))
    assert response.status_code == 200, response.text
    operation_id = response.json()["id"]
    wait_until(fleet.files.requested.is_set, timeout=20, what="the device to start downloading")
    fleet.broker.stop()
    fleet.files.release()  # the device finishes (download, install, start) while the broker is away
    wait_until(lambda: _running(fleet, "dev-2", "notes"), timeout=30, what="notes running on dev-2")
    assert kapua.operation(dev2, operation_id)["status"] == "RUNNING"
    fleet.broker.start()
    done = kapua.wait_operation_end(dev2, operation_id)
    assert done["status"] == "COMPLETED", done["log"]
    for client_id in ("dev-1", "dev-2"):
        kapua.wait_connected(client_id)
    listed = kapua.get(f"/_/devices/{dev2}/packages").json()
    assert "notes" in {p["name"] for p in listed["devicePackage"]}


def test_a_request_published_as_the_broker_goes_away_goes_out_on_the_next_connection(fleet: Fleet) -> None:
    """A request published in the moment between the MQTT client seeing the broker go away and
    the link noticing (a busy manager's moment lasts: 0.4 s in the 500-device burst at load 115)
    goes out on the next connection.  Before, it was published again at once, on the connection
    the link still took for up, failed again, and the call answered Kapua's SEND_ERROR (a broker
    restart 1.5 s into that burst failed all 500 calls that way)."""
    manager = fleet.manager.host.state["device"].manager
    link = manager.link
    topic = wire.request_topic("kapua-sys", "dev-1", "GET", "nothing", manager.prefix)

    armed = threading.Event()

    async def publish_in_the_gap() -> str | None:
        mqtt_client = link._client._client  # paho's client under aiomqtt's: the first to know
        gone = asyncio.Event()
        tell_aiomqtt = mqtt_client.on_disconnect  # aiomqtt's handler: the link learns it from there

        def disconnected(*args: Any) -> None:
            tell_aiomqtt(*args)
            gone.set()

        mqtt_client.on_disconnect = disconnected
        armed.set()
        async with asyncio.timeout(30):
            await gone.wait()  # runs the turn after paho's callback, before the link's own steps
        assert link.connected.is_set()  # the gap: paho knows, the link not yet
        try:
            await manager._publish_request(topic, b"{}")
        except KapuaError as exc:
            return exc.message
        return None

    connections = link.connections
    gap = asyncio.run_coroutine_threadsafe(publish_in_the_gap(), link._runner.get_loop())
    assert armed.wait(timeout=30)
    assert fleet.broker.process is not None
    fleet.broker.process.kill()
    fleet.broker.process.wait(timeout=10)
    fleet.broker.process = None
    fleet.broker.restart()
    assert gap.result(timeout=60) is None
    assert link.connections == connections + 1


def _iso_ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def test_a_reboot_ends_the_operation_of_a_job_it_interrupts(fleet: Fleet) -> None:
    kapua, dev2 = fleet.kapua, fleet.device_id("dev-2")
    fleet.files.gate.clear()
    fleet.files.requested.clear()
    try:
        hanging = _file_request(fleet, "static-docs", gated=True)
        stuck = kapua.post(f"/_/devices/{dev2}/packages/_download", json=hanging)
        assert stuck.status_code == 200, stuck.text
        wait_until(fleet.files.requested.is_set, timeout=20, what="dev-2 to start the download that will hang")
        births_before = kapua.device_by_client("dev-2")["lastEvent"]["receivedOn"]
        reboot = kapua.post(f"/_/devices/{dev2}/packages/_download",
                            json=_file_request(fleet, "hello-node", reboot=True, rebootDelay=0))
        assert reboot.status_code == 200, reboot.text
        assert kapua.wait_operation_end(dev2, reboot.json()["id"])["status"] == "COMPLETED"
        ended = kapua.wait_operation_end(dev2, stuck.json()["id"], timeout=60)
        assert ended["status"] == "FAILED", ended
        assert "host service stopped" in ended["log"]
    finally:
        fleet.files.release()
    # The agent reports the interrupted job FAILED as it shuts down, while still connected: wait
    # for the BIRTH of its restarted service, not for a connection that may be the old one.
    _wait_reborn(kapua, "dev-2", births_before)
    assert "hello-node" in {p["name"] for p in kapua.get(f"/_/devices/{dev2}/packages").json()["devicePackage"]}


def _wait_reborn(kapua: Kapua, client_id: str, births_before: str) -> dict[str, Any]:
    """Wait until ``client_id`` is connected again after a BIRTH newer than ``births_before``."""

    def reborn() -> dict[str, Any] | None:
        device = kapua.device_by_client(client_id)
        if device is None:
            return None
        event = device["lastEvent"]
        fresh = event["resource"] == "BIRTH" and event["receivedOn"] > births_before
        return device if fresh and device["connection"]["status"] == "CONNECTED" else None

    return wait_until(reborn, timeout=30, what=f"{client_id} to come back after the restart")


def test_reboot_restarts_the_host_service_and_running_apps_come_back(fleet: Fleet) -> None:
    kapua, dev1 = fleet.kapua, fleet.device_id("dev-1")
    births_before = kapua.device_by_client("dev-1")["lastEvent"]["receivedOn"]
    events = EventLog(fleet.manager.host)
    try:
        response = kapua.post(
            f"/_/devices/{dev1}/packages/_download",
            json=_file_request(fleet, "hello-web", reboot=True, rebootDelay=2000),
        )
        assert response.status_code == 200, response.text
        operation_id = response.json()["id"]
        assert kapua.wait_operation_end(dev1, operation_id)["status"] == "COMPLETED"
        before = wait_until(lambda: _running(fleet, "dev-1", "hello-web"), timeout=30, what="hello-web running")

        _wait_reborn(kapua, "dev-1", births_before)
        [goodbye] = events.named("device-disconnected", clientId="dev-1", event="DC")
    finally:
        events.close()
    notes = kapua.get(f"/_/devices/{dev1}/operations/{operation_id}/notifications").json()["items"]
    installed = next(n for n in notes if n["resource"] == "install" and n["status"] == "COMPLETED")
    # The agent schedules the restart right after sending "install COMPLETED"; its goodbye (DC)
    # is the restart's first step, and the manager cannot hear it before it is sent.
    assert goodbye.time * 1000 - _iso_ms(installed["sentOn"]) >= 2000
    back = wait_until(lambda: _running(fleet, "dev-1", "hello-web"), timeout=30, what="hello-web running again")
    assert back[0]["pid"] != before[0]["pid"]
    assert httpx.get(f"http://127.0.0.1:{back[0]['port']}/health", timeout=10).status_code == 200
    check_schema(kapua.get(f"/_/devices/{dev1}").json(), "device")
