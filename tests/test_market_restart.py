"""Start-up: operations a host stop cut off are settled, and the machine's CPU figure is measured from the start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import wait_until
from tests.test_market_clones import GREETING, GatedRegistry
from tests.test_market_support import PREFIX, REPO
from tests.test_robot_restart import start_host_process

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=20)


def test_an_install_cut_off_by_a_host_crash_is_settled_at_start_up(tmp_path: Path) -> None:
    data_dir, registry = tmp_path / "data", GatedRegistry()
    with registry:
        try:
            registry.publish_dir(REPO / "env-echo")
            process, url = start_host_process(data_dir, registry, tmp_path / "host-1.log")
            try:
                admin = httpx.Client(base_url=url + PREFIX, auth=("admin", ADMIN_PASSWORD), timeout=30)
                added = admin.post("/settings/market-source",
                                   json={"id": "slow", "type": "remote", "base_url": registry.url})
                assert added.status_code == 200, added.text
                started = admin.post("/apps/env-echo/install", json={
                    "source": "slow", "app_name": "env-echo", "version": "1.0.0", "envs": GREETING})
                assert started.status_code == 200, started.text
                assert registry.started.wait(30)
                wait_until(lambda: _state(admin)["state"] == "downloading", timeout=30, what="downloading")
            finally:
                _kill(process)  # a crash: nothing gets to record how the download ended
            registry.gate.set()
            process, url = start_host_process(data_dir, registry, tmp_path / "host-2.log")
            try:
                admin = httpx.Client(base_url=url + PREFIX, auth=("admin", ADMIN_PASSWORD), timeout=30)
                state = _state(admin)
                assert state["state"] == "downloadFailed" and state["reason"] == "interrupted by a host restart"
                assert admin.post("/apps/env-echo/install", json={
                    "source": "slow", "app_name": "env-echo", "version": "1.0.0", "sync": True,
                    "envs": GREETING}).status_code == 200
                assert admin.request("DELETE", "/apps/env-echo", json={"sync": True}).status_code == 200
            finally:
                _kill(process)
        finally:
            registry.gate.set()


def _state(admin: httpx.Client) -> dict:
    sources = admin.get("/market/state").json()["data"]["user_data"]["sources"]
    rows = [r["status"] for source in sources.values() for r in source["app_state_latest"]]
    return next(row for row in rows if row["name"] == "env-echo")


CPU_SCRIPT = """
import sys, time
from pathlib import Path

import httpx

from tests.servers import live_host

with live_host(Path(sys.argv[1])) as live:  # uvicorn serves from a thread of its own, as when embedded
    began = time.process_time()
    while time.process_time() - began < 0.2:  # CPU work the machine's figure must show
        pass
    answer = httpx.get(live.url + "/app-store/api/v2/settings/system-status", auth=live.admin_auth, timeout=30)
    print(answer.json()["data"]["cluster_resource"]["cpu"]["usage"])
"""


def test_the_first_cpu_figure_after_start_up_is_measured(tmp_path: Path) -> None:
    """psutil measures CPU per thread since that thread's previous call; the first call used to answer 0.0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CPU_SCRIPT, str(tmp_path / "data")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)  # a fresh process: no earlier call anywhere
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) > 0.0, done.stdout
