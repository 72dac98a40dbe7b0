"""A host killed in the middle of a robot download: the task is failed at boot, and a retry works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bolt_host.services.tasks import CRASH_REASON_RUNNING
from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import free_port, wait_until
from tests.registry_server import RegistryServer
from tests.robot_support import GatedTarballs, RobotClient, make_package, publish_gated, robot_host

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_host_process(data_dir: Path, registry: RegistryServer, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BOLT_AUTOSTART": "false",
        "BOLT_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("BOLT_ROBOT_SECRET", None)
    command = [sys.executable, "-m", "bolt_host", "serve", "--data-dir", str(data_dir), "--port", str(port),
               "--registry", registry.url]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url) or process.poll() is not None, timeout=30, what="the host to answer")
    except AssertionError:
        _kill(process)
        raise
    if process.poll() is not None:
        raise AssertionError(f"the host exited at start:\n{log.read_text()}")
    return process, url


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=20)


def test_a_download_cut_off_by_a_crash_is_failed_at_boot_and_can_be_retried(tmp_path: Path, registry) -> None:
    data_dir = tmp_path / "data"
    with GatedTarballs() as tarballs:
        filename = publish_gated(registry, tarballs, make_package(tmp_path, "crashy", "1.0.0"))
        process, url = start_host_process(data_dir, registry, tmp_path / "host.log")
        client = RobotClient(url)
        try:
            client.refresh_app_store()
            client.wait_status("crashy", "not_installed")
            task_id = client.app_store_download_packages(["crashy"]).json()["crashy"]["task_id"]
            tarballs.wait_for_request(filename)
            assert client.wait_status("crashy", "downloading")["download_task_id"] == task_id
        finally:
            client.close()
            _kill(process)  # kill -9: no shutdown code runs

        tarballs.release(filename)
        with robot_host(data_dir, registry) as robot:
            client = robot.client
            failed = client.wait_status("crashy", "download_failed")
            assert failed["download_task_id"] == task_id
            task = next(t for t in client.list_download_tasks().json() if t["id"] == task_id)
            assert task["status"] == "failed" and task["end_time"]
            log = client.log_text("download", task_id)
            assert "=== downloading crashy:1.0.0" in log
            assert log.splitlines()[-1] == f"download task crashy(1.0.0) failed: {CRASH_REASON_RUNNING}"

            retry = client.app_store_download_packages(["crashy"]).json()["crashy"]["task_id"]
            assert retry > task_id
            client.wait_status("crashy", "downloaded")
            client.app_store_install_packages(["crashy"])
            assert client.wait_status("crashy", "up_to_date")["current_version"] == "1.0.0"
