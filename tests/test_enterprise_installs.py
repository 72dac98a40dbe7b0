"""Enterprise subscriptions and installs through a real server: web-app subscriptions,
enterprise installs to roles and users (admin only, failing closed), the JAX-RS
subscribe API, and entitlements that follow roles and survive restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.testing import running_host
from tests.helpers import async_wait_until
from tests.test_enterprise_support import (
    ServedHost,
    add_role,
    add_user,
    install,
    served_host,
    set_roles,
    store_login,
    visible_apps,
)

SUBSCRIBE = "/store/resources/webapp/v1/subscription/app"
UNSUBSCRIBE = "/store/resources/webapp/v1/unsubscription/app"
PROVIDER = "bolt-host contributors"
PERFORM = "/store/apis/enterprise/perform"
JAXRS = "/api/v1/apps/mobile"
TENANT = "tenant/carbon.super"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ServedHost]:
    """hello-web and notes visible to all, hello-node controlled; users bob and eve, role staff."""
    async with served_host(tmp_path) as served:
        async with served.admin() as admin:
            await install(admin, "hello-web")
            await install(admin, "notes")
            await install(admin, "hello-node", controlled=True)
            await add_role(admin, "staff")
            await add_user(admin, "bob")
            await add_user(admin, "eve")
        yield served


def _form(name: str, **extra: str) -> dict[str, str]:
    return {
        "apiName": name, "apiVersion": "1.0.0", "apiTier": "Unlimited", "subscriptionType": "INDIVIDUAL",
        "apiProvider": PROVIDER, "appName": "DefaultApplication", **extra,
    }


def _rows(served: ServedHost) -> list[dict]:
    return served.host.state["enterprise"].subscriptions.all()


async def _may_open(served: ServedHost, user: str, app: str) -> bool:
    """Whether the host's proxy lets ``user`` through to ``app`` (not running: 420 after the access check)."""
    async with served.user(user) as client:
        answer = (await client.get(f"/x/{app}/")).json()["code"]
    assert answer in {errors.APP_NOT_RUNNING, errors.NO_START_RIGHT}
    return answer == errors.APP_NOT_RUNNING


async def test_webapp_subscribe_with_form_and_json_and_list_own_subscriptions(store: ServedHost) -> None:
    async with store.client() as bob:
        await store_login(bob, "bob")
        by_form = await bob.post(SUBSCRIBE, data=_form("hello-web", apiTier="Gold"))
        assert by_form.status_code == 200 and by_form.json()["error"] is False
        assert by_form.json()["subscriptions"][0]["apiTier"] == "Gold"
        by_json = await bob.post(SUBSCRIBE, json=_form("notes"))
        assert by_json.status_code == 200
        mine = (await bob.get("/store/resources/webapp/v1/subscription/bob")).json()
        assert {(s["apiName"], s["subscriber"], s["subscriberType"]) for s in mine} == {
            ("hello-web", "bob", "user"), ("notes", "bob", "user"),
        }
        others = await bob.get("/store/resources/webapp/v1/subscription/eve")
        assert others.status_code == 403 and others.json()["error"] is True
        subscribers = await bob.get(f"/store/resources/webapp/v1/subscriptions/{PROVIDER}/hello-web/1.0.0")
        assert subscribers.status_code == 403
        gone = await bob.post(UNSUBSCRIBE, data=_form("notes"))
        assert gone.json()["removed"] == 1
        assert [s["apiName"] for s in (await bob.get("/store/resources/webapp/v1/subscription/bob")).json()] == [
            "hello-web"
        ]
    async with store.admin() as admin:
        bobs = (await admin.get("/store/resources/webapp/v1/subscription/bob")).json()
        assert [s["apiName"] for s in bobs] == ["hello-web"]
        for suffix in ("", "/", "/1.0.0"):
            listed = (await admin.get(f"/store/resources/webapp/v1/subscriptions/{PROVIDER}/hello-web{suffix}")).json()
            assert [s["subscriber"] for s in listed] == ["bob"], suffix
        assert (await admin.get("/store/resources/webapp/v1/subscription/nobody")).status_code == 404


