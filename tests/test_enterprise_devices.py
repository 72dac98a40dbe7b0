"""Enterprise installs on devices through a real server, with a stand-in device backend
(a test plugin whose devices are other real hosts) and without one (a clear 503).

The real device backend (`bolt_device`) is disabled here so the stand-in answers the
hooks; tests/test_enterprise_fleet.py drives the real one (Mosquitto, a manager and
agents).  The stand-in stays for what the store decides on its own, without a
broker: which devices a user sees, refusals before any hook is called, a backend
failing with an error that carries no HTTP status (502), and a backend that cannot
remove apps from devices."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.helpers import free_port
from tests.test_enterprise_support import (
    FAKE_DEVICES_DIR,
    ServedHost,
    add_user,
    install,
    served_host,
    store_login,
)

NO_DEVICE_PLUGIN = ("device",)


def _fake_devices(served: ServedHost) -> ModuleType:
    plugin = served.host.pm.get_plugin("fake_devices")
    plugin.DEVICES.clear()
    plugin.CALLS.clear()
    return plugin


async def _store_with_apps(served: ServedHost) -> dict[str, str]:
    """hello-web (visible) and hello-node (controlled); users bob and eve. Returns app ids by name."""
    async with served.admin() as admin:
        await install(admin, "hello-web")
        await install(admin, "hello-node", controlled=True)
        await add_user(admin, "bob")
        await add_user(admin, "eve")
        apps = (await admin.get("/api/v1/apps/mobile/list/tenant/carbon.super")).json()["apps"]
    return {a["appName"]: a["id"] for a in apps}


async def test_device_install_reaches_the_device_host(tmp_path: Path) -> None:
    async with (
        served_host(tmp_path / "store", plugins_dir=FAKE_DEVICES_DIR, disable_plugins=NO_DEVICE_PLUGIN) as store,
        served_host(tmp_path / "device") as device,
    ):
        ids = await _store_with_apps(store)
        devices = _fake_devices(store)
        devices.DEVICES["host-b"] = {"url": device.url, "auth": ("admin", device.admin_password), "owner": "bob"}
        async with store.client() as bob:
            await store_login(bob, "bob")
            listed = (await bob.get("/store/apis/enterprise/get-devices")).json()
            assert [(d["id"], d["platform"], d["type"]) for d in listed] == [("host-b", "bolt", "host")]
            assert {"id", "platform", "model", "platform_version", "name", "image", "type"} <= set(listed[0])
            hidden = await bob.post("/store/apps/devices/host-b/install", data={"asset": ids["hello-node"]})
            assert hidden.status_code == 404 and devices.CALLS == []
            done = await bob.post("/store/apps/devices/host-b/install", data={"asset": ids["hello-web"]})
            assert done.status_code == 200, done.text
            assert done.json()["operation"] == {"status": "installed", "httpStatus": 201}
        [call] = devices.CALLS
        assert call["package"]["name"] == "hello-web" and call["package"]["source"]["type"] == "local"
        assert call["actor"]["user"] == "bob"
        async with device.admin() as device_admin:
            on_device = await device_admin.get("/api/apps/hello-web")
            assert on_device.status_code == 200 and on_device.json()["body"]["version"] == "1.0.0"
        [record] = store.host.state["enterprise"].devices.records("hello-web")
        assert (record["device"], record["user"], record["status"]) == ("host-b", "bob", "requested")
        async with store.user("eve") as eve:
            assert (await eve.get("/store/apis/enterprise/get-devices")).json() == []
            refused = await eve.post("/store/apps/devices/host-b/bolt/install", data={"asset": ids["hello-web"]})
            assert refused.status_code == 404 and len(devices.CALLS) == 1


async def test_uninstall_from_devices_unsubscribes_and_says_where_the_app_stays(tmp_path: Path) -> None:
    async with (
        served_host(tmp_path / "store", plugins_dir=FAKE_DEVICES_DIR, disable_plugins=NO_DEVICE_PLUGIN) as store,
        served_host(tmp_path / "device") as device,
    ):
        ids = await _store_with_apps(store)
        _fake_devices(store).DEVICES["host-b"] = {"url": device.url, "auth": ("admin", device.admin_password)}
        async with store.admin() as admin:
            await admin.post("/store/apps/user/install", data={"asset": ids["hello-web"]})
            await admin.post("/store/apps/devices/host-b/install", data={"asset": ids["hello-web"]})
            removed = await admin.post("/store/apps/devices/uninstall", data={"asset": ids["hello-web"]})
        body = removed.json()
        assert removed.status_code == 200 and body["error"] is False
        assert body["unsubscribed"] is True and body["removedFrom"] == [] and body["stillOn"] == ["host-b"]
        assert "host-b" in body["message"]
        assert store.host.state["enterprise"].subscriptions.all() == []


async def test_a_failing_device_backend_is_a_clear_502(tmp_path: Path) -> None:
    async with served_host(tmp_path, plugins_dir=FAKE_DEVICES_DIR, disable_plugins=NO_DEVICE_PLUGIN) as store:
        ids = await _store_with_apps(store)
        _fake_devices(store).DEVICES["gone"] = {"url": f"http://127.0.0.1:{free_port()}", "auth": ("a", "b")}
        async with store.admin() as admin:
            failed = await admin.post("/store/apps/devices/gone/install", data={"asset": ids["hello-web"]})
        assert failed.status_code == 502 and failed.json()["message"].startswith("The device backend failed")
        assert store.host.state["enterprise"].devices.records() == []


async def test_without_a_device_backend_device_routes_answer_a_clear_error(tmp_path: Path) -> None:
    async with served_host(tmp_path, disable_plugins=NO_DEVICE_PLUGIN) as store:
        ids = await _store_with_apps(store)
        async with store.client() as bob:
            await store_login(bob, "bob")
            listed = await bob.get("/store/apis/enterprise/get-devices")
            assert listed.status_code == 503
            assert listed.json()["error"] is True and "No device backend is loaded" in listed.json()["message"]
            refused = await bob.post("/store/apps/devices/12/install", data={"asset": ids["hello-web"]})
            assert refused.status_code == 503 and "No device backend is loaded" in refused.json()["message"]
            await bob.post("/store/apps/user/install", data={"asset": ids["hello-web"]})
            removed = (await bob.post("/store/apps/devices/uninstall", data={"asset": ids["hello-web"]})).json()
            assert removed["unsubscribed"] is True and removed["stillOn"] == []
        assert store.host.state["enterprise"].devices.records() == []
