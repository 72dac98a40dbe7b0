"""A reinstall or upgrade with the same npm dependencies reuses the installed node_modules (issue 13).

The host's installs go through a real Verdaccio whose uplink is the machine's npm registry
(``ms`` comes through it); the trees compared are real folders npm wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services.npm_reuse import inputs_key, reusable_tree
from bolt_host.services.tree_copies import TreeChanged, copy_verified, tree_digest
from bolt_host.testing import running_host
from tests.helpers import app_started, private_port_range, requires_tool
from tests.test_real_apps import upstream_registry
from tests.test_verdaccio import NODE, NPM, npm_env, verdaccio_running

pytestmark = [requires_tool(NODE and NPM, "node and npm are needed for npm apps"), pytest.mark.timeout(300)]

SERVER = """const ms = require("ms");
require("http").createServer((req, res) => res.end(ms(7200000) + " from " + require("./package.json").version))
  .listen(Number(process.env.PORT), "127.0.0.1");
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with verdaccio_running(tmp_path_factory.mktemp("verdaccio-reuse"), uplink=upstream_registry()) as url:
        yield url


def write_app(folder: Path, version: str, dependencies: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "reuse-demo", "version": version, "dependencies": dependencies, "bolt": {"main": "index.js"}}
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    (folder / "index.js").write_text(SERVER)


