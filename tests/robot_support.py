"""Helpers for the robot App Store tests: a seed-shaped client, a gated tarball server, packages.

``RobotClient`` mirrors the third-party ``AxbotClient`` (one method per curl call
of the seed), so the tests drive bolt-host exactly as a robot client would.
``GatedTarballs`` serves tarball bytes over HTTP and can hold a download half-way
until the test releases it: that is how a task is made observably slow without
any sleep in the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bolt_host import hookimpl
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.extract import pack_directory
from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.servers import LiveServer, live_host

SAMPLES = BUNDLED_LOCAL_REPO
ADMIN = ("admin", ADMIN_PASSWORD)
PACKAGE_STATUSES = {
    "not_installed", "upgradable", "up_to_date",
    "download_queueing", "downloading", "downloaded", "download_failed",
    "install_queueing", "installing", "install_failed",
    "uninstall_queueing", "uninstalling", "uninstall_failed",
}  # fmt: skip
FINISHED = {"succeeded", "failed", "canceled"}
GATE_TIMEOUT = 60.0


# ---------------------------------------------------------------- packages


def make_package(folder: Path, name: str, version: str = "1.0.0", **bolt: Any) -> Path:
    """A tiny app folder (no server unless ``bolt`` says so) carrying the ``bolt-app`` keyword."""
    app = folder / f"{name}-{version}"
    app.mkdir(parents=True)
    block = {"server": False, "displayName": name, **bolt}
    manifest = {"name": name, "version": version, "keywords": ["bolt-app"], "bolt": block}
    (app / "package.json").write_text(json.dumps(manifest, indent=2))
    (app / "README.md").write_text(f"# {name}\n")
    (app / "data.txt").write_text(f"{name} {version}\n" * 2000)  # big enough to stream in several chunks
    return app


def firmware_package(folder: Path, name: str, version: str) -> Path:
    """A copy of the sample firmware (``demo-firmware``) renamed ``name`` at ``version``."""
    target = folder / f"{name}-{version}"
    shutil.copytree(SAMPLES / "demo-firmware", target)
    manifest = json.loads((target / "package.json").read_text())
    (target / "package.json").write_text(json.dumps({**manifest, "name": name, "version": version}))
    return target


def packed(folder: Path, version: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """npm-style tarball bytes of ``folder`` (``version`` overrides package.json) and its manifest."""
    with tempfile.TemporaryDirectory(prefix="robot-pack-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(folder, copy)
        manifest = json.loads((copy / "package.json").read_text())
        if version is not None:
            manifest["version"] = version
            (copy / "package.json").write_text(json.dumps(manifest))
        return pack_directory(copy, Path(tmp) / "p.tgz").read_bytes(), manifest


# ---------------------------------------------------------------- gated tarball server


class GatedTarballs:
    """An HTTP server for tarballs; a gated file sends half its bytes, then waits for :meth:`release`."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._gates: dict[str, threading.Event] = {}
        self._arrived: dict[str, threading.Event] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gated-tarballs", daemon=True)

    def __enter__(self) -> GatedTarballs:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for gate in self._gates.values():
            gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, name: str, data: bytes, gated: bool = True) -> str:
        """Serve ``data`` at ``/<name>``; return its URL."""
        self._files[name] = data
        self._gates[name] = threading.Event()
        self._arrived[name] = threading.Event()
        if not gated:
            self._gates[name].set()
        return f"{self.url}/{name}"

    def wait_for_request(self, name: str, timeout: float = 20.0) -> None:
        """Block until a client has received the first half of ``name``."""
        if not self._arrived[name].wait(timeout):
            raise AssertionError(f"nobody downloaded {name} within {timeout} s")

    def release(self, name: str) -> None:
        self._gates[name].set()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/")
        data = self._files.get(name)
        if data is None:
            handler.send_error(404)
            return
        half = len(data) // 2
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[:half])
            handler.wfile.flush()
            self._arrived[name].set()
            self._gates[name].wait(GATE_TIMEOUT)
            handler.wfile.write(data[half:])
        except (BrokenPipeError, ConnectionResetError):
            pass


def publish_gated(
    registry: RegistryServer, tarballs: GatedTarballs, folder: Path, version: str | None = None, gated: bool = True
) -> str:
    """Publish ``folder`` on ``registry`` with its tarball served by ``tarballs``; the file's name there."""
    data, manifest = packed(folder, version)
    filename = f"{manifest['name']}-{manifest['version']}.tgz"
    url = tarballs.add(filename, data, gated=gated)
    registry.publish_tarball(manifest["name"], manifest["version"], data, {**manifest, "dist": {"tarball": url}})
    return filename


# ---------------------------------------------------------------- the client