async def test_webapp_subscribe_refuses_hidden_wrong_and_anonymous(store: ServedHost) -> None:
    async with store.client() as anonymous:
        assert (await anonymous.post(SUBSCRIBE, data=_form("hello-web"))).status_code == 401
    async with store.user("bob") as bob:
        hidden = await bob.post(SUBSCRIBE, data=_form("hello-node"))
        assert hidden.status_code == 404 and hidden.json()["error"] is True
        assert (await bob.post(SUBSCRIBE, data=_form("hello-web", apiVersion="2.0.0"))).status_code == 404
        assert (await bob.post(SUBSCRIBE, data=_form("hello-web", apiProvider="mallory"))).status_code == 404
        assert (await bob.post(SUBSCRIBE, data=_form("hello-web", subscriptionType="BULK"))).status_code == 400
        for_roles = _form("hello-web", subscriptionType="ENTERPRISE", enterprises="staff")
        assert (await bob.post(SUBSCRIBE, data=for_roles)).status_code == 403
    assert _rows(store) == []
    async with store.admin() as admin:
        done = await admin.post(SUBSCRIBE, data=_form("hello-node", subscriptionType="ENTERPRISE", enterprises="staff"))
        assert done.status_code == 200
    assert [(r["kind"], r["subject"]) for r in _rows(store)] == [("role", "staff")]


async def test_non_admin_enterprise_installs_are_refused_and_change_nothing(store: ServedHost) -> None:
    form = {"app": "hello-node", "data[]": ["bob", "eve"]}
    async with store.client() as anonymous:
        assert (await anonymous.post(f"{PERFORM}/install/user", data=form)).status_code == 401
    async with store.client() as bob:
        await store_login(bob, "bob")
        for target, data in (("user", ["bob", "eve"]), ("role", ["staff", "guest"])):
            refused = await bob.post(f"{PERFORM}/install/{target}", data={"app": "hello-node", "data[]": data})
            assert refused.status_code == 403 and refused.json()["error"] is True
        for listing in ("get-all-roles", "get-all-users"):
            assert (await bob.get(f"/store/apis/enterprise/{listing}")).status_code == 403
    async with store.user("eve") as eve:
        assert (await eve.post(f"{PERFORM}/install/user", data=form)).status_code == 403
        assert (await eve.post(f"{PERFORM}/uninstall/user", data=form)).status_code == 403
    assert _rows(store) == []
    assert store.host.visibility.app_users() == [] and store.host.visibility.app_roles() == []
    async with store.admin() as admin:
        assert "hello-node" not in await visible_apps(admin, "bob")
        assert "hello-node" not in await visible_apps(admin, "eve")


