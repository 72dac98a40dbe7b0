"""RegistryClient against the real Verdaccio registry, started on loopback by the test.

Verdaccio is installed once with npm into a cache folder that persists between
runs (``<repo>/.cache/verdaccio``, or ``$BOLT_TEST_CACHE/verdaccio``).  It runs
with no uplinks, so it never talks to the internet; packages are published with
the real ``npm publish``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bolt_host.services.extract import safe_extract
from bolt_host.services.registry import RegistryClient, RegistryError
from tests.helpers import requires_tool

NODE = shutil.which("node")
NPM = shutil.which("npm")
REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 10 * 1024 * 1024
USER, PASSWORD = "bolt-tester", "not-a-real-secret-1"
PRIVATE = "@bolt-private/secret-app"

pytestmark = [
    requires_tool(NODE and NPM, "node and npm are needed to run Verdaccio"),
    pytest.mark.timeout(300),
]

# node-fetch@cjs (a dependency of verdaccio-audit) names a dist-tag that some
# registry mirrors do not carry; pinning it keeps the install working everywhere.
INSTALL_MANIFEST = {
    "name": "bolt-test-verdaccio",
    "private": True,
    "dependencies": {"verdaccio": "^6"},
    "overrides": {"verdaccio-audit": {"node-fetch": "2.7.0"}},
}


@dataclass
class Verdaccio:
    url: str
    token: str
    storage: Path


def cache_root() -> Path:
    base = os.environ.get("BOLT_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "verdaccio"


def npm_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env.update(
        npm_config_cache=str(home / "npm-cache"),
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    return env


def ensure_verdaccio(root: Path, tmp: Path) -> Path:
    """Install Verdaccio into ``root`` unless it is already there; return its entry script."""
    root.mkdir(parents=True, exist_ok=True)
    entry = root / "node_modules" / "verdaccio" / "bin" / "verdaccio"
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not install at once
        if entry.is_file():
            return entry
        (root / "package.json").write_text(json.dumps(INSTALL_MANIFEST, indent=2))
        done = subprocess.run(
            [str(NPM), "install", "--prefix", str(root), "--no-audit", "--no-fund", "--loglevel=error"],
            env={**npm_env(tmp), "npm_config_cache": str(root / ".npm-cache")},
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 0 or not entry.is_file():
            pytest.fail(f"npm install verdaccio@6 failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return entry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(home: Path, port: int, uplink: str | None = None) -> Path:
    """Verdaccio's config; with ``uplink`` (a registry URL) unscoped packages it lacks come from there."""
    uplinks = f"{{npmjs: {{url: '{uplink}', timeout: 60s, maxage: 30m}}}}" if uplink else "{}"
    proxy = "\n    proxy: npmjs" if uplink else ""
    config = f"""
storage: {home / "storage"}
auth:
  htpasswd:
    file: {home / "htpasswd"}
    max_users: 10
uplinks: {uplinks}
packages:
  '@bolt-private/*':
    access: $authenticated
    publish: $authenticated
  '@bolt-test/*':
    access: $all
    publish: $authenticated
  '**':
    access: $all
    publish: $authenticated{proxy}
listen: 127.0.0.1:{port}
max_body_size: 20mb
web:
  enable: false
log: {{type: stdout, format: pretty, level: warn}}
"""
    path = home / "config.yaml"
    path.write_text(config)
    return path


