"""Dependency installs run as the app (issue 17's gaps): uv's venv creation and ``pip install``
get the app's uid, a cache in its own data folder, and the staged code goes back to root after.
Real host as root, real uv, a requirement whose build step probes what it can read."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from bolt_host.testing import RunningHost
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