async def install(admin: Any, **extra: Any) -> dict[str, Any]:
    answer = await admin.post("/api/apps/local", json={"path": "reuse-demo", "upgrade": True, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()["body"]


def ms_version(app: dict[str, Any]) -> str:
    return json.loads((Path(app["folder"]) / "node_modules" / "ms" / "package.json").read_text())["version"]


async def test_same_dependencies_reuse_the_tree_and_anything_else_runs_npm(registry: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = repo / "reuse-demo"
    repo.mkdir()
    repo.chmod(0o755)
    write_app(source, "1.0.0", {"ms": "2.1.3"})
    settings = {"port_range": private_port_range(), "registry": registry, "local_repo": repo}
    async with running_host(tmp_path / "data", **settings) as bolt:
        first = await install(bolt.admin)
        assert first["dependenciesReused"] == [] and ms_version(first) == "2.1.3"

        write_app(source, "2.0.0", {"ms": "2.1.3"})  # new code, same dependencies
        second = await install(bolt.admin)
        assert second["dependenciesReused"] == ["npm"] and ms_version(second) == "2.1.3"
        async with app_started(bolt.admin, "reuse-demo"):
            page = await bolt.admin.get("/x/reuse-demo/")
            assert page.status_code == 200 and page.text == "2h from 2.0.0"  # the copied tree works
        await bolt.admin.post("/api/users", json={"name": "viewer", "password": "viewer-password"})
        async with bolt.client_as("viewer", "viewer-password") as viewer:
            public = (await viewer.get("/api/apps/reuse-demo")).json()["body"]
        assert "npmTree" in second and "npmTree" not in public  # the host's own bookkeeping, for admins only

        # A tree changed since its install is not carried over: npm installs a clean one.
        planted = Path(second["folder"]) / "node_modules" / "ms" / "index.js"
        planted.write_text(planted.read_text() + "\nglobalThis.tampered = true;\n")
        third = await install(bolt.admin)
        assert third["dependenciesReused"] == []
        assert "tampered" not in (Path(third["folder"]) / "node_modules" / "ms" / "index.js").read_text()

        write_app(source, "3.0.0", {"ms": "2.1.2"})  # a changed dependency set goes through npm
        fourth = await install(bolt.admin)
        assert fourth["dependenciesReused"] == [] and ms_version(fourth) == "2.1.2"

        granted = {"installScripts": True}  # asked for and granted: scripts run, so npm always runs
        write_app(source, "4.0.0", {"ms": "2.1.2"})
        manifest = json.loads((source / "package.json").read_text())
        (source / "package.json").write_text(json.dumps({**manifest, "bolt": {"main": "index.js", **granted}}))
        fifth = await install(bolt.admin, **granted)
        assert fifth["installScriptsRun"] is True and fifth["dependenciesReused"] == []
        write_app(source, "5.0.0", {"ms": "2.1.2"})  # scripts no longer asked: they ran for the installed tree
        sixth = await install(bolt.admin)
        assert sixth["installScriptsRun"] is False and sixth["dependenciesReused"] == []
        assert (await install(bolt.admin))["dependenciesReused"] == ["npm"]  # a plain reinstall of that


async def test_a_lockfile_install_is_reused_until_the_lockfile_changes(registry: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = repo / "reuse-demo"
    repo.mkdir()
    repo.chmod(0o755)

    def locked(version: str, ms: str) -> None:
        write_app(source, version, {"ms": ms})
        subprocess.run(
            [str(NPM), "install", "--package-lock-only", "--registry", registry, "--ignore-scripts"],
            cwd=source,
            env=npm_env(tmp_path),
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert (source / "package-lock.json").is_file()

    locked("1.0.0", "^2.1.0")
    settings = {"port_range": private_port_range(), "registry": registry, "local_repo": repo}
    async with running_host(tmp_path / "data", **settings) as bolt:
        assert (await install(bolt.admin))["dependenciesReused"] == []  # npm ci
        assert (await install(bolt.admin))["dependenciesReused"] == ["npm"]
        lock = json.loads((source / "package-lock.json").read_text())
        lock["packages"][""]["license"] = "MIT"  # the same package.json, a different lockfile
        (source / "package-lock.json").write_text(json.dumps(lock, indent=2))
        assert (await install(bolt.admin))["dependenciesReused"] == []


def make_tree(root: Path) -> Path:
    tree = root / "node_modules"
    (tree / "a" / "lib").mkdir(parents=True)
    (tree / "a" / "lib" / "index.js").write_text("module.exports = 1;\n")
    (tree / ".bin").mkdir()
    (tree / "a" / "cli.js").write_text("#!/usr/bin/env node\n")
    (tree / "a" / "cli.js").chmod(0o755)
    os.symlink("../a/cli.js", tree / ".bin" / "a")
    return tree


def test_a_verified_copy_is_the_same_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "old")
    copy = tmp_path / "new" / "node_modules"
    copy.parent.mkdir()
    copy_verified(tree, copy, tree_digest(tree))
    assert tree_digest(copy) == tree_digest(tree)
    assert os.readlink(copy / ".bin" / "a") == "../a/cli.js" and (copy / ".bin" / "a").read_text().startswith("#!")
    assert os.access(copy / "a" / "cli.js", os.X_OK) and not os.access(copy / "a" / "lib" / "index.js", os.X_OK)


@pytest.mark.parametrize("change", ["content", "mode", "extra", "escaping link"])
def test_a_changed_tree_is_refused_and_nothing_is_left(tmp_path: Path, change: str) -> None:
    tree = make_tree(tmp_path / "old")
    recorded = tree_digest(tree) if change != "escaping link" else "any"
    if change == "content":
        (tree / "a" / "lib" / "index.js").write_text("module.exports = 2;\n")
    elif change == "mode":
        (tree / "a" / "lib" / "index.js").chmod(0o755)
    elif change == "extra":
        (tree / "a" / "lib" / "extra.js").write_text("")
    else:
        os.symlink("../../../etc", tree / "a" / "outside")
    copy = tmp_path / "new" / "node_modules"
    copy.parent.mkdir()
    with pytest.raises(TreeChanged):
        copy_verified(tree, copy, recorded)
    assert not copy.exists()


def test_the_inputs_key_follows_what_npm_resolves_from(tmp_path: Path) -> None:
    manifest: dict[str, Any] = {"name": "x", "version": "1.0.0", "dependencies": {"ms": "2.1.3"}}

    def key_of(changes: dict[str, Any] | None = None, registry: str | None = "http://r/", scripts: bool = False) -> Any:
        return inputs_key(tmp_path, {**manifest, **(changes or {})}, registry=registry, run_scripts=scripts)

    key = key_of()
    assert key is not None
    assert key_of({"version": "2.0.0", "bolt": {}}, registry="http://r") == key  # the package's own fields
    assert key_of(registry="http://other/") != key
    assert key_of({"dependencies": {"ms": "2.1.2"}}) != key
    assert key_of(scripts=True) is None
    assert key_of({"dependencies": {"lib": "file:./lib"}}) is None
    assert key_of({"dependencies": {"lib": "~/lib"}}) is None
    assert key_of({"dependencies": {"union": "~0.5.0"}}) is not None  # a range, not a home folder
    assert key_of({"workspaces": ["packages/*"]}) is None
    (tmp_path / "package-lock.json").write_text("{}")
    locked = key_of()
    assert locked not in {None, key}
    (tmp_path / "package-lock.json").write_text('{"lockfileVersion": 3}')
    assert key_of() not in {None, key, locked}
    (tmp_path / ".npmrc").write_text("omit=optional\n")
    assert key_of() not in {None, key, locked}

    folder = tmp_path / "installed"
    (folder / "node_modules").mkdir(parents=True)
    previous = {"folder": str(folder), "installScriptsRun": False, "npmTree": {"inputs": key, "digest": "d"}}
    assert reusable_tree(previous, key) == folder / "node_modules"
    assert reusable_tree(previous, locked) is None
    assert reusable_tree({**previous, "installScriptsRun": True}, key) is None
    assert reusable_tree({**previous, "npmTree": None}, key) is None