def wait_ready(proc: subprocess.Popen, url: str, log: Path, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ping", timeout=2).status_code == 200:
                return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)  # waits on the process: returns early only if it died
            pytest.fail(f"Verdaccio exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    pytest.fail(f"Verdaccio did not answer /-/ping within {deadline_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def create_user(url: str) -> str:
    body = {"name": USER, "password": PASSWORD, "type": "user", "roles": []}
    resp = httpx.put(f"{url}/-/user/org.couchdb.user:{USER}", json=body, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def make_package(root: Path, name: str, version: str, readme: str | None = None, **extra: object) -> Path:
    folder = root / f"{name.replace('/', '__')}-{version}"
    folder.mkdir(parents=True)
    manifest = {
        "name": name,
        "version": version,
        "description": f"sample {name}",
        "keywords": ["bolt-app", "sample"],
        "license": "MIT",
        "bolt": {"main": "server.py", "displayName": name},
        **extra,
    }
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    (folder / "server.py").write_text("print('hello from verdaccio')\n")
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def publish(home: Path, url: str, token: str, folder: Path, tag: str = "latest") -> None:
    npmrc = home / "npmrc"
    host = url.removeprefix("http:")
    npmrc.write_text(f"registry={url}/\n{host}/:_authToken={token}\n")
    done = subprocess.run(
        [str(NPM), "publish", "--registry", f"{url}/", "--userconfig", str(npmrc), "--tag", tag],
        cwd=folder,
        env=npm_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"npm publish failed:\n{done.stdout}\n{done.stderr}"


@contextlib.contextmanager
def verdaccio_running(home: Path, uplink: str | None = None) -> Iterator[str]:
    """A Verdaccio on loopback with its storage under ``home`` (and ``uplink``, a registry URL,
    for unscoped packages it lacks); yields its URL and stops it, by its pid, at the end."""
    entry = ensure_verdaccio(cache_root(), home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "verdaccio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(NODE), str(entry), "--config", str(write_config(home, port, uplink=uplink))],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=npm_env(home),
        )
    try:
        wait_ready(proc, url, log)
        yield url
    finally:
        stop(proc)
    assert proc.poll() is not None


@pytest.fixture(scope="module")
def verdaccio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdaccio]:
    home = tmp_path_factory.mktemp("verdaccio")
    with verdaccio_running(home) as url:
        token = create_user(url)
        src = home / "src"
        publish(home, url, token, make_package(src, "bolt-verdaccio-hello", "1.0.0", "# Hello v1\n"))
        publish(home, url, token, make_package(src, "bolt-verdaccio-hello", "2.0.0-beta.1"), tag="next")
        # Verdaccio keeps only the readme of the last publish (whatever its tag) and strips
        # readmes from version documents, so the readme test needs "latest" published last.
        publish(home, url, token, make_package(src, "bolt-verdaccio-hello", "1.1.0", "# Hello\n\nFrom Verdaccio.\n"))
        publish(home, url, token, make_package(src, PRIVATE, "0.2.0"))
        publish(home, url, token, make_package(src, "bolt-verdaccio-tamper", "1.0.0", "# t\n"))
        yield Verdaccio(url=url, token=token, storage=home / "storage")


@pytest.fixture
async def client(verdaccio: Verdaccio, tmp_path: Path):
    async with RegistryClient(verdaccio.url, tmp_path / "cache", max_bytes=MAX_BYTES, token=verdaccio.token) as c:
        yield c


async def test_packument_and_manifest(client: RegistryClient) -> None:
    doc = await client.packument("bolt-verdaccio-hello")
    assert doc["dist-tags"] == {"latest": "1.1.0", "next": "2.0.0-beta.1"}
    assert set(doc["versions"]) == {"1.0.0", "1.1.0", "2.0.0-beta.1"}
    latest = await client.manifest("bolt-verdaccio-hello")
    assert latest["version"] == "1.1.0"
    assert latest["bolt"] == {"main": "server.py", "displayName": "bolt-verdaccio-hello"}
    assert latest["keywords"] == ["bolt-app", "sample"]
    assert (await client.manifest("bolt-verdaccio-hello", "next"))["version"] == "2.0.0-beta.1"
    assert (await client.manifest("bolt-verdaccio-hello", "1.0.0"))["version"] == "1.0.0"
    with pytest.raises(RegistryError) as caught:
        await client.manifest("bolt-verdaccio-hello", "9.9.9")
    assert caught.value.kind == "not_found" and "1.1.0" in str(caught.value)


async def test_download_with_integrity(client: RegistryClient, tmp_path: Path) -> None:
    meta = await client.manifest("bolt-verdaccio-hello")
    path = await client.download("bolt-verdaccio-hello", "1.1.0")
    digest = base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
    assert meta["dist"]["integrity"] == f"sha512-{digest}"
    root = safe_extract(path, tmp_path / "staging")
    assert root.name == "package"
    assert json.loads((root / "package.json").read_text())["version"] == "1.1.0"
    assert (root / "server.py").is_file()


async def test_readme(client: RegistryClient) -> None:
    assert "From Verdaccio." in await client.readme("bolt-verdaccio-hello")
    with pytest.raises(RegistryError) as caught:
        await client.readme(PRIVATE)  # Verdaccio stores "ERROR: No README data found!"
    assert caught.value.kind == "readme"


async def test_search_by_keyword(verdaccio: Verdaccio, client: RegistryClient, tmp_path: Path) -> None:
    names = {p["name"] for p in await client.search_keyword("bolt-app")}
    assert names == {"bolt-verdaccio-hello", "bolt-verdaccio-tamper", PRIVATE}
    async with RegistryClient(verdaccio.url, tmp_path / "anon", max_bytes=MAX_BYTES) as anonymous:
        public = {p["name"] for p in await anonymous.search_keyword("bolt-app")}
    assert public == {"bolt-verdaccio-hello", "bolt-verdaccio-tamper"}


async def test_private_scope_needs_the_token(verdaccio: Verdaccio, client: RegistryClient, tmp_path: Path) -> None:
    path = await client.download(PRIVATE, "0.2.0")
    assert path.name == "@bolt-private+secret-app@0.2.0.tgz"
    async with RegistryClient(verdaccio.url, tmp_path / "anon", max_bytes=MAX_BYTES) as anonymous:
        with pytest.raises(RegistryError) as caught:
            await anonymous.packument(PRIVATE)
    assert caught.value.kind == "package"
    assert "refused access" in str(caught.value)
    assert verdaccio.token not in str(caught.value)


async def test_tampered_storage_is_caught(verdaccio: Verdaccio, client: RegistryClient, tmp_path: Path) -> None:
    stored = verdaccio.storage / "bolt-verdaccio-tamper" / "bolt-verdaccio-tamper-1.0.0.tgz"
    assert stored.is_file()
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(RegistryError) as caught:
        await client.download("bolt-verdaccio-tamper", "1.0.0")
    assert caught.value.kind == "integrity"
    assert list((tmp_path / "cache").iterdir()) == []


async def test_sample_apps_published_with_npm_install_through_the_api(
    verdaccio: Verdaccio, tmp_path: Path
) -> None:
    """Two sample apps go through `npm publish` into Verdaccio and come back through POST /api/apps."""
    import shutil

    from bolt_host.config import BUNDLED_LOCAL_REPO
    from bolt_host.testing import running_host

    home = tmp_path / "npm-home"
    home.mkdir()
    for sample in ("hello-web", "notes"):
        folder = tmp_path / "src" / sample
        shutil.copytree(BUNDLED_LOCAL_REPO / sample, folder)
        manifest = json.loads((folder / "package.json").read_text())
        manifest["name"] = f"bolt-sample-{sample}"
        (folder / "package.json").write_text(json.dumps(manifest))
        publish(home, verdaccio.url, verdaccio.token, folder)
    async with running_host(tmp_path / "data", registry=verdaccio.url) as bolt:
        for sample in ("hello-web", "notes"):
            response = await bolt.admin.post("/api/apps", json={"name": f"bolt-sample-{sample}"})
            assert response.status_code == 201, response.text
            app = response.json()["body"]
            assert app["source"]["type"] == "registry" and app["version"] == "1.0.0"
            assert (bolt.host.settings.data_dir / "apps" / app["name"] / "server.py").is_file()
        preview = await bolt.admin.post("/api/apps/package", json={"name": "bolt-sample-notes"})
        assert preview.json()["body"]["bolt"]["displayName"] == "Notes"
