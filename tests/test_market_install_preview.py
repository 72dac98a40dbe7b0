"""The Market's listings and details carry the host's install preview of each app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_market_support import copy_repo, market_host

pytestmark = pytest.mark.timeout(120)


def _repo_with_a_static_app(tmp_path: Path) -> Path:
    """The fixture apps plus a server-less one that has dependencies and asks for install scripts."""
    repo = copy_repo(tmp_path)
    static = repo / "static-notes"
    static.mkdir()
    manifest = {
        "name": "static-notes", "version": "1.0.0", "keywords": ["bolt-app"],
        "dependencies": {"left-pad": "^1.3.0", "ms": "^2.1.3"},
        "bolt": {"server": False, "installScripts": True, "public": "www"},
    }  # fmt: skip
    (static / "package.json").write_text(json.dumps(manifest))
    (static / "www").mkdir()
    (static / "www" / "index.html").write_text("<p>notes</p>\n")
    return repo


def test_listings_and_details_show_start_command_dependencies_and_install_scripts(tmp_path: Path) -> None:
    with market_host(tmp_path, local_repo=_repo_with_a_static_app(tmp_path)) as market:
        data = market.admin.get("/market/data").json()
        listed = {
            info["app_simple_info"]["app_name"]: info["raw_data"]["install"]
            for source in data["data"]["user_data"]["sources"].values()
            for info in source.get("app_info_latest", [])
        }
        static, echo = listed["static-notes"], listed["env-echo"]
        assert (static["serverless"], static["dependencies"]) == (True, 2) and "server-less" in static["startCommand"]
        assert static["installScripts"] is True and static["problem"] is None
        assert echo["serverless"] is False and "server.py" in echo["startCommand"]
        assert (echo["dependencies"], echo["installScripts"], echo["problem"]) == (0, False, None)

        asked = market.admin.post("/apps", json={"apps": [{"appid": "static-notes", "sourceDataName": "market.bolt"},
                                                          {"appid": "env-echo", "sourceDataName": "market.bolt"}]})
        assert asked.status_code == 200, asked.text
        items = {item["app_simple_info"]["app_name"]: item for item in asked.json()["data"]["apps"]}
        assert items["static-notes"]["app_info"]["app_entry"]["install"] == static
        assert items["env-echo"]["app_info"]["app_entry"]["install"] == echo
        assert items["env-echo"]["raw_data"]["install"] == echo
