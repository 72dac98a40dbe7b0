"""Conformance: the WSO2 App Manager document's own requests against a real host, as a
client written from that document alone would send them (curl's cookie jar for the store
APIs, HTTP Basic for the JAX-RS ones), checking the fields the document shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from tests.test_enterprise_support import served_host

pytestmark = pytest.mark.timeout(120)
JSON = {"Content-Type": "application/json"}
TENANT = "carbon.super"
LIST_FIELDS = {"iconImage", "identifier", "version", "platform", "name", "id", "type"}  # the document's list example


def _repo_with_an_icon(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    manifest = json.loads((repo / "hello-web" / "package.json").read_text())
    manifest["bolt"]["files"] = {"icon": "static/logo.svg"}
    (repo / "hello-web" / "package.json").write_text(json.dumps(manifest))
    return repo


async def test_the_documents_requests_in_order(tmp_path: Path) -> None:
    async with served_host(tmp_path / "data", local_repo=_repo_with_an_icon(tmp_path)) as served:
        admin_password = served.admin_password
        async with served.client() as curl, served.client(auth=("admin", admin_password)) as basic:
            assert (await basic.post("/api/apps/local", json={"path": "hello-web"})).status_code == 201

            # User login: curl -c cookies ... {"username":"admin","password":"admin"}
            login = await curl.post("/store/apis/user/login", headers=JSON,
                                    content=json.dumps({"username": "admin", "password": admin_password}))
            assert login.status_code == 200 and login.json()["error"] is False

            # User signup: curl -b cookies ... {"username":"storeUser","password":"stroreUser123"}
            signup = await curl.post("/store/apis/user/register", headers=JSON,
                                     content='{"username":"storeUser","password":"stroreUser123"}')
            assert signup.status_code == 201, signup.text
            assert signup.json()["error"] is False and "storeUser" in signup.json()["message"]
            assert served.host.users.get("storeUser")["name"] == "storeUser"  # kept as given

            # Check for user existence: curl -b cookies ... {"username":"storeUser"}
            exists = await curl.post("/store/apis/user/exists", headers=JSON, content='{"username":"storeUser"}')
            assert exists.status_code == 200 and exists.json()["exists"] is True
            other_case = await curl.post("/store/apis/user/exists", headers=JSON, content='{"username":"STOREUSER"}')
            assert other_case.json()["exists"] is True
            clash = await curl.post("/store/apis/user/register", headers=JSON,
                                    content='{"username":"StoreUser","password":"another-password"}')
            assert clash.status_code >= 400 and clash.json()["error"] is True  # names are unique in any case

            # List apps: curl -X GET ".../api/v1/apps/mobile/list/tenant/carbon.super" --user admin:admin
            listed = await basic.get(f"/api/v1/apps/mobile/list/tenant/{TENANT}")
            assert listed.status_code == 200, listed.text
            apps = listed.json()["apps"]
            assert listed.json()["query"] == {"found": 1, "limit": 0, "total": 1, "offset": 0}
            hello = apps[0]
            assert set(hello) >= LIST_FIELDS, LIST_FIELDS - set(hello)
            assert hello["iconImage"].endswith("/public/hello-web/logo.svg")
            icon = await curl.get(hello["iconImage"])
            assert icon.status_code == 200 and b"<svg" in icon.content
            searched = await basic.get(f"/api/v1/apps/mobile/list/tenant/{TENANT}?search=hello&limit=5&offset=0")
            assert [a["id"] for a in searched.json()["apps"]] == [hello["id"]]

            # Install (subscribe) apps for a user: a JSON array of ids, --user admin:admin
            subscribed = await basic.post(f"/api/v1/apps/mobile/subscribe/tenant/{TENANT}/user/storeUser",
                                          headers=JSON, content=json.dumps([hello["id"]]))
            assert subscribed.status_code == 200, subscribed.text
            assert LIST_FIELDS | {"location"} <= set(subscribed.json()[0])

            # Subscribed apps by user name, in another case than registered
            theirs = await basic.get(f"/api/v1/apps/mobile/subscriptions/tenant/{TENANT}/user/storeuser")
            assert [a["id"] for a in theirs.json()] == [hello["id"]]
            assert theirs.json()[0]["iconImage"] == hello["iconImage"]

            # User logout: curl -b cookies .../store/apis/user/logout
            assert (await curl.get("/store/apis/user/logout")).status_code == 200

        # The new user logs in with the document's password, the name in any case
        async with served.client() as store_user:
            for name in ("storeUser", "storeuser"):
                login = await store_user.post("/store/apis/user/login", headers=JSON,
                                              content=json.dumps({"username": name, "password": "stroreUser123"}))
                assert login.status_code == 200, (name, login.text)
                assert login.json()["username"] == "storeUser"
        async with httpx.AsyncClient(base_url=served.url, auth=("STOREUSER", "stroreUser123")) as by_basic:
            assert (await by_basic.get("/api/users/@current")).json()["body"]["name"] == "storeUser"
