"""Conformance: the Market document's requests, with its bodies (the install's
``env_name``/``env_value`` included), against a real host, from a client that knows only
the document: ``X-Authorization`` with a user token, answers checked for
``{success, message, data}`` and the fields the document names."""

from __future__ import annotations

import httpx
import pytest

from tests.test_market_support import PREFIX, chart_tarball, market_host

pytestmark = pytest.mark.timeout(180)


def _data(response: httpx.Response, message: str | None = None) -> object:
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["success"] is True and isinstance(envelope["message"], str), envelope
    if message is not None:
        assert envelope["message"] == message
    return envelope.get("data")


def test_the_documents_requests_in_order(tmp_path) -> None:
    with market_host(tmp_path) as market:
        login = httpx.post(market.live.url + "/api/users/login",
                           json={"name": "admin", "password": market.live.admin_auth[1]}, timeout=30)
        token = login.json()["body"]["token"]
        with httpx.Client(base_url=market.live.url + PREFIX, headers={"X-Authorization": token}, timeout=60) as doc:
            # Get market data hash / complete market data
            assert isinstance(_data(doc.get("/market/hash"))["hash"], str)
            data = _data(doc.get("/market/data"), "Market data retrieved successfully")
            assert {"user_data", "user_id", "timestamp"} <= set(data) and isinstance(data["timestamp"], int | float)
            sources = data["user_data"]["sources"]
            assert {s["type"] for s in sources.values()} <= {"local", "remote"}
            offered = {i["app_simple_info"]["app_name"] for s in sources.values() for i in s["app_info_latest"]}
            assert "env-echo" in offered

            # Get specific application information
            apps = _data(doc.post("/apps", json={"apps": [{"appid": "env-echo", "sourceDataName": "market.bolt"}]}),
                         "Apps information retrieved successfully")
            assert (apps["total_count"], apps["not_found"]) == (1, [])
            entry = apps["apps"][0]["app_info"]["app_entry"]
            assert entry["name"] == "env-echo" and entry["entrances"][0]["url"] == "/x/env-echo/"

            # Get application version history
            history = _data(doc.post("/apps/version-history", json={"appName": "env-echo"}))
            assert [v["version"] for v in history["data"]] == ["1.0.0"]

            # Install an application (sync), the document's env spelling
            install = {"source": "market.bolt", "app_name": "env-echo", "version": "1.0.0", "sync": True,
                       "envs": [{"env_name": "GREETING", "env_value": "hello"}]}
            _data(doc.post("/apps/env-echo/install", json=install), "App installation completed successfully")
            state = _data(doc.get("/market/state"))
            rows = [r for s in state["user_data"]["sources"].values() for r in s["app_state_latest"]]
            status = next(r["status"] for r in rows if r["status"]["name"] == "env-echo")
            assert status["state"] == "running" and status["entranceStatuses"][0]["url"] == "/x/env-echo/"

            # Open, stop (appName, all), resume
            _data(doc.post("/apps/open", json={"id": "env-echo"}), "Application opened successfully")
            _data(doc.post("/apps/stop", json={"appName": "env-echo", "all": False}))
            assert not market.live.host.supervisor.is_active("env-echo")
            _data(doc.post("/apps/resume", json={"appName": "env-echo"}))

            # Uninstall an application (sync)
            _data(doc.request("DELETE", "/apps/env-echo", json={"sync": True, "all": False}),
                  "App uninstallation completed successfully")
            assert market.live.host.apps.get("env-echo") is None

            # Upload application installation package: multipart chart (+ source)
            uploaded = _data(doc.post("/apps/upload", data={"source": "upload"},
                                      files={"chart": ("uploaded-echo-2.0.0.tgz", chart_tarball(tmp_path))}),
                             "App package uploaded and processed successfully")
            assert {"filename", "source", "user_id", "app_info"} <= set(uploaded) and uploaded["source"] == "upload"

            # System status aggregation
            status = _data(doc.get("/settings/system-status"), "System status aggregation complete")
            assert {"user_info", "cur_user_resource", "cluster_resource", "terminus_version"} <= set(status)