class RobotClient:
    """The seed's curl calls, one method each (as the third-party AxbotClient wraps them)."""

    def __init__(self, base_url: str, auth: Any = ADMIN, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=base_url, auth=auth, headers=headers or {}, timeout=60.0)

    def close(self) -> None:
        self.http.close()

    def list_app_store_packages(self) -> httpx.Response:
        return self.http.get("/app_store/packages")

    def refresh_app_store(self) -> httpx.Response:
        return self.http.post("/app_store/services/refresh_store")

    def app_store_download_packages(self, packages: list[Any]) -> httpx.Response:
        return self.http.post("/app_store/services/download_packages", json={"packages": packages})

    def app_store_install_packages(self, packages: list[Any]) -> httpx.Response:
        return self.http.post("/app_store/services/install_packages", json={"packages": packages})

    def app_store_install_local_file(self, filename: str) -> httpx.Response:
        return self.http.post("/app_store/services/install_local_file", json={"filename": filename})

    def app_store_upload_local_file(self, data: bytes, filename: str = "package.tgz") -> httpx.Response:
        files = {"file": (filename, data, "application/gzip")}
        return self.http.post("/app_store/services/upload_local_file", files=files)

    def app_store_uninstall_packages(self, packages: list[Any]) -> httpx.Response:
        return self.http.post("/app_store/services/uninstall_packages", json={"packages": packages})

    def list_download_tasks(self) -> httpx.Response:
        return self.http.get("/app_store/jobs/download/tasks")

    def list_install_tasks(self) -> httpx.Response:
        return self.http.get("/app_store/jobs/install/tasks")

    def get_download_task_log(self, task_id: int, start: int | None = None, end: int | None = None) -> httpx.Response:
        return self.http.get(f"/app_store/jobs/download/tasks/{task_id}/log", params=_range(start, end))

    def get_install_task_log(self, task_id: int, start: int | None = None, end: int | None = None) -> httpx.Response:
        return self.http.get(f"/app_store/jobs/install/tasks/{task_id}/log", params=_range(start, end))

    def list_firmware_packages(self) -> httpx.Response:
        return self.http.get("/app_store/firmware/packages")

    def install_firmware_packages(self, packages: list[Any]) -> httpx.Response:
        return self.http.post("/app_store/firmware/install_packages", json={"packages": packages})

    # conveniences built on the calls above ---------------------------------
    def package(self, name: str, firmware: bool = False) -> dict[str, Any] | None:
        response = self.list_firmware_packages() if firmware else self.list_app_store_packages()
        assert response.status_code == 200, response.text
        return next((p for p in response.json() if p["name"] == name), None)

    def wait_status(self, name: str, *statuses: str, firmware: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            found = self.package(name, firmware)
            return found if found is not None and found["status"] in statuses else None

        return wait_until(reached, timeout=timeout, interval=0.05, what=f"{name} to become {' or '.join(statuses)}")

    def wait_latest(self, name: str, version: str, firmware: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until a (background) catalog refresh shows ``version`` as the latest of ``name``."""

        def reached() -> dict[str, Any] | None:
            found = self.package(name, firmware)
            return found if found is not None and found["latest_version"] == version else None

        return wait_until(reached, timeout=timeout, interval=0.05, what=f"{name} {version} in the store")

    def wait_task(self, group: str, task_id: int, timeout: float = 30.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            response = self.http.get(f"/app_store/jobs/{group}/tasks")
            found = next((t for t in response.json() if t["id"] == task_id), None)
            return found if found is not None and found["status"] in FINISHED else None

        return wait_until(finished, timeout=timeout, interval=0.05, what=f"{group} task {task_id} to finish")

    def log_text(self, group: str, task_id: int) -> str:
        return self.http.get(f"/app_store/jobs/{group}/tasks/{task_id}/log").text


def _range(start: int | None, end: int | None) -> dict[str, int]:
    return {k: v for k, v in (("start", start), ("end", end)) if v is not None}


# ---------------------------------------------------------------- a live host


class LoopCapture:
    """A test plugin that remembers the host's event loop, to run coroutines on it from the test."""

    __name__ = "loop_capture"

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.host: Any = None

    @hookimpl
    def startup(self, host: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = host

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @contextlib.contextmanager
    def holding_app_lock(self, name: str) -> Iterator[None]:
        """Hold the apps service's per-app lock, so an install or uninstall of ``name`` waits inside its task."""
        lock = self.host.apps.lock_for(name)
        self.run(lock.acquire())
        try:
            yield
        finally:
            self.loop.call_soon_threadsafe(lock.release)  # type: ignore[union-attr]


@contextlib.contextmanager
def robot_host(data_dir: Path, registry: RegistryServer | None = None, **overrides: Any) -> Iterator[RobotHost]:
    capture = LoopCapture()
    if registry is not None:
        overrides["registry"] = registry.url
    with live_host(data_dir, plugins=[capture], **overrides) as live:
        client = RobotClient(live.url)
        try:
            yield RobotHost(live, client, capture)
        finally:
            client.close()


class RobotHost:
    def __init__(self, live: LiveServer, client: RobotClient, capture: LoopCapture) -> None:
        self.live = live
        self.client = client
        self.capture = capture

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def host(self) -> Any:
        return self.live.host

    def bolt(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the Bolt API (``/api/...``) as the admin."""
        with httpx.Client(base_url=self.url, auth=ADMIN, timeout=60.0) as http:
            return http.request(method, path, **kwargs)
