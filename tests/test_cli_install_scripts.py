"""``apps install --install-scripts`` and ``apps install-local --install-scripts`` grant an app's
npm install scripts end to end: the real CLI, a real host on 127.0.0.1, a real npm-protocol
registry and the real npm, whose dependency's install script leaves a mark when it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_package
from tests.registry_server import RegistryServer
from tests.servers import LiveServer
from tests.test_cli_remote import admin_env, clean_env, live_r, ok_json, registry, run

__all__ = ["clean_env", "live_r", "registry"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(240)

MARK = "require('fs').writeFileSync('installed-by-script.txt', 'ran')"


def scripted_app(folder: Path, name: str) -> Path:
    manifest = {"name": name, "version": "1.0.0", "dependencies": {"marks-install": "1.0.0"},
                "bolt": {"main": "app.js", "server": False, "restart": "never", "installScripts": True}}
    return write_package(folder / name, manifest, {"app.js": "console.log('scripted');\n"})


def script_ran(app: dict) -> bool:
    return (Path(app["folder"]) / "node_modules" / "marks-install" / "installed-by-script.txt").is_file()


def test_install_scripts_run_only_with_the_flag(live_r: LiveServer, registry: RegistryServer, tmp_path: Path) -> None:
    env = admin_env(live_r)
    dependency = {"name": "marks-install", "version": "1.0.0", "scripts": {"install": f'node -e "{MARK}"'}}
    registry.publish_dir(write_package(tmp_path / "dep", dependency, {"index.js": "module.exports = 1;\n"}))
    registry.publish_dir(scripted_app(tmp_path, "scripted"))

    plain = ok_json(run("apps", "install", "scripted", "--json", env=env))
    assert (plain["installScripts"], plain["installScriptsRun"]) == (True, False) and not script_ran(plain)
    granted = ok_json(run("apps", "install", "scripted", "--upgrade", "--install-scripts", "--json", env=env))
    assert granted["installScriptsRun"] is True and script_ran(granted)

    folder = scripted_app(tmp_path / "here", "scripted-local")
    local_plain = ok_json(run("apps", "install-local", str(folder), "--json", env=env))
    assert local_plain["installScriptsRun"] is False and not script_ran(local_plain)
    local = ok_json(run("apps", "install-local", str(folder), "--upgrade", "--install-scripts", "--json", env=env))
    assert local["installScriptsRun"] is True and script_ran(local)
