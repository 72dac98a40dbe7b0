"""The Market as its document's client sees it: only apps that run here are offered,
``POST /apps`` items carry ``app_info.app_entry``, source types are ``local``/``remote``,
and the admin routes apply the host's installer rule to app tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from tests.test_market_support import REPO, chart_tarball, market_host

pytestmark = pytest.mark.timeout(120)


def _repo_with_firmware(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    shutil.copytree(BUNDLED_LOCAL_REPO / "demo-firmware", repo / "demo-firmware")
    shutil.copytree(BUNDLED_LOCAL_REPO / "ticker", repo / "ticker")
    return repo


def _offered(market_data: dict) -> set[str]:
    return {
        info["app_simple_info"]["app_name"]
        for source in market_data["data"]["user_data"]["sources"].values()
        for info in source.get("app_info_latest", [])
    }


def test_the_catalog_offers_no_firmware_and_sources_are_local_or_remote(tmp_path: Path) -> None:
    with market_host(tmp_path, local_repo=_repo_with_firmware(tmp_path)) as market:
        assert "demo-firmware" in {e["name"] for e in market.live.host.catalog.entries()}  # the robot store's
        data = market.admin.get("/market/data").json()
        assert {"env-echo", "ticker"} <= _offered(data) and "demo-firmware" not in _offered(data)
        asked = market.admin.post("/apps", json={"apps": [{"appid": "demo-firmware", "sourceDataName": "market.bolt"}]})
        assert asked.json()["data"]["not_found"] == [{"appid": "demo-firmware", "sourceDataName": "market.bolt"}]
        install = market.admin.post("/apps/demo-firmware/install",
                                    json={"source": "market.bolt", "app_name": "demo-firmware", "version": "1.0.0"})
        assert install.status_code == 404 and market.live.host.apps.get("demo-firmware") is None
        types = {s["type"] for s in data["data"]["user_data"]["sources"].values()}
        listed = market.admin.get("/settings/market-source").json()["data"]
        assert types | {s["type"] for s in listed} <= {"local", "remote"}
        assert {s["id"]: s["type"] for s in listed}["market.bolt"] == "local"


def test_apps_items_carry_app_info_app_entry_with_entrances(tmp_path: Path) -> None:
    with market_host(tmp_path, local_repo=_repo_with_firmware(tmp_path)) as market:
        asked = market.admin.post("/apps", json={"apps": [{"appid": "env-echo", "sourceDataName": "market.bolt"},
                                                          {"appid": "ticker", "sourceDataName": "market.bolt"}]})
        assert asked.status_code == 200, asked.text
        items = {item["app_simple_info"]["app_name"]: item for item in asked.json()["data"]["apps"]}
        entry = items["env-echo"]["app_info"]["app_entry"]
        assert (entry["name"], entry["title"], entry["version"]) == ("env-echo", "Env Echo", "1.0.0")
        assert [(e["name"], e["url"]) for e in entry["entrances"]] == [("env-echo", "/x/env-echo/")]
        assert items["ticker"]["app_info"]["app_entry"]["entrances"] == []  # a worker has nothing to open


def test_the_admin_routes_refuse_a_plain_apps_token_even_with_admin_credentials(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        token = market.live.host.tokens.issue("env-echo")  # env-echo is not a system app
        with market.client(market.live.admin_auth, **{"X-Bolt-App-Token": token}) as app_and_admin:
            calls = {
                "/apps/upload": {"files": {"chart": ("x-1.0.0.tgz", chart_tarball(tmp_path, "x", "1.0.0"))}},
                "/cleanup": {},
                "/reload": {},
            }
            for path, options in calls.items():
                refused = app_and_admin.post(path, **options)
                assert refused.status_code == 403, path
                body = refused.json()
                assert body["success"] is False and body["data"] == {"code": errors.NOT_SYSTEM_APP}, path
        assert "x" not in {e["name"] for e in market.live.host.catalog.entries()}
        assert market.admin.post("/reload").status_code == 200  # the admin alone still may
