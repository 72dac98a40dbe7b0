"""Real npm apps through the real npm client and a real registry (issue 13).

One Verdaccio for the module, its uplink the machine's npm registry (``npm config get
registry``), so ``express``, ``http-server`` and their trees come through it as they would
from any registry the host is pointed at.  Test packages live in the ``@bolt-test`` scope,
which Verdaccio never looks up upstream.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bolt_host.testing import running_host
from tests.helpers import app_started, async_wait_until, private_port_range, requires_tool
from tests.test_verdaccio import NODE, NPM, Verdaccio, create_user, publish, verdaccio_running

pytestmark = [
    requires_tool(NODE and NPM, "node and npm are needed for npm apps"),
    pytest.mark.timeout(300),
]

EXPRESS_APP = """const express = require("express");
const app = express();
app.get("/", (req, res) => res.send("express says hello from " + require("./package.json").version));
module.exports = app;
"""


def upstream_registry() -> str:
    done = subprocess.run([str(NPM), "config", "get", "registry"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "https://registry.npmjs.org/"


def package(root: Path, name: str, version: str, files: dict[str, str], **manifest: object) -> Path:
    folder = root / f"{name.replace('/', '__')}-{version}"
    folder.mkdir(parents=True)
    body = {"name": name, "version": version, "license": "MIT", "keywords": ["bolt-app"], **manifest}
    (folder / "package.json").write_text(json.dumps(body, indent=2))
    for relative, text in files.items():
        (folder / relative).write_text(text)
    return folder


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdaccio]:
    home = tmp_path_factory.mktemp("verdaccio-proxy")
    with verdaccio_running(home, uplink=upstream_registry()) as url:
        token = create_user(url)
        src = home / "src"
        express = {"express": "^4.21.0"}
        publish(home, url, token, package(src, "@bolt-test/express-hello", "1.0.0", {"app.js": EXPRESS_APP},
                                          dependencies=express, bolt={"main": "app.js"}))
        broken = "throw new Error('version 2 is broken on purpose');\n"
        publish(home, url, token, package(src, "@bolt-test/express-hello", "2.0.0", {"app.js": broken},
                                          dependencies=express, bolt={"main": "app.js"}))
        marker = "require('fs').writeFileSync('postinstall-ran', 'yes')"
        publish(home, url, token, package(src, "@bolt-test/scripted", "1.0.0", {}, dependencies={"ms": "2.1.3"},
                                          scripts={"postinstall": f'node -e "{marker}"'},
                                          bolt={"installScripts": True}))
        publish(home, url, token, package(src, "@bolt-test/needs-missing", "1.0.0", {"index.js": ""},
                                          dependencies={"@bolt-test/does-not-exist": "^1.0.0"},
                                          bolt={"main": "index.js"}))
        pid_file = home / "hanging.pid"  # home is storage's parent: the test finds it there
        home.chmod(0o1777)  # the install script runs as the app's own uid (issue 17): it must write its pid here
        hang = f"require('fs').writeFileSync('{pid_file}', String(process.pid)); setInterval(() => {{}}, 1000)"
        publish(home, url, token, package(src, "@bolt-test/hangs", "1.0.0", {}, dependencies={"ms": "2.1.3"},
                                          scripts={"postinstall": f'node -e "{hang}"'},
                                          bolt={"installScripts": True}))
        yield Verdaccio(url=url, token=token, storage=home / "storage")


async def test_a_bolt_js_module_exporting_express_runs_and_a_broken_upgrade_rolls_back(
    proxy: Verdaccio, tmp_path: Path
) -> None:
    async with running_host(tmp_path / "data", port_range=private_port_range(), registry=proxy.url) as bolt:
        preview = (await bolt.admin.post("/api/apps/package", json={"name": "@bolt-test/express-hello"})).json()
        assert preview["body"]["_install"]["dependencies"] == 1
        assert preview["body"]["_install"]["startFrom"] == "bolt.main"
        installed = await bolt.admin.post("/api/apps", json={"name": "@bolt-test/express-hello", "version": "1.0.0"})
        assert installed.status_code == 201, installed.text
        app = installed.json()["body"]
        assert app["command"] == {"from": "bolt.main", "node": "app.js"} and app["dependencies"] == 1
        folder = Path(app["folder"])
        assert (folder / "node_modules" / "express" / "package.json").is_file()
        # npm's cache, reused by later installs: the app's own when npm ran as the app (issue 17)
        isolation = bolt.host.isolation
        cache = isolation.home_of(app["name"]) / ".cache" if isolation else bolt.host.settings.data_dir / "cache"
        assert (cache / "npm").is_dir()
        if isolation is not None and isolation.mode == "uid":  # npm itself ran as the app's uid
            assert (cache / "npm" / "_cacache").stat().st_uid == isolation.identities.known(app["name"])
            assert (folder / "node_modules").stat().st_uid == 0  # and the code is root's again

        started = await bolt.admin.post("/api/apps/start", json={"name": app["name"]})
        assert started.status_code == 200, started.text
        old_pid = started.json()["body"]["pid"]
        page = await bolt.admin.get(f"/x/{app['name']}/")
        assert page.status_code == 200 and page.text == "express says hello from 1.0.0"

        upgrade = await bolt.admin.post("/api/apps", json={"name": "@bolt-test/express-hello", "upgrade": True})
        assert upgrade.status_code == 500, upgrade.text
        message = upgrade.json()["error"]["message"]
        assert "did not start" in message and "rolled back to 1.0.0, which kept serving" in message
        assert "broken on purpose" in message  # the new version's own words, from its log
        record = (await bolt.admin.get(f"/api/apps/{app['name']}")).json()["body"]
        assert record["version"] == "1.0.0"
        assert json.loads((folder / "package.json").read_text())["version"] == "1.0.0"
        assert "broken" not in (folder / "app.js").read_text()
        context = bolt.host.supervisor.context(app["name"])
        assert context["status"] == "running" and context["pid"] == old_pid  # issue 21: it never stopped
        again = await bolt.admin.get(f"/x/{app['name']}/")
        assert again.status_code == 200 and again.text == "express says hello from 1.0.0"
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # nothing left aside
        await bolt.admin.post("/api/apps/stop", json={"name": app["name"]})


async def test_an_npm_package_starts_through_its_start_script(proxy: Verdaccio, tmp_path: Path) -> None:
    """What a stranger tries first: POST /api/apps {"name": "http-server"}, start, open."""
    async with running_host(tmp_path / "data", port_range=private_port_range(), registry=proxy.url) as bolt:
        installed = await bolt.admin.post("/api/apps", json={"name": "http-server", "version": "14.1.1"})
        assert installed.status_code == 201, installed.text
        app = installed.json()["body"]
        assert app["command"] == {"from": "scripts.start", "shell": "node ./bin/http-server"}
        assert app["dependencies"] == 13
        assert (Path(app["folder"]) / "node_modules" / "union").is_dir()
        assert not (Path(app["folder"]) / "node_modules" / "tap").exists()  # a devDependency
        shipped = json.loads((Path(app["folder"]) / "package.json").read_text())
        assert "tap" in shipped["devDependencies"]  # hidden from npm while it ran, then put back
        async with app_started(bolt.admin, "http-server"):
            listing = await bolt.admin.get("/x/http-server/")
            assert listing.status_code == 200 and "package.json" in listing.text


async def test_install_scripts_run_only_when_granted(proxy: Verdaccio, tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", port_range=private_port_range(), registry=proxy.url) as bolt:
        preview = (await bolt.admin.post("/api/apps/package", json={"name": "@bolt-test/scripted"})).json()["body"]
        assert preview["_install"]["installScripts"] is True and preview["_install"]["serverless"] is True
        plain = await bolt.admin.post("/api/apps", json={"name": "@bolt-test/scripted"})
        assert plain.status_code == 201, plain.text
        folder = Path(plain.json()["body"]["folder"])
        assert (folder / "node_modules" / "ms").is_dir()
        assert not (folder / "postinstall-ran").exists()
        assert plain.json()["body"]["installScriptsRun"] is False

        granted = await bolt.admin.post(
            "/api/apps", json={"name": "@bolt-test/scripted", "upgrade": True, "installScripts": True}
        )
        assert granted.status_code == 201, granted.text
        assert (folder / "postinstall-ran").read_text() == "yes"
        assert granted.json()["body"]["installScriptsRun"] is True


async def test_a_missing_dependency_fails_clearly_and_installs_nothing(proxy: Verdaccio, tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", port_range=private_port_range(), registry=proxy.url) as bolt:
        task = await bolt.admin.post("/api/apps/install-task", json={"name": "@bolt-test/needs-missing"})
        assert task.status_code == 201, task.text
        record = await bolt.host.tasks.wait(task.json()["body"]["id"], timeout=240)
        assert record["status"] == "failed"
        assert "npm dependencies of @bolt-test/needs-missing failed" in record["error"]
        assert "404 Not Found" in record["error"] and "does-not-exist" in record["error"]  # npm's own words
        text, _, _ = bolt.host.tasks.read_log(record["id"])
        assert "=== installing 1 npm dependencies" in text and "npm error code E404" in text

        direct = await bolt.admin.post("/api/apps", json={"name": "@bolt-test/needs-missing"})
        assert direct.status_code == 502 and direct.json()["code"] == 415
        assert "npm's last lines:\nnpm error code E404" in direct.json()["error"]["message"]
        missing = await bolt.admin.get("/api/apps/needs-missing@bolt-test")
        assert missing.json()["code"] == 403
        assert list((bolt.host.settings.data_dir / "apps").iterdir()) == []


async def test_npm_is_killed_with_its_scripts_when_the_time_is_up(proxy: Verdaccio, tmp_path: Path) -> None:
    settings = {"registry": proxy.url, "dependency_timeout_seconds": 5, "port_range": private_port_range()}
    async with running_host(tmp_path / "data", **settings) as bolt:
        answer = await bolt.admin.post("/api/apps", json={"name": "@bolt-test/hangs", "installScripts": True})
        assert answer.status_code == 502 and answer.json()["code"] == 415
        assert "took longer than 5 s and was stopped; nothing was installed" in answer.json()["error"]["message"]
        assert_gone(int(pid_file(proxy).read_text()))
        assert list((bolt.host.settings.data_dir / "apps").iterdir()) == []


async def test_cancelling_the_install_task_kills_npm_and_its_scripts(proxy: Verdaccio, tmp_path: Path) -> None:
    pid_file(proxy).unlink(missing_ok=True)
    async with running_host(tmp_path / "data", port_range=private_port_range(), registry=proxy.url) as bolt:
        body = {"name": "@bolt-test/hangs", "installScripts": True}
        task = (await bolt.admin.post("/api/apps/install-task", json=body)).json()["body"]
        await async_wait_until(lambda: pid_file(proxy).is_file() and pid_file(proxy).read_text(), timeout=120,
                               what="the postinstall script to run")
        assert (await bolt.admin.post(f"/api/tasks/{task['id']}/cancel")).status_code == 200
        record = await bolt.host.tasks.wait(task["id"], timeout=60)
        assert record["status"] == "canceled"
        assert_gone(int(pid_file(proxy).read_text()))
        assert list((bolt.host.settings.data_dir / "apps").iterdir()) == []


def pid_file(proxy: Verdaccio) -> Path:
    return proxy.storage.parent / "hanging.pid"


def assert_gone(pid: int) -> None:
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
