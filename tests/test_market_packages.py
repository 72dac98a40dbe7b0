"""The routes the real Market has beyond its docs: statesimple, an app's package, an app's install config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_market_support import app_get, market_host

pytestmark = pytest.mark.timeout(120)


def test_package_config_and_statesimple(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        bob = market.add_user("bob")

        package = admin.get("/apps/env-echo/package")
        assert package.status_code == 200, package.text
        data = package.json()["data"]
        assert (data["app_name"], data["source"], data["version"]) == ("env-echo", "market.bolt", "1.0.0")
        assert data["manifest"]["name"] == "env-echo" and data["manifest"]["bolt"]["main"] == "server.py"
        assert data["envs"] == [{"envName": "COLOR", "value": "blue"}] and data["missing_envs"] == ["GREETING"]
        assert data["config"] == {"envs": []} and data["requires_purchase"] is False
        assert admin.get("/apps/ghost/package").json() == {"success": False, "message": "App not found: ghost"}
        assert admin.get("/apps/env-echo/package", params={"version": "9.9.9"}).status_code == 404
        assert admin.get("/apps/env-echo/package", params={"source": "nope"}).status_code == 404

        config = {"envs": [{"envName": "GREETING", "value": "from-config"}, {"envName": "COLOR", "value": "green"}]}
        saved = admin.put("/apps/env-echo/config", json=config)
        assert saved.status_code == 200, saved.text
        assert saved.json()["data"]["envs"] == config["envs"]
        for bad, status in [({"envs": [{"envName": "LD_PRELOAD", "value": "/tmp/x.so"}]}, 400), ({}, 400),
                            ({"envs": "GREETING=x"}, 400)]:
            assert admin.put("/apps/env-echo/config", json=bad).status_code == status
        assert admin.put("/apps/ghost/config", json=config).status_code == 404
        rendered = admin.get("/apps/env-echo/package").json()["data"]
        assert rendered["config"]["envs"] == config["envs"]  # the refused updates changed nothing
        assert rendered["envs"] == config["envs"] and rendered["missing_envs"] == []
        assert bob.get("/apps/env-echo/package").json()["data"]["missing_envs"] == ["GREETING"]  # per user

        installed = admin.post("/apps/env-echo/install", json={"source": "market.bolt", "app_name": "env-echo",
                                                               "version": "1.0.0", "sync": True})
        assert installed.status_code == 200, installed.text  # the saved config supplies the required env
        assert app_get(market, "env-echo")["GREETING"] == "from-config"
        cloned = admin.post("/apps/env-echo/clone", json={"source": "market.bolt", "title": "Red", "sync": True,
                                                          "envs": [{"envName": "COLOR", "value": "red"}]})
        assert cloned.status_code == 200, cloned.text
        clone = cloned.json()["data"]["name"]
        shown = app_get(market, clone)
        assert (shown["GREETING"], shown["COLOR"]) == ("from-config", "red")  # the request wins over the config

        simple = admin.get("/market/statesimple")
        assert simple.status_code == 200, simple.text
        body = simple.json()["data"]
        rows = {r["status"]["name"]: r for r in body["user_data"]["sources"]["market.bolt"]["app_state_latest"]}
        assert set(rows) == {"env-echo", clone} and body["user_id"] == "admin" and body["user_data"]["hash"] == ""
        assert rows["env-echo"]["version"] == "1.0.0" and rows["env-echo"]["status"]["state"] == "running"
        assert "entranceStatuses" not in rows["env-echo"]["status"]
        assert bob.get("/market/statesimple").json()["data"]["user_data"]["sources"] == {}
        assert bob.get("/market/statesimple", params={"user_id": "admin"}).status_code == 403
        seen = admin.get("/market/statesimple", params={"all": "true"}).json()["data"]
        assert seen["user_id"] == "*"

        assert admin.post("/apps/stop", json={"appName": "env-echo", "all": True}).status_code == 200
        assert admin.request("DELETE", "/apps/env-echo", json={"sync": True, "all": True}).status_code == 200
