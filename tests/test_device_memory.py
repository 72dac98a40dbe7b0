"""A manager process's memory: its opt-in memory reports, and what it loads for serving a fleet.

A real ``python -m bolt_host serve`` manager, a real Mosquitto, one agent, one ``_download``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.fixtures.device.fleet import (
    ACCOUNTS,
    MANAGER_ID,
    MANAGERS,
    PASSWORDS,
    Kapua,
    agent_config,
    device_host,
    sha256_of,
)
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO, Mosquitto
from tests.fixtures.device.packages import pack_sample
from tests.helpers import free_port, wait_until
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]
# httpx's command-line client, which its package import loads when rich and click are installed
HTTPX_CLI = {"rich", "pygments"}
Manager = tuple[str, subprocess.Popen[bytes], Path, Mosquitto, RegistryServer]


def _login(url: str) -> bool:
    try:
        response = httpx.post(url + "/v1/authentication/user", timeout=2,
                              json={"username": "admin", "password": ADMIN_PASSWORD})
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@pytest.fixture(params=[False, True], ids=["no-registry", "registry"])
def manager_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    reports = tmp_path / "reports"
    with Mosquitto(tmp_path / "broker", PASSWORDS, managers=MANAGERS, accounts=ACCOUNTS) as broker, \
            RegistryServer() as registry:
        port = free_port()
        env = {**os.environ, "BOLT_DEVICE_MODE": "manager", "BOLT_DEVICE_BROKER_URL": broker.url,
               "BOLT_DEVICE_USERNAME": MANAGER_ID, "BOLT_DEVICE_PASSWORD": PASSWORDS[MANAGER_ID],
               "BOLT_DEVICE_MEMORY_REPORTS": str(reports), "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "BOLT_DISABLE_PLUGINS": "robot,market,enterprise", "BOLT_AUTOSTART": "false",
               "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
        with (tmp_path / "manager.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir",
                 str(tmp_path / "manager"), "--log-level", "warning",
                 *(["--registry", registry.url] if request.param else [])],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: process.poll() is not None or _login(url), timeout=60, what="the manager")
            assert process.poll() is None, (tmp_path / "manager.log").read_text()[-3000:]
            yield url, process, reports, broker, registry
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _report(process: subprocess.Popen[bytes], path: Path, sig: signal.Signals) -> str:
    os.kill(process.pid, sig)
    wait_until(path.exists, timeout=30, what=str(path))
    wait_until(lambda: path.read_text().endswith("\n"), timeout=30, what=f"{path} written")
    return path.read_text()


@NEEDS_MOSQUITTO
def test_a_manager_that_served_a_download_reports_its_memory_without_loading_httpx(
    manager_process: Manager, tmp_path: Path
) -> None:
    url, process, reports, broker, registry = manager_process
    data, manifest = pack_sample("hello-web")
    published = registry.publish_tarball(manifest["name"], manifest["version"], data, manifest)
    kapua = Kapua(url)
    try:
        kapua.login("admin", ADMIN_PASSWORD)
        with device_host(tmp_path / "dev-1", agent_config(broker.url, "dev-1", PASSWORDS["dev-1"])):
            device = kapua.wait_connected("dev-1")
            body = {"uri": published["dist"]["tarball"], "name": manifest["name"], "version": manifest["version"],
                    "fileHash": sha256_of(data), "install": True}
            response = kapua.post(f"/_/devices/{device['id']}/packages/_download", json=body)
            assert response.status_code == 200, response.text
            assert kapua.wait_operation_end(device["id"], response.json()["id"])["status"] == "COMPLETED"

            (reports / "label").write_text("after one download")
            report = _report(process, reports / "1.txt", signal.SIGUSR1)
            trimmed = _report(process, reports / "1-trim.txt", signal.SIGUSR2)
    finally:
        kapua.close()
    assert report.startswith("report 1: after one download\n")
    assert re.search(r"^rss \d+\.\d MiB$", report, re.M)
    assert re.search(r"^malloc: heap \(sbrk\) [\d.]+ MiB.* free inside the heap", report, re.M)
    assert re.search(r"^pymalloc: # arenas allocated current = \d+", report, re.M)
    listing = re.search(r"^modules loaded: \d+; by top-level package: (.*)$", report, re.M)
    assert listing is not None
    packages = {entry.rsplit(" ", 1)[0] for entry in listing.group(1).split(", ")}
    assert {"bolt_device", "aiomqtt", "uvicorn"} <= packages  # the listing is the manager's own
    assert packages & HTTPX_CLI == set()
    if "--registry" in process.args:  # its catalog lists the registry with httpx: loaded, without its CLI
        assert "httpx" in packages
    else:  # nothing the manager does needs httpx (the agents download)
        assert packages & {"httpx", "httpcore"} == set()
    assert "tracemalloc: " not in report  # tracing only with PYTHONTRACEMALLOC
    assert re.search(r"^malloc_trim returned [01]$", trimmed, re.M)
    assert trimmed.count("rss ") == 2
    assert process.poll() is None  # the signals reported; they did not end the manager


HEAP_PROBE = """
import sys
from bolt_device.memory import keep_heap_small, malloc_info

if malloc_info() is None:
    print("no glibc")
    raise SystemExit
if sys.argv[1] == "fixed":
    assert keep_heap_small()
big = bytearray(8 << 20)  # mapped by malloc; freeing it raises glibc's thresholds unless they are fixed
del big
chunks = [bytearray(64 << 10) for _ in range(100)]  # 6.4 MiB from the heap
del chunks
print(malloc_info().keepcost)
"""


@pytest.mark.parametrize("mode", ["default", "fixed"])
def test_fixed_malloc_thresholds_give_a_freed_heap_top_back(mode: str) -> None:
    result = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")})
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "no glibc":
        pytest.skip("malloc is not glibc's")
    kept_at_top = int(result.stdout)
    if mode == "default":  # glibc's dynamic thresholds: the freed 6.4 MiB stays in the process
        assert kept_at_top > 4 << 20
    else:
        assert kept_at_top < 256 << 10