async def test_install_to_a_role_reaches_users_added_to_it_later(store: ServedHost) -> None:
    assert not await _may_open(store, "bob", "hello-node")
    async with store.admin() as admin:
        listed = (await admin.get(f"{JAXRS}/list/{TENANT}")).json()["apps"]
    app_id = next(a["id"] for a in listed if a["appName"] == "hello-node")
    async with store.client() as admin:
        await store_login(admin, "admin", store.admin_password)
        roles = (await admin.get("/store/apis/enterprise/get-all-roles")).json()
        assert roles == {"aaData": [["admin"], ["guest"], ["staff"]]}
        users = (await admin.get("/store/apis/enterprise/get-all-users")).json()
        assert users == {"aaData": [["admin"], ["bob"], ["eve"]]}
        done = await admin.post(f"{PERFORM}/install/role", data={"app": app_id, "data[]": ["staff"]})
        assert done.status_code == 200 and done.json() == {"status": "success"}
    async with store.admin() as admin:
        assert "hello-node" not in await visible_apps(admin, "bob")
        await set_roles(admin, "bob", ["guest", "staff"])
        assert "hello-node" in await visible_apps(admin, "bob")
        assert "hello-node" not in await visible_apps(admin, "eve")
    assert await _may_open(store, "bob", "hello-node")
    async with store.admin() as admin:
        bobs = (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/user/bob")).json()
        assert [a["appName"] for a in bobs] == ["hello-node"]
        removed = await admin.post(f"{PERFORM}/uninstall/role", json={"app": "hello-node", "data": ["staff"]})
        assert removed.json() == {"status": "success"}
        assert "hello-node" not in await visible_apps(admin, "bob")
    assert not await _may_open(store, "bob", "hello-node")


async def test_install_to_users_is_all_or_nothing(store: ServedHost) -> None:
    async with store.admin() as admin:
        unknown = await admin.post(f"{PERFORM}/install/user", data={"app": "hello-node", "data[]": ["bob", "ghost"]})
        assert unknown.status_code == 404 and "ghost" in unknown.json()["message"]
        assert _rows(store) == []
        for path, form, status in (
            ("install/user", {"app": "nope", "data[]": ["bob"]}, 404),
            ("install/user", {"app": "hello-node"}, 400),
            ("install/device", {"app": "hello-node", "data[]": ["1"]}, 404),
            ("delete/user", {"app": "hello-node", "data[]": ["bob"]}, 404),
        ):
            assert (await admin.post(f"{PERFORM}/{path}", data=form)).status_code == status, path
        assert _rows(store) == []
        done = await admin.post(f"{PERFORM}/install/user", data={"app": "hello-node", "data[]": ["bob", "eve"]})
        assert done.json() == {"status": "success"}
        assert {"hello-node"} <= await visible_apps(admin, "bob") & await visible_apps(admin, "eve")
        await admin.post(f"{PERFORM}/uninstall/user", data={"app": "hello-node", "data[]": "eve"})
        assert "hello-node" not in await visible_apps(admin, "eve")
        assert "hello-node" in await visible_apps(admin, "bob")


async def test_user_self_install_only_for_visible_apps(store: ServedHost) -> None:
    async with store.admin() as admin:
        listed = (await admin.get(f"{JAXRS}/list/{TENANT}")).json()["apps"]
    ids = {a["appName"]: a["id"] for a in listed}
    async with store.user("bob") as bob:
        hidden = await bob.post("/store/apps/user/install", data={"asset": ids["hello-node"]})
        assert hidden.status_code == 404
        done = await bob.post("/store/apps/user/install", data={"asset": ids["notes"]})
        assert done.status_code == 200 and done.json()["assetId"] == ids["notes"]
    assert [(r["app"], r["subject"]) for r in _rows(store)] == [("notes", "bob")]


async def test_jaxrs_subscribe_and_unsubscribe_users_and_roles(store: ServedHost) -> None:
    async with store.admin() as admin:
        ids = {a["appName"]: a["id"] for a in (await admin.get(f"{JAXRS}/list/{TENANT}")).json()["apps"]}
        unknown = await admin.post(f"{JAXRS}/subscribe/{TENANT}/user/bob", json=[ids["notes"], "no-such-id"])
        assert unknown.status_code == 404 and _rows(store) == []
        for bad in ({"apps": []}, [], "not json"):
            body = {"content": bad} if isinstance(bad, str) else {"json": bad}
            assert (await admin.post(f"{JAXRS}/subscribe/{TENANT}/user/bob", **body)).status_code == 400
        assert (await admin.post(f"{JAXRS}/subscribe/{TENANT}/user/ghost", json=[ids["notes"]])).status_code == 404
        assert (await admin.post(f"{JAXRS}/subscribe/{TENANT}/role/ghosts", json=[ids["notes"]])).status_code == 404
        subscribed = await admin.post(f"{JAXRS}/subscribe/{TENANT}/user/bob", json=[ids["hello-node"], "notes"])
        assert subscribed.status_code == 200
        assert [(a["appName"], a["location"]) for a in subscribed.json()] == [
            ("hello-node", f"{store.url}/x/hello-node/"), ("notes", f"{store.url}/x/notes/"),
        ]
        await admin.post(f"{JAXRS}/subscribe/{TENANT}/role/staff", json=[ids["hello-web"]])
        await set_roles(admin, "bob", ["staff"])
        bobs = (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/user/bob")).json()
        assert {a["appName"] for a in bobs} == {"hello-node", "notes", "hello-web"}
        staff = (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/role/staff")).json()
        assert [a["appName"] for a in staff] == ["hello-web"]
        assert "hello-node" in await visible_apps(admin, "bob")
        removed = await admin.post(f"{JAXRS}/unsubscribe/{TENANT}/user/bob", json=[ids["hello-node"]])
        assert [a["appName"] for a in removed.json()] == ["hello-node"]
        assert "hello-node" not in await visible_apps(admin, "bob")
        await admin.post(f"{JAXRS}/unsubscribe/{TENANT}/role/staff", json=[ids["hello-web"]])
        assert (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/role/staff")).json() == []
        assert (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/user/ghost")).status_code == 404
    async with store.user("bob") as bob:
        assert (await bob.post(f"{JAXRS}/subscribe/{TENANT}/user/bob", json=[ids["hello-node"]])).status_code == 403


async def test_a_grant_the_store_did_not_make_outlives_the_subscription(store: ServedHost) -> None:
    async with store.admin() as admin:
        granted = await admin.post("/api/app-roles", json={"app": "hello-node", "role": "staff", "permissions": ["*"]})
        assert granted.status_code == 201
        await admin.post(f"{PERFORM}/install/role", data={"app": "hello-node", "data[]": "staff"})
        await admin.post(f"{PERFORM}/uninstall/role", data={"app": "hello-node", "data[]": "staff"})
    grants = store.host.visibility.app_roles("hello-node")
    assert [(g["role"], g["permissions"]) for g in grants] == [("staff", ["*"])]


async def test_entitlements_survive_a_restart(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served, served.admin() as admin:
        await install(admin, "hello-node", controlled=True)
        await add_role(admin, "staff")
        await add_user(admin, "bob", roles=("staff",))
        await add_user(admin, "eve")
        await admin.post(f"{PERFORM}/install/role", data={"app": "hello-node", "data[]": "staff"})
        await admin.post(f"{PERFORM}/install/user", data={"app": "hello-node", "data[]": "eve"})
    async with served_host(tmp_path) as again, again.admin() as admin:
        assert "hello-node" in await visible_apps(admin, "bob")
        assert "hello-node" in await visible_apps(admin, "eve")
        eves = (await admin.get(f"{JAXRS}/subscriptions/{TENANT}/user/eve")).json()
        assert [a["appName"] for a in eves] == ["hello-node"]
        await admin.post(f"{PERFORM}/uninstall/user", data={"app": "hello-node", "data[]": "eve"})
        assert "hello-node" not in await visible_apps(admin, "eve")


async def test_deleted_apps_and_users_take_their_entitlements_with_them(store: ServedHost) -> None:
    async with store.admin() as admin:
        await admin.post(f"{PERFORM}/install/user", data={"app": "hello-node", "data[]": ["bob", "eve"]})
        await admin.post(f"{PERFORM}/install/user", data={"app": "notes", "data[]": ["bob"]})
        assert (await admin.delete("/api/users/eve")).status_code == 200
        assert (await admin.delete("/api/apps/notes")).status_code == 200
        # the plugin hears app-uninstalled and user-deleted as events, delivered concurrently
        await async_wait_until(lambda: len(_rows(store)) == 1, what="entitlements dropped")
        assert [(r["app"], r["subject"]) for r in _rows(store)] == [("hello-node", "bob")]
        assert [g["user"] for g in store.host.visibility.app_users()] == ["bob"]



async def test_an_apps_event_named_like_the_hosts_drops_no_entitlement(tmp_path: Path) -> None:
    # In-process (one event loop), so the test can put events on the host's bus itself.
    async with running_host(tmp_path) as bolt:
        await install(bolt.admin, "notes")
        await add_user(bolt.admin, "bob")
        granted = await bolt.admin.post(f"{PERFORM}/install/user", data={"app": "notes", "data[]": ["bob"]})
        assert granted.status_code == 200, granted.text
        subscriptions = bolt.host.state["enterprise"].subscriptions
        before = subscriptions.all()
        assert before
        await bolt.host.events.publish("user-deleted", {"name": "bob"}, publisher="notes")
        await bolt.host.events.publish("app-uninstalled", {"app": {"name": "notes"}}, publisher="notes")
        await bolt.host.events.drain()
        assert subscriptions.all() == before
        await bolt.host.events.publish("user-deleted", {"name": "bob"})
        await bolt.host.events.drain()
        assert subscriptions.all() == []
