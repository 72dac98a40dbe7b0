"""Dependency installs run as the app (issue 17's gaps): uv's venv creation and ``pip install``
get the app's uid, a cache in its own data folder, and the staged code goes back to root after;
npm gets the host's registry credentials for the install only.  Real host, real uv and npm, a
requirement whose build step probes what it can read, a real npm-protocol registry."""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from bolt_host.services.registry import RegistryClient
from bolt_host.testing import RunningHost, running_host
from tests.helpers import write_package
from tests.registry_server import RegistryServer
from tests.test_isolation import install_and_start, iso, needs_root, wait_for_line

__all__ = ["iso"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(300)

# An in-tree PEP 517 backend (no build requirements, so nothing is downloaded): building the
# wheel records who built it and whether the host's state could be read, into the package.
BACKEND = '''
import base64, hashlib, os, zipfile

def _probe():
    try:
        open(DB).read()
        read = "ALLOWED"
    except OSError as exc:
        read = "DENIED " + type(exc).__name__
    return f"BUILD_UID = {os.getuid()}\\nREAD_DB = {read!r}\\n"

def _record(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        "buildprobe.py": _probe().encode(),
        "buildprobe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: buildprobe\\nVersion: 1.0\\n",
        "buildprobe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: probe\\nRoot-Is-Purelib: true\\n"
        b"Tag: py3-none-any\\n",
    }
    record = [_record(name, data) for name, data in files.items()] + ["buildprobe-1.0.dist-info/RECORD,,"]
    name = "buildprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr("buildprobe-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
'''

APP = """
    import os, buildprobe
    print("BUILT-BY", buildprobe.BUILD_UID, "READ-DB", buildprobe.READ_DB.split()[0], flush=True)
    print("RUNS-AS", os.getuid(), flush=True)
"""


def write_python_app(folder: Path, db: Path) -> None:
    probe = folder / "buildprobe"
    probe.mkdir(parents=True)
    (probe / "backend.py").write_text(f"DB = {str(db)!r}\n" + BACKEND)
    (probe / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "buildprobe"\nversion = "1.0"\n'
    )
    (folder / "requirements.txt").write_text("./buildprobe\n")
    bolt = {"main": "app.py", "server": False, "restart": "never"}
    (folder / "package.json").write_text(json.dumps({"name": folder.name, "version": "1.0.0", "bolt": bolt}))
    (folder / "app.py").write_text(textwrap.dedent(APP))


@needs_root
async def test_uv_installs_as_the_apps_uid_with_its_own_cache_and_cannot_read_host_state(iso: RunningHost) -> None:
    data_dir = iso.host.settings.data_dir
    write_python_app(iso.host.state["test-repo"] / "pyprobe", data_dir / "db.json")
    assert (data_dir / "db.json").is_file()

    await install_and_start(iso, "pyprobe")
    app = iso.host.apps.require("pyprobe")
    uid = iso.host.isolation.identities.known("pyprobe")
    assert uid is not None and uid != 0
    log = await wait_for_line(iso, "pyprobe", "RUNS-AS")
    assert f"BUILT-BY {uid} READ-DB DENIED" in log, log  # the build ran as the app, not as root
    assert f"RUNS-AS {uid}" in log

    venv = Path(app["folder"]) / ".venv"
    assert Path(app["python"]) == venv / "bin" / "python"
    for path in (venv, venv / "pyvenv.cfg"):  # handed back: root's, the app's group may only read
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, uid), path
        assert not stat.S_IMODE(info.st_mode) & 0o022, path
    cache = data_dir / "home" / "pyprobe" / ".cache" / "uv"
    assert cache.is_dir() and cache.stat().st_uid == uid
    assert any(cache.iterdir())  # uv used it
    assert not (data_dir / "cache" / "uv").exists()  # not the host's shared cache
    assert os.access(venv / "bin" / "python", os.X_OK)


async def test_npm_gets_the_hosts_registry_credentials_only_for_the_install(tmp_path: Path) -> None:
    secret = "s3cret-registry-password"
    with RegistryServer() as registry:
        dependency = {"name": "private-dep", "version": "1.0.0", "main": "index.js"}
        registry.publish_dir(write_package(tmp_path / "dep", dependency, {"index.js": "module.exports = 42;\n"}))
        app = {"name": "uses-private", "version": "1.0.0", "dependencies": {"private-dep": "^1.0.0"},
               "bolt": {"main": "app.js", "server": False, "restart": "never"}}
        registry.publish_dir(write_package(tmp_path / "app", app, {"app.js": "console.log(require('private-dep'));\n"}))
        with_credentials = registry.url.replace("://", f"://builder:{secret}@", 1)
        async with running_host(tmp_path / "data", registry=with_credentials) as bolt:
            task = await bolt.admin.post("/api/apps/install-task", json={"name": "uses-private"})
            assert task.status_code == 201, task.text
            record = await bolt.host.tasks.wait(task.json()["body"]["id"], timeout=240)
            assert record["status"] == "succeeded", record
            task_log, _, _ = bolt.host.tasks.read_log(record["id"])
            folder = Path(bolt.host.apps.require("uses-private")["folder"])
            home = bolt.host.isolation.home_of("uses-private")

        assert (folder / "node_modules" / "private-dep" / "index.js").is_file()
        basic = "Basic " + base64.b64encode(f"builder:{secret}".encode()).decode()
        npm_requests = [
            (path, auth) for path, auth in zip(registry.paths, registry.authorizations, strict=True)
            if path.startswith("/private-dep")
        ]
        assert npm_requests and all(auth == basic for _, auth in npm_requests), npm_requests
        assert "$ npm " in task_log and secret not in task_log and basic.split()[1] not in task_log
        for place in (folder, home / ".cache"):  # neither in the app's code nor left beside npm's cache
            leftovers = [p for p in place.rglob(".npmrc*")]
            assert leftovers == [], leftovers
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert secret.encode() not in data and basic.split()[1].encode() not in data, path


async def test_a_registry_token_becomes_an_npmrc_line_scoped_to_that_registry(tmp_path: Path) -> None:
    async with RegistryClient("http://127.0.0.1:4873/npm/", tmp_path, max_bytes=1, token="tok-123") as with_token:
        assert with_token.npm_credentials() == "//127.0.0.1:4873/npm/:_authToken=tok-123\n"
    async with RegistryClient("http://127.0.0.1:4873/", tmp_path, max_bytes=1) as plain:
        assert plain.npm_credentials() is None
