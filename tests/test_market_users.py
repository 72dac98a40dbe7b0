"""Who may call the Market, per-user isolation, the envelope on errors, settings and the read routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.test_market_support import app_get, chart_tarball, market_host

pytestmark = pytest.mark.timeout(120)

GREETING = [{"envName": "GREETING", "value": "hi"}]


def _install(client: httpx.Client, name: str = "env-echo") -> httpx.Response:
    return client.post(f"/apps/{name}/install", json={
        "source": "market.bolt", "app_name": name, "version": "1.0.0", "sync": True, "envs": GREETING})


def _login_token(market, name: str, password: str) -> str:
    answer = httpx.post(f"{market.live.url}/api/users/login", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.json()["body"]["token"]


def test_user_b_cannot_see_or_touch_user_a_apps(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        alice = market.add_user("alice")
        bob = market.add_user("bob")
        assert _install(alice).status_code == 200
        assert market.state(alice, "env-echo")["state"] == "running"
        assert market.state(bob, "env-echo") is None
        assert market.state(market.admin, "env-echo") is None  # an admin's own view ...
        seen = market.admin.get("/market/state", params={"user_id": "alice"}).json()["data"]
        assert seen["user_data"]["sources"]["market.bolt"]["app_state_latest"][0]["status"]["user"] == "alice"
        assert bob.get("/market/state", params={"user_id": "alice"}).status_code == 403

        for method, path, body in [
            ("POST", "/apps/stop", {"appName": "env-echo"}),
            ("POST", "/apps/open", {"id": "env-echo"}),
            ("POST", "/apps/resume", {"appName": "env-echo"}),
            ("DELETE", "/apps/env-echo", {"sync": True}),
            ("DELETE", "/apps/env-echo/install", {"sync": True}),
            ("PUT", "/apps/env-echo/upgrade", {"source": "market.bolt", "version": "1.0.0"}),
        ]:
            answer = bob.request(method, path, json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json() == {"success": False, "message": "App not found: env-echo"}
        taken = _install(bob)
        assert taken.status_code == 400 and "another user" in taken.json()["message"]
        assert market.live.host.supervisor.is_active("env-echo")

        proxied = httpx.get(f"{market.live.url}/x/env-echo/env", auth=("bob", "password-for-tests"))
        assert proxied.status_code == 403
        own = httpx.get(f"{market.live.url}/x/env-echo/env", auth=("alice", "password-for-tests"))
        assert own.status_code == 200 and own.json()["GREETING"] == "hi"

        assert bob.get("/logs").json()["data"]["total_count"] == 0
        assert alice.get("/logs").json()["data"]["total_count"] >= 1
        assert bob.get("/runtime/state").json()["data"]["app_states"] == {}
        assert bob.get("/runtime/state", params={"user_id": "alice"}).status_code == 403
        everyone = market.admin.get("/runtime/state").json()["data"]
        assert "env-echo" in everyone["app_states"]["alice"]
        assert market.admin.get("/runtime/state", params={"task_status": "succeeded"}).json()["data"]["tasks"]

        status = bob.get("/settings/system-status").json()["data"]
        assert status["user_info"]["username"] == "bob" and status["user_info"]["role"] == "normal"
        assert status["cur_user_resource"]["apps"] == 0
        mine = alice.get("/settings/system-status").json()["data"]
        assert mine["cur_user_resource"]["apps"] == 1 and mine["cur_user_resource"]["running"] == 1
        assert mine["cluster_resource"]["memory"]["total"] > 0 and mine["cluster_resource"]["disk"]["total"] > 0
        assert mine["terminus_version"]["version"] == market.live.host.version

        stopped = alice.post("/apps/stop", json={"appName": "env-echo"})
        assert stopped.status_code == 200
        removed = market.admin.request("DELETE", "/apps/env-echo", json={"sync": True})  # an admin acts for her
        assert removed.status_code == 200, removed.text
        hers = alice.get("/logs", params={"type": "uninstall"}).json()["data"]["records"]
        assert [(r["status"], r["user"], r["by"]) for r in hers] == [("succeeded", "alice", "admin"),
                                                                     ("accepted", "alice", "admin")]
        task = market.task(removed.json()["data"]["task_id"])
        assert task["meta"]["user"] == "alice" and task["meta"]["by"] == "admin"
        assert any(t["type"] == "uninstall" for t in alice.get("/runtime/state").json()["data"]["tasks"])

        # nothing of env-echo is left on the host: the name is free again, bob takes the old record over
        taken_over = _install(bob)
        assert taken_over.status_code == 200, taken_over.text
        assert market.state(bob, "env-echo")["state"] == "running" and market.state(alice, "env-echo") is None
        assert httpx.get(f"{market.live.url}/x/env-echo/env", auth=("alice", "password-for-tests")).status_code == 403
        assert bob.request("DELETE", "/apps/env-echo", json={"sync": True}).status_code == 200


def test_identity_headers_and_the_error_envelope(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        market.add_user("carol")
        anonymous = market.client()
        answer = anonymous.get("/market/state")
        assert answer.status_code == 401
        assert answer.json() == {"success": False, "message": "Failed to get user information"}
        wrong = market.client(("carol", "not-her-password")).get("/market/state")
        assert wrong.status_code == 401 and wrong.json()["success"] is False

        token = _login_token(market, "carol", "password-for-tests")
        via_token = market.client(**{"X-Authorization": token}).get("/market/state")
        assert via_token.status_code == 200 and via_token.json()["data"]["user_id"] == "carol"
        bad_token = market.client(**{"X-Authorization": token + "x"}).get("/market/state")
        assert bad_token.status_code == 401

        spoofed = market.client(**{"X-Bfl-User": "admin"}).get("/market/state")
        assert spoofed.status_code == 401 and "not trusted" in spoofed.json()["message"]
        spoofed_with_login = market.client(("carol", "password-for-tests"), **{"X-Bfl-User": "admin"})
        assert spoofed_with_login.get("/market/state").status_code == 401

        missing = anonymous.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.json() == {"success": False, "message": "Not found: /app-store/api/v2/no/such/route"}
        wrong_method = market.admin.patch("/market/hash")
        assert wrong_method.status_code == 405 and wrong_method.json()["success"] is False

        admin = market.admin
        missing_env = admin.post("/apps/env-echo/install", json={
            "source": "market.bolt", "app_name": "env-echo", "version": "1.0.0", "sync": True})
        assert missing_env.status_code == 422
        assert missing_env.json()["data"] == {"type": "appenv", "missing": ["GREETING"]}
        no_version = admin.post("/apps/env-echo/install", json={"source": "market.bolt", "app_name": "env-echo"})
        assert no_version.json() == {"success": False, "message": "Missing required field: version"}
        unknown = admin.post("/apps/ghost/install", json={"source": "market.bolt", "app_name": "ghost",
                                                          "version": "1.0.0"})
        assert unknown.status_code == 404
        bad_env = admin.post("/apps/env-echo/install", json={
            "source": "market.bolt", "app_name": "env-echo", "version": "1.0.0",
            "envs": [{"envName": "LD_PRELOAD", "value": "/tmp/x.so"}]})
        assert bad_env.status_code == 400 and "reserved" in bad_env.json()["message"]
        not_json = admin.post("/apps", content=b"{", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["success"] is False
        assert admin.post("/apps", json={"apps": []}).status_code == 400
        not_installed = admin.post("/apps/stop", json={"appName": "env-echo"})
        assert not_installed.status_code == 404

        carol = market.client(("carol", "password-for-tests"))
        for method, path in [("GET", "/market/debug-memory"), ("GET", "/diagnostic"), ("POST", "/reload"),
                             ("POST", "/cleanup"), ("POST", "/settings/market-source")]:
            refused = carol.request(method, path, json={"id": "x", "type": "local"})
            assert refused.status_code == 403, path
        assert carol.post("/apps/upload", files={"chart": ("a.tgz", b"x")}).status_code == 403


def test_trusted_proxy_header_names_the_user(tmp_path: Path) -> None:
    with market_host(tmp_path, trust_proxy=True) as market:
        market.add_user("dave")
        proxied = market.client(**{"X-Bfl-User": "dave"}).get("/market/state")
        assert proxied.status_code == 200 and proxied.json()["data"]["user_id"] == "dave"
        unknown = market.client(**{"X-Bfl-User": "nobody"}).get("/market/state")
        assert unknown.status_code == 401


def test_sources_settings_history_and_developer_endpoints(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        sources = admin.get("/settings/market-source").json()["data"]
        assert {s["id"] for s in sources} == {"market.bolt", "upload"}
        bad = admin.post("/settings/market-source", json={"id": "r", "type": "remote", "base_url": "ftp://x"})
        assert bad.status_code == 400
        added = admin.post("/settings/market-source", json={"id": "team", "type": "local", "name": "Team"})
        assert added.status_code == 200 and {s["id"] for s in added.json()["data"]} == {"market.bolt", "upload", "team"}
        builtin = admin.delete("/settings/market-source/upload")
        assert builtin.status_code == 400
        assert admin.delete("/settings/market-source/team").status_code == 200
        assert admin.delete("/settings/market-source/team").status_code == 404

        assert admin.get("/settings/market-settings").json()["data"] == {"selected_source": "market.bolt"}
        saved = admin.put("/settings/market-settings", json={"selected_source": "upload", "theme": "dark"})
        assert saved.json()["data"] == {"selected_source": "upload", "theme": "dark"}
        assert admin.put("/settings/market-settings", json={"selected_source": "nope"}).status_code == 404

        data = admin.get("/market/data").json()["data"]
        infos = data["user_data"]["sources"]["market.bolt"]["app_info_latest"]
        assert any(i["app_simple_info"]["app_name"] == "env-echo" for i in infos)
        history = admin.post("/apps/version-history", json={"appName": "env-echo"}).json()["data"]["data"]
        assert history[0]["version"] == "1.0.0" and history[0]["appName"] == "env-echo"

        first_hash = admin.get("/market/hash").json()["data"]["hash"]
        assert _install(admin).status_code == 200
        assert admin.get("/market/hash").json()["data"]["hash"] == first_hash  # installs do not change the catalog

        memory = admin.get("/market/debug-memory").json()["data"]
        assert memory["total_users"] == 1 and memory["users_data"]["admin"]["states"] == {"running": 1}
        assert memory["cache_stats"]["instances"] == 1 and memory["total_sources"] == 2
        diag = admin.get("/diagnostic").json()["data"]
        assert diag["is_running"] is True and diag["cache_stats"]["log_records"] >= 1
        assert admin.post("/reload").json() == {"success": True, "message": "Cache data reloaded successfully"}
        assert admin.request("DELETE", "/apps/env-echo", json={"sync": True}).status_code == 200
        cleaned = admin.post("/cleanup").json()["data"]["cleaned_count"]
        assert cleaned == 1 and market.state(admin, "env-echo") is None

        logs = admin.get("/logs", params={"size": 5000, "type": "install"}).json()["data"]
        assert logs["size"] == 1000 and logs["requested_size"] == 5000
        assert all(r["type"] == "install" for r in logs["records"])
        assert admin.get("/logs", params={"size": 0}).status_code == 400


def test_dashboards_are_readable_html_per_user(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        alice = market.add_user("alice")
        bob = market.add_user("bob")
        assert _install(alice).status_code == 200
        cloned = alice.post("/apps/env-echo/clone", json={
            "source": "market.bolt", "app_name": "env-echo", "title": "<script>alert(1)</script>", "sync": True,
            "envs": GREETING})
        assert cloned.status_code == 200, cloned.text

        page = alice.get("/runtime/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "env-echo" in page.text and "<script" not in page.text.lower()
        assert "running" in page.text and "Tasks" in page.text
        assert "env-echo" not in bob.get("/runtime/dashboard").text
        assert "env-echo" in market.admin.get("/runtime/dashboard").text

        flow = alice.get("/runtime/dashboard-app", params={"app": "env-echo"})
        assert flow.status_code == 200
        assert "<li class='here'>running</li>" in flow.text and "<li class='done'>downloading</li>" in flow.text
        assert "install task env-echo" in flow.text  # the task log
        clone_page = alice.get("/runtime/dashboard-app", params={"app": cloned.json()["data"]["name"]}).text
        assert "&lt;script&gt;" in clone_page and "<script" not in clone_page.lower()
        assert "No such app" in bob.get("/runtime/dashboard-app", params={"app": "env-echo"}).text
        assert market.client().get("/runtime/dashboard").status_code == 401

        assert alice.post("/apps/stop", json={"appName": "env-echo", "all": True}).status_code == 200


def test_log_and_runtime_filters_and_opening_a_stopped_app(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin, alice, bob = market.admin, market.add_user("alice"), market.add_user("bob")
        chart = chart_tarball(tmp_path)
        assert admin.post("/apps/upload", files={"chart": ("uploaded-echo-2.0.0.tgz", chart)}).status_code == 200
        assert _install(alice).status_code == 200
        bobs = bob.post("/apps/uploaded-echo/install", json={"source": "upload", "app_name": "uploaded-echo",
                                                             "version": "2.0.0", "sync": True})
        assert bobs.status_code == 200, bobs.text

        assert alice.post("/apps/stop", json={"appName": "env-echo"}).status_code == 200
        assert not market.live.host.supervisor.is_active("env-echo")
        opened = alice.post("/apps/open", json={"id": "env-echo"})  # a stopped app is started, then shown
        assert opened.status_code == 200, opened.text
        context = market.live.host.supervisor.context("env-echo")
        assert opened.json()["data"]["port"] == context["port"] and context["status"] == "running"
        assert market.state(alice, "env-echo")["state"] == "running"
        assert app_get(market, "env-echo")["GREETING"] == "hi"

        records = alice.get("/logs").json()["data"]["records"]
        assert {r["type"] for r in records} >= {"install", "stop", "open"}
        times = sorted(r["timestamp"] for r in records)
        middle = times[len(times) // 2]
        since = alice.get("/logs", params={"start_time": middle}).json()["data"]
        until = alice.get("/logs", params={"end_time": middle}).json()["data"]
        assert sorted(r["timestamp"] for r in since["records"]) == [t for t in times if t >= middle]
        assert sorted(r["timestamp"] for r in until["records"]) == [t for t in times if t <= middle]
        exactly = alice.get("/logs", params={"start_time": middle, "end_time": middle}).json()["data"]
        assert [r["timestamp"] for r in exactly["records"]] == [middle] and exactly["total_count"] == 1
        bad = alice.get("/logs", params={"start_time": "yesterday"})
        assert bad.status_code == 400 and bad.json()["message"] == "'start_time' must be a Unix timestamp"

        def runtime(**query: str) -> dict:
            answer = admin.get("/runtime/state", params=query)
            assert answer.status_code == 200, answer.text
            return answer.json()["data"]

        everyone = runtime()
        assert set(everyone["app_states"]) == {"alice", "bob"}
        bobs_view = runtime(user_id="bob")
        assert list(bobs_view["app_states"]) == ["bob"] and list(bobs_view["app_states"]["bob"]) == ["uploaded-echo"]
        assert bobs_view["tasks"] and {t["user"] for t in bobs_view["tasks"]} == {"bob"}
        uploads = runtime(source_id="upload")
        assert {u: list(apps) for u, apps in uploads["app_states"].items()} == {"bob": ["uploaded-echo"]}
        assert uploads["tasks"] and {t["source"] for t in uploads["tasks"]} == {"upload"}

        assert bob.request("DELETE", "/apps/uploaded-echo", json={"sync": True}).status_code == 200
        installs, removals = runtime(task_type="install")["tasks"], runtime(task_type="uninstall")["tasks"]
        assert {(t["type"], t["app_name"]) for t in installs} == {("install", "env-echo"),
                                                                  ("install", "uploaded-echo")}
        assert [(t["type"], t["app_name"], t["user"]) for t in removals] == [("uninstall", "uploaded-echo", "bob")]
        assert alice.post("/apps/stop", json={"appName": "env-echo"}).status_code == 200
