"""`bolt-host registry serve DIR` as a real npm client and the host see it: a folder of app folders
and `npm pack` tarballs served read-only, with real integrity fields and dist-tags."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from tests.helpers import end_process, free_port, requires_tool, wait_until
from tests.servers import live_host

NPM = shutil.which("npm")
pytestmark = [pytest.mark.timeout(180), requires_tool(NPM, "npm is not installed")]


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BOLT_")}


def _npm_pack(source: Path, out_dir: Path, cache: Path) -> Path:
    """A tarball made by the real `npm pack` (what an author would copy into the folder)."""
    done = subprocess.run(
        [NPM, "pack", str(source), "--pack-destination", str(out_dir), "--json", "--cache", str(cache)],
        capture_output=True, text=True, timeout=120, cwd=out_dir,
    )
    assert done.returncode == 0, done.stderr
    return out_dir / json.loads(done.stdout)[0]["filename"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """hello-web 1.0.0 as a folder, 0.9.0 and 1.1.0-beta.1 (tag "next") as npm-packed tarballs, one broken tarball."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(BUNDLED_LOCAL_REPO / "hello-web", served / "hello-web")
    for version, extra in (("0.9.0", {}), ("1.1.0-beta.1", {"publishConfig": {"tag": "next"}})):
        work = tmp_path / f"work-{version}"
        shutil.copytree(BUNDLED_LOCAL_REPO / "hello-web", work)
        manifest = json.loads((work / "package.json").read_text())
        manifest.update(version=version, **extra)
        (work / "package.json").write_text(json.dumps(manifest))
        _npm_pack(work, served, tmp_path / "npm-cache")
    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w:gz") as archive:
        info = tarfile.TarInfo("package/index.js")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"//"))
    (served / "broken-1.0.0.tgz").write_bytes(broken.getvalue())
    return served


@pytest.fixture
def registry_url(folder: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "registry.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "registry", "serve", str(folder), "--port", str(port)],
        env=_environ(), stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until(lambda: _answers(url + "/-/ping") or proc.poll() is not None, timeout=30, what="registry up")
        assert proc.poll() is None, (tmp_path / "registry.log").read_text()
        yield url
    finally:
        end_process(proc)
        log.close()
    banner = (tmp_path / "registry.log").read_text()
    assert "registry serving 1 packages" in banner and "skipped broken-1.0.0.tgz" in banner, banner


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _npm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NPM, *args, "--cache", str(cwd / ".npm-cache")], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_npm_view_and_npm_pack_use_the_folder(registry_url: str, tmp_path: Path, folder: Path) -> None:
    work = tmp_path / "client"
    work.mkdir()
    viewed = _npm("view", "hello-web", "--json", "--registry", registry_url, cwd=work)
    assert viewed.returncode == 0, viewed.stderr
    info = json.loads(viewed.stdout)
    assert info["dist-tags"] == {"latest": "1.0.0", "next": "1.1.0-beta.1"}
    assert info["versions"] == ["0.9.0", "1.0.0", "1.1.0-beta.1"]
    assert info["dist"]["tarball"] == f"{registry_url}/hello-web/-/hello-web-1.0.0.tgz"

    # npm pack downloads and checks dist.integrity itself; the bytes of a served tarball are the file's
    packed = _npm("pack", "hello-web@0.9.0", "--json", "--registry", registry_url, cwd=work)
    assert packed.returncode == 0, packed.stderr
    fetched = work / json.loads(packed.stdout)[0]["filename"]
    assert fetched.read_bytes() == (folder / "hello-web-0.9.0.tgz").read_bytes()
    latest = _npm("pack", "hello-web", "--json", "--registry", registry_url, cwd=work)
    assert latest.returncode == 0, latest.stderr
    digest = hashlib.sha512((work / "hello-web-1.0.0.tgz").read_bytes()).digest()
    assert json.loads(latest.stdout)[0]["integrity"] == "sha512-" + base64.b64encode(digest).decode()
    with tarfile.open(work / "hello-web-1.0.0.tgz") as archive:
        assert "package/server.py" in archive.getnames()

    missing = _npm("view", "no-such-app", "--registry", registry_url, cwd=work)
    assert missing.returncode != 0 and "404" in missing.stderr


def test_the_registry_is_read_only_and_picks_up_new_entries(registry_url: str, folder: Path) -> None:
    for method in ("PUT", "DELETE", "POST"):
        assert httpx.request(method, f"{registry_url}/hello-web", json={}, timeout=10).status_code == 405
    assert httpx.put(f"{registry_url}/-/user/org.couchdb.user:eve", json={}, timeout=10).status_code == 405
    shutil.copytree(BUNDLED_LOCAL_REPO / "ticker", folder / "ticker")
    found = httpx.get(f"{registry_url}/-/v1/search", params={"text": "keywords:bolt-app"}, timeout=10).json()
    assert sorted(o["package"]["name"] for o in found["objects"]) == ["hello-web", "ticker"]
    assert httpx.get(f"{registry_url}/ticker/latest", timeout=10).json()["version"] == "1.0.0"


def test_a_host_installs_from_it(registry_url: str, tmp_path: Path) -> None:
    with (
        live_host(tmp_path / "data", registry=registry_url) as server,
        httpx.Client(base_url=server.url, auth=server.admin_auth, timeout=60) as admin,
    ):
        installed = admin.post("/api/apps", json={"name": "hello-web"})
        assert installed.status_code == 201, installed.text
        app = installed.json()["body"]
        assert app["version"] == "1.0.0" and app["source"]["type"] == "registry"
        pinned = admin.post("/api/apps", json={"name": "hello-web", "version": "0.9.0", "upgrade": True})
        assert pinned.status_code == 201, pinned.text
        assert pinned.json()["body"]["version"] == "0.9.0"


def test_refusals_are_one_line(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        busy = subprocess.run(
            [sys.executable, "-m", "bolt_host", "registry", "serve", str(tmp_path), "--port", str(port)],
            env=_environ(), capture_output=True, text=True, timeout=60,
        )
    finally:
        taken.close()
    assert busy.returncode == 2 and busy.stderr.strip().splitlines() == [busy.stderr.strip()], busy.stderr
    assert busy.stderr.startswith(f"Error: --port {port}")
    nowhere = subprocess.run(
        [sys.executable, "-m", "bolt_host", "registry", "serve", str(tmp_path / "nope")],
        env=_environ(), capture_output=True, text=True, timeout=60,
    )
    assert nowhere.returncode == 2 and nowhere.stderr.strip() == f"Error: FOLDER {tmp_path / 'nope'}: not a directory"
