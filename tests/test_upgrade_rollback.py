"""Upgrades that roll back (issue 13): the new version does not start, so the old folder, public
files and record come back and the old version serves on (issue 21: its process never stopped);
no Node or network needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bolt_host.testing import running_host
from tests.helpers import app_started, private_port_range

pytestmark = pytest.mark.timeout(120)

SERVER = """import http.server, os
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), handler).serve_forever()
"""
BROKEN = "raise SystemExit('version 2 refuses to start')\n"


def version(repo: Path, number: str, code: str, public: str | None) -> None:
    folder = repo / "roll"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bolt: dict = {"main": "server.py"}
    if public is not None:
        (folder / "site").mkdir()
        (folder / "site" / "index.html").write_text(public)
        bolt["public"] = ["site"]
    (folder / "package.json").write_text(json.dumps({"name": "roll", "version": number, "bolt": bolt}))
    (folder / "server.py").write_text(code)


@pytest.mark.parametrize(
    ("old_public", "new_public"), [("v1 page", "v2 page"), (None, "v2 page"), ("v1 page", None)]
)
async def test_a_new_version_that_does_not_start_is_rolled_back(
    tmp_path: Path, old_public: str | None, new_public: str | None
) -> None:
    repo = tmp_path / "repo"
    version(repo, "1.0.0", SERVER, old_public)
    async with running_host(tmp_path / "data", port_range=private_port_range(), local_repo=repo) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "roll"})).status_code == 201
        async with app_started(bolt.admin, "roll") as before:
            version(repo, "2.0.0", BROKEN, new_public)
            upgrade = await bolt.admin.post("/api/apps/local", json={"path": "roll", "upgrade": True})
            assert upgrade.status_code == 500 and upgrade.json()["code"] == 1105
            message = upgrade.json()["error"]["message"]
            assert "upgrade of roll to 2.0.0 did not start" in message and "refuses to start" in message
            assert "rolled back to 1.0.0, which kept serving" in message  # issue 21: no gap

            assert (await bolt.admin.get("/api/apps/roll")).json()["body"]["version"] == "1.0.0"
            folder = bolt.host.settings.data_dir / "apps" / "roll"
            assert json.loads((folder / "package.json").read_text())["version"] == "1.0.0"
            context = bolt.host.supervisor.context("roll")
            assert context["status"] == "running" and context["pid"] == before["pid"]  # never stopped
            assert (await bolt.admin.get("/x/roll/server.py")).text == SERVER  # the old code answers
            page = await bolt.client.get("/public/roll/index.html")
            if old_public is None:
                assert page.status_code == 404
            else:
                assert page.status_code == 200 and page.text == old_public
            leftovers = [p.name for d in ("apps", "public") for p in (bolt.host.settings.data_dir / d).iterdir()]
            assert sorted(leftovers) == sorted(["roll"] + (["roll"] if old_public is not None else []))
