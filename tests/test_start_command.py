"""How apps start (issue 13): the resolution order on real package folders, and the Node
launcher with real node processes for each shape of exported app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bolt_host.errors import BoltError
from bolt_host.services.manifest import check_manifest
from bolt_host.services.start_command import command_argv, resolve_command
from bolt_host.testing import running_host
from tests.helpers import app_started, private_port_range, requires_tool

pytestmark = pytest.mark.timeout(120)
NODE = shutil.which("node")


def app_folder(root: Path, name: str, files: dict[str, str] | None = None, **manifest: object) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": "1.0.0", **manifest}))
    for relative, text in (files or {}).items():
        (folder / relative).write_text(text)
    return folder


def resolved(folder: Path) -> dict | None:
    manifest = json.loads((folder / "package.json").read_text())
    return resolve_command(manifest, check_manifest(manifest, folder), folder)


def test_the_first_source_in_the_documented_order_wins(tmp_path: Path) -> None:
    everything = {
        "bolt": {"start": ["python3", "-m", "http.server"], "main": "a.js"},
        "scripts": {"start": "node s.js"},
        "bin": {"x": "bin/x"},
        "main": "m.js",
    }
    folder = app_folder(tmp_path, "all", {"Procfile": "web: node p.js\n"}, **everything)
    assert resolved(folder) == {"from": "bolt.start", "argv": ["python3", "-m", "http.server"]}
    everything["bolt"] = {"main": "a.js"}
    assert resolved(app_folder(tmp_path, "m1", **everything)) == {"from": "bolt.main", "node": "a.js"}
    everything["bolt"] = {}
    assert resolved(app_folder(tmp_path, "s1", **everything)) == {"from": "scripts.start", "shell": "node s.js"}
    del everything["scripts"]
    assert resolved(app_folder(tmp_path, "b1", **everything)) == {"from": "bin", "executable": "bin/x"}
    del everything["bin"]
    assert resolved(app_folder(tmp_path, "t1", **everything)) == {"from": "main", "node": "m.js"}
    del everything["main"]
    procfile = app_folder(tmp_path, "p1", {"Procfile": "worker: w\nweb: node p.js --port $PORT\n"}, **everything)
    assert resolved(procfile) == {"from": "Procfile", "shell": "node p.js --port $PORT"}
    assert resolved(app_folder(tmp_path, "none", **everything)) is None  # server-less


def test_python_mains_and_unknown_ones(tmp_path: Path) -> None:
    script = app_folder(tmp_path, "py", bolt={"main": "server.py"})
    assert resolved(script) == {"from": "bolt.main", "python": "server.py"}
    wsgi = app_folder(tmp_path, "wsgi", bolt={"main": "app:app"})
    assert resolved(wsgi) == {"from": "bolt.main", "python": "app:app"}
    two_bins = app_folder(tmp_path, "bins", bin={"a": "a.js", "b": "b.js"})
    assert resolved(two_bins) is None  # which one? none is guessed
    with pytest.raises(BoltError) as caught:
        resolved(app_folder(tmp_path, "rb", bolt={"main": "app.rb"}))
    assert caught.value.code == 418 and "bolt.start" in caught.value.message


def test_scripts_get_node_modules_bin_on_path_and_shell_bins_run_as_themselves(tmp_path: Path) -> None:
    folder = app_folder(tmp_path, "sh", {"run.sh": "#!/bin/sh\nexec true\n"}, bin="run.sh")
    app = {"name": "sh", "path": "sh", "folder": str(folder), "command": resolved(folder)}
    assert command_argv(app) == [str(folder / "run.sh")]
    node_bin = app_folder(tmp_path, "nb", {"cli": "#!/usr/bin/env node\n"}, bin={"cli": "cli"})
    node_app = {"name": "nb", "path": "nb", "folder": str(node_bin), "command": resolved(node_bin)}
    assert command_argv(node_app) == ["node", "cli"]


EXPORTS = {
    "express-like": ("app.js", "module.exports = (req, res) => res.end('handler ' + process.env.BOLT_CHILD_PROC);"),
    "server": ("app.js", "const http = require('http');\n"
                         "module.exports = http.createServer((req, res) => res.end('server export'));"),
    "esm": ("app.mjs", "export default (req, res) => res.end('esm default');"),
}


@requires_tool(NODE, "node is needed for the launcher")
@pytest.mark.parametrize("shape", sorted(EXPORTS))
async def test_the_launcher_listens_for_an_exported_app(tmp_path: Path, shape: str) -> None:
    main, code = EXPORTS[shape]
    app_folder(tmp_path / "repo", shape, {main: code}, bolt={"main": main})
    expected = {"express-like": "handler true", "server": "server export", "esm": "esm default"}[shape]
    async with running_host(tmp_path / "data", port_range=private_port_range(), local_repo=tmp_path / "repo") as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": shape})).status_code == 201
        async with app_started(bolt.admin, shape):
            page = await bolt.admin.get(f"/x/{shape}/")
            assert page.status_code == 200 and page.text == expected


@requires_tool(NODE, "node is needed for the launcher")
async def test_a_module_that_listens_itself_is_left_alone(tmp_path: Path) -> None:
    """hello-node listens on $PORT by itself; the launcher must not listen a second time."""
    async with running_host(tmp_path / "data", port_range=private_port_range()) as bolt:
        app = (await bolt.admin.post("/api/apps/local", json={"path": "hello-node"})).json()["body"]
        assert app["command"] == {"from": "bolt.main", "node": "server.js"}
        async with app_started(bolt.admin, "hello-node") as context:
            info = (await bolt.admin.get("/x/hello-node/api/info")).json()
            assert info["pid"] == context["pid"]
        log = (bolt.host.settings.data_dir / "logs" / "apps" / "hello-node.log").read_text()
        assert "launcher: listening" not in log and "EADDRINUSE" not in log
