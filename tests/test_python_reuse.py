"""A reinstall or upgrade with the same Python requirements reuses the installed venv (issue 13).

Real uv, real venvs, packages from a local wheelhouse named by the machine's pip
configuration (no network): the host is in this process, so ``PIP_CONFIG_FILE`` is its.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services.python_env import venv_python
from bolt_host.services.python_reuse import venv_inputs_key
from bolt_host.services.tree_copies import TreeChanged, copy_verified, tree_digest
from bolt_host.testing import running_host
from tests.helpers import app_started, make_wheel, only_from_wheelhouse, private_port_range

pytestmark = pytest.mark.timeout(300)

SERVER = """import http.server, os, boltreusepkg
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = boltreusepkg.VALUE.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "wheelhouse"
    make_wheel(folder, "boltreusepkg", "1.0", "VALUE = 'one'\n")
    make_wheel(folder, "boltreusepkg", "2.0", "VALUE = 'two'\n")
    only_from_wheelhouse(folder, tmp_path / "pip.conf", monkeypatch)
    return folder


def write_app(folder: Path, version: str, requirements: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "pyreuse", "version": version, "bolt": {"main": "main.py"}}
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(SERVER)
    (folder / "requirements.txt").write_text(requirements)


async def install(admin: Any) -> dict[str, Any]:
    answer = await admin.post("/api/apps/local", json={"path": "pyreuse", "upgrade": True})
    assert answer.status_code == 201, answer.text
    return answer.json()["body"]


def site_packages(app: dict[str, Any]) -> Path:
    return next((Path(app["folder"]) / ".venv" / "lib").glob("python*/site-packages"))


async def test_same_requirements_reuse_the_venv_and_anything_else_runs_uv(wheelhouse: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = repo / "pyreuse"
    write_app(source, "1.0.0", "boltreusepkg==1.0\n")
    repo.chmod(0o755)
    settings = {"port_range": private_port_range(), "local_repo": repo}
    async with running_host(tmp_path / "data", **settings) as bolt:
        first = await install(bolt.admin)
        assert first["dependenciesReused"] == [] and first["venvTree"] is not None
        # The app's interpreter writes bytecode caches while it runs: they are no change.
        writes_caches = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([first["python"], "-c", "import boltreusepkg"], env=writes_caches, check=True, timeout=60)
        assert list(site_packages(first).rglob("__pycache__/*.pyc"))

        write_app(source, "2.0.0", "boltreusepkg==1.0\n")
        second = await install(bolt.admin)
        assert second["dependenciesReused"] == ["uv"]
        assert second["python"] == str(venv_python(Path(second["folder"])))
        async with app_started(bolt.admin, "pyreuse"):
            page = await bolt.admin.get("/x/pyreuse/")
            assert page.status_code == 200 and page.text == "one"  # the copied venv works

        planted = site_packages(second) / "boltreusepkg" / "__init__.py"
        planted.write_text("VALUE = 'tampered'\n")
        third = await install(bolt.admin)
        assert third["dependenciesReused"] == []
        assert (site_packages(third) / "boltreusepkg" / "__init__.py").read_text() == "VALUE = 'one'\n"

        write_app(source, "3.0.0", "boltreusepkg==2.0\n")  # changed requirements go through uv
        fourth = await install(bolt.admin)
        assert fourth["dependenciesReused"] == []
        shown = subprocess.run(
            [fourth["python"], "-c", "import boltreusepkg; print(boltreusepkg.VALUE)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert shown.stdout.strip() == "two"


def test_only_plain_requirements_are_keyed(tmp_path: Path) -> None:
    manifest = {"name": "x", "version": "1.0.0", "bolt": {"main": "main.py"}}
    base = Path(os.path.realpath("/proc/self/exe"))

    def key_of(requirements: str) -> str | None:
        (tmp_path / "requirements.txt").write_text(requirements)
        return venv_inputs_key(tmp_path, manifest, base=base, environ={"PIP_CONFIG_FILE": os.devnull})

    plain = key_of("# pinned\nbottle==0.12.25\nrequests[socks] >=2.31 ; python_version >= '3.8'  # why\n\n")
    assert plain is not None and key_of("bottle==0.12.25\n") not in {None, plain}
    for refused in (
        "-r other.txt\n",
        "-e .\n",
        "./lib\n",
        "pkg @ file:///srv/pkg\n",
        "--index-url http://x/\n",
        "https://host/pkg.whl\n",
        "bottle==0.12.25 \\\n  --hash=sha256:00\n",
    ):
        assert key_of(refused) is None, refused


def test_a_venv_copy_keeps_its_absolute_interpreter_link_and_leaves_caches_out(tmp_path: Path) -> None:
    venv = tmp_path / "old" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / "__pycache__").mkdir(parents=True)
    (venv / "lib" / "mod.py").write_text("X = 1\n")
    (venv / "lib" / "__pycache__" / "mod.pyc").write_bytes(b"cache")
    os.symlink("/usr/bin/python3", venv / "bin" / "python")
    with pytest.raises(TreeChanged):  # only where absolute links are expected
        tree_digest(venv)
    recorded = tree_digest(venv, skip=("__pycache__",), absolute_links=True)
    (venv / "lib" / "__pycache__" / "mod.pyc").write_bytes(b"changed cache")
    copy = tmp_path / "new" / ".venv"
    copy.parent.mkdir()
    copy_verified(venv, copy, recorded, skip=("__pycache__",), absolute_links=True)
    assert os.readlink(copy / "bin" / "python") == "/usr/bin/python3"
    assert (copy / "lib" / "mod.py").read_text() == "X = 1\n" and not (copy / "lib" / "__pycache__").exists()
