"""Asked with ``?install=true``, the robot store's package list carries each catalog package's install preview."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry_server import RegistryServer
from tests.robot_support import make_package, robot_host

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def test_packages_show_start_command_dependencies_and_install_scripts(tmp_path: Path, registry: RegistryServer) -> None:
    static = make_package(tmp_path, "static-notes", installScripts=True)
    manifest = json.loads((static / "package.json").read_text())
    manifest["dependencies"] = {"left-pad": "^1.3.0", "ms": "^2.1.3", "debug": "^4.3.4"}
    (static / "package.json").write_text(json.dumps(manifest))
    registry.publish_dir(static)
    served = make_package(tmp_path, "served", server=True, main="server.js")
    (served / "server.js").write_text("require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT)\n")
    registry.publish_dir(served)

    with robot_host(tmp_path / "data", registry) as robot:
        client = robot.client
        client.refresh_app_store()
        for name in ("static-notes", "served"):
            assert "install" not in client.wait_status(name, "not_installed")  # the seed's Package, unasked
        answer = client.http.get("/app_store/packages", params={"install": "true"})
        assert answer.status_code == 200, answer.text
        listed = {package["name"]: package for package in answer.json()}
        static_preview = listed["static-notes"]["install"]
        assert "server-less" in static_preview.pop("start_command")
        assert static_preview == {
            "start_from": None, "serverless": True, "dependencies": 3, "install_scripts": True, "problem": None,
        }  # fmt: skip
        preview = listed["served"]["install"]
        assert preview["serverless"] is False and "server.js" in preview["start_command"]
        assert (preview["dependencies"], preview["install_scripts"], preview["problem"]) == (0, False, None)
        assert list(listed["served"])[:4] == ["name", "latest_version", "current_version", "status"]

        refused = client.http.get("/app_store/packages", params={"install": "maybe"})
        assert refused.status_code == 400 and refused.json() == {"detail": "'install' must be true or false"}
