"""Operations that a crash cuts off: an agent killed with ``kill -9`` mid-download or
mid-uninstall (a real ``bolt-host serve`` process), restarted on the same data dir, on a wiped
one, or never again.  Real Mosquitto with the broker ACL, the manager as in test_device_fleet."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bolt_host.services.extract import pack_directory
from tests.fixtures.device.fleet import PASSWORDS, ROOT_ACCOUNT, Fleet, running_fleet, sha256_of
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO
from tests.fixtures.device.packages import GatedFiles, pack_sample
from tests.helpers import free_port, wait_until
from tests.servers import serve

pytestmark = [
    NEEDS_MOSQUITTO,
    pytest.mark.timeout(180),
]

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "dev-3"
ADMIN_PASSWORD = "crash-test-admin"
DEADLINE_SECONDS = 20  # longer than an agent's restart here, short enough to wait for once
CRASH_REASON = "the host stopped while this task was running (crash or kill); marked failed at boot"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet"), offline_deadline_seconds=DEADLINE_SECONDS) as running:
        try:
            yield running
        finally:
            running.files.release()


class AgentProcess:
    """``python -m bolt_host serve`` as device ``dev-3``; ended by its pid (its process group)."""

    def __init__(self, fleet: Fleet, data_dir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "BOLT_DEVICE_MODE": "agent", "BOLT_DEVICE_BROKER_URL": fleet.broker.url,
               "BOLT_DEVICE_CLIENT_ID": CLIENT, "BOLT_DEVICE_USERNAME": CLIENT,
               "BOLT_DEVICE_PASSWORD": PASSWORDS[CLIENT], "BOLT_DEVICE_SCOPE": ROOT_ACCOUNT,
               "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD, "BOLT_DISABLE_PLUGINS": "robot,market,enterprise",
               "BOLT_AUTOSTART": "false", "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir.parent / f"{data_dir.name}.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bolt_host", "serve", "--port", self.url.rsplit(":", 1)[1],
                 "--data-dir", str(data_dir), "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def kill(self) -> None:
        """``kill -9`` of the host process alone: no goodbye, no task clean-up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def end(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def app_pids(self) -> list[int]:
        response = httpx.get(self.url + "/api/apps/@live", auth=("admin", ADMIN_PASSWORD), timeout=10)
        return [context["pid"] for context in response.json()["body"] if context.get("pid")]

    def tasks(self) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/api/tasks", auth=("admin", ADMIN_PASSWORD), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["body"]


@contextlib.contextmanager
def agent_process(fleet: Fleet, data_dir: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(fleet, data_dir)
    try:
        yield agent
    finally:
        agent.end()


def _start_gated_download(fleet: Fleet, device_id: str, name: str) -> dict[str, Any]:
    """A download of a file served half now, half never: the agent is mid-download when this returns."""
    data, manifest = pack_sample("notes", rename=name)
    path = fleet.files.add(f"{name}.tgz", data, gated=True)
    fleet.files.requested.clear()
    body = {"uri": fleet.files_url + path, "name": manifest["name"], "version": manifest["version"],
            "fileHash": sha256_of(data), "install": True}
    response = fleet.kapua.post(f"/_/devices/{device_id}/packages/_download", json=body)
    assert response.status_code == 200, response.text
    assert fleet.files.requested.wait(timeout=60), "the agent never started downloading"
    return response.json()


def _install(fleet: Fleet, device_id: str, url: str, data: bytes, manifest: dict[str, Any]) -> None:
    """Install the package at ``url`` (``data``) on the device; returns once it COMPLETED."""
    body = {"uri": url, "name": manifest["name"], "version": manifest["version"], "fileHash": sha256_of(data),
            "install": True}
    response = fleet.kapua.post(f"/_/devices/{device_id}/packages/_download", json=body)
    assert response.status_code == 200, response.text
    done = fleet.kapua.wait_operation_end(device_id, response.json()["id"], timeout=60)
    assert done["status"] == "COMPLETED", done["log"]


def _running_on_new_agent(
    fleet: Fleet, agent: AgentProcess, data: bytes, manifest: dict[str, Any]
) -> tuple[str, list[int]]:
    """Once the agent is connected, install the package (``data``) from the fleet's file server and
    wait for its app: the device's id and the app's pids."""
    device_id = fleet.kapua.wait_connected(CLIENT, timeout=90)["id"]
    name = manifest["name"]
    _install(fleet, device_id, fleet.files_url + fleet.files.add(f"{name}.tgz", data), data, manifest)
    return device_id, wait_until(agent.app_pids, timeout=30, what=f"{name} running on the agent")


def _notes(fleet: Fleet, device_id: str, operation_id: str) -> list[dict[str, Any]]:
    return fleet.kapua.get(f"/_/devices/{device_id}/operations/{operation_id}/notifications").json()["items"]


def _killed_mid_download(fleet: Fleet, agent: AgentProcess, name: str) -> tuple[str, dict[str, Any]]:
    device_id = fleet.kapua.wait_connected(CLIENT, timeout=90)["id"]
    operation = _start_gated_download(fleet, device_id, name)
    wait_until(lambda: [t for t in agent.tasks() if t["kind"] == "download" and t["status"] == "running"],
               timeout=30, what="the download task running on the agent")
    agent.kill()
    fleet.kapua.wait_status(CLIENT, "DISCONNECTED", timeout=60)  # the broker sent its will
    assert fleet.kapua.operation(device_id, operation["id"])["status"] == "RUNNING"
    return device_id, operation


def test_an_agent_killed_mid_download_reports_the_cut_on_restart(fleet: Fleet, tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-3"
    with agent_process(fleet, data_dir) as agent:
        device_id, operation = _killed_mid_download(fleet, agent, "crash-notes")
    with agent_process(fleet, data_dir):
        fleet.kapua.wait_connected(CLIENT, timeout=90)
        done = fleet.kapua.wait_operation_end(device_id, operation["id"], timeout=30)
    assert done["status"] == "FAILED", done
    assert CRASH_REASON in done["log"]
    last = _notes(fleet, device_id, operation["id"])[-1]
    assert (last["resource"], last.get("status"), last["message"]) == ("download", "FAILED", CRASH_REASON)


def test_a_wiped_agent_that_does_not_know_the_operation_ends_it(fleet: Fleet, tmp_path: Path) -> None:
    with agent_process(fleet, tmp_path / "before") as agent:
        device_id, operation = _killed_mid_download(fleet, agent, "wiped-notes")
    with agent_process(fleet, tmp_path / "reflashed"):  # same device, its data gone
        fleet.kapua.wait_connected(CLIENT, timeout=90)
        done = fleet.kapua.wait_operation_end(device_id, operation["id"], timeout=30)
    assert done["status"] == "FAILED", done
    assert "does not know this operation" in done["log"]


def test_an_operation_of_a_device_that_never_returns_fails_at_the_deadline(fleet: Fleet, tmp_path: Path) -> None:
    with agent_process(fleet, tmp_path / "gone") as agent:
        device_id, operation = _killed_mid_download(fleet, agent, "gone-notes")
    done = fleet.kapua.wait_operation_end(device_id, operation["id"], timeout=DEADLINE_SECONDS + 30)
    assert done["status"] == "FAILED", done
    assert f"did not come back within {DEADLINE_SECONDS} s" in done["log"]
    device = fleet.kapua.device_by_client(CLIENT)
    assert device is not None and device["connection"]["status"] == "DISCONNECTED"


# An app that outlives SIGTERM until a file named ``release`` appears next to it: stopping it
# (the first step of an uninstall) takes its stop grace, long enough to kill the agent mid-way.
STUBBORN_MAIN = """import pathlib, signal, sys
release = pathlib.Path(__file__).with_name("release")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0) if release.exists() else None)
while True:
    signal.pause()  # a SIGTERM without the release file returns here
"""

def _stubborn_package(folder: Path) -> tuple[bytes, dict[str, Any]]:
    manifest = {"name": "stubborn", "version": "1.0.0", "keywords": ["bolt-app"],
                "bolt": {"main": "main.py", "server": False, "stopGraceSeconds": 120}}
    source = folder / "stubborn"
    source.mkdir(parents=True)
    (source / "package.json").write_text(json.dumps(manifest))
    (source / "main.py").write_text(STUBBORN_MAIN)
    return pack_directory(source, folder / "stubborn.tgz").read_bytes(), manifest


def test_an_agent_killed_mid_uninstall_reports_the_cut_on_restart(fleet: Fleet, tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-3"
    data, manifest = _stubborn_package(tmp_path / "package")
    released = data_dir / "apps" / "stubborn" / "release"
    pids: list[int] = []
    try:
        with agent_process(fleet, data_dir) as agent:
            device_id, pids = _running_on_new_agent(fleet, agent, data, manifest)
            response = fleet.kapua.post(f"/_/devices/{device_id}/packages/_uninstall",
                                        json={"name": "stubborn", "version": "1.0.0"})
            assert response.status_code == 200, response.text
            operation = response.json()
            wait_until(lambda: [t for t in agent.tasks() if t["kind"] == "uninstall" and t["status"] == "running"],
                       timeout=30, what="the uninstall task running (stopping the app)")
            agent.kill()
            fleet.kapua.wait_status(CLIENT, "DISCONNECTED", timeout=60)  # the broker sent its will
            assert fleet.kapua.operation(device_id, operation["id"])["status"] == "RUNNING"
        with agent_process(fleet, data_dir) as agent:
            fleet.kapua.wait_connected(CLIENT, timeout=90)
            ended = fleet.kapua.wait_operation_end(device_id, operation["id"], timeout=30)
            pids += agent.app_pids()
            released.touch()  # lets the host stop the app it adopted when this agent ends
    finally:
        released.parent.mkdir(parents=True, exist_ok=True)
        released.touch()
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert ended["status"] == "FAILED", ended
    assert CRASH_REASON in ended["log"]
    last = _notes(fleet, device_id, operation["id"])[-1]
    assert (last["resource"], last.get("status"), last["message"]) == ("uninstall", "FAILED", CRASH_REASON)


def _sleeper_package(folder: Path, name: str = "sleeper") -> tuple[bytes, dict[str, Any]]:
    manifest = {"name": name, "version": "1.0.0", "keywords": ["bolt-app"],
                "bolt": {"start": "sleep 86400", "server": False}}
    source = folder / name
    source.mkdir(parents=True)
    (source / "package.json").write_text(json.dumps(manifest))
    return pack_directory(source, folder / f"{name}.tgz").read_bytes(), manifest


def _sleeper_running_then_agent_killed(fleet: Fleet, data_dir: Path, package_folder: Path) -> list[int]:
    """An agent on ``data_dir`` installs the sleeper and runs it, then is killed (kill -9): the app's pids."""
    data, manifest = _sleeper_package(package_folder)
    with agent_process(fleet, data_dir) as agent:
        _, pids = _running_on_new_agent(fleet, agent, data, manifest)
        agent.kill()
    return pids


def test_an_agent_appends_its_install_records_and_a_kill_loses_none(fleet: Fleet, tmp_path: Path) -> None:
    """An agent's db.json is small, yet its writes go to the journal (one fsynced line each, not a
    rewrite of the file through a new temp file): what an install wrote is in the journal alone
    when the agent is killed, and the restarted agent has it all."""
    data_dir = tmp_path / "dev-3"
    pids: list[int] = []
    try:
        pids = _sleeper_running_then_agent_killed(fleet, data_dir, tmp_path / "package")
        journal = (data_dir / "db.json.log").read_text()
        assert '"sleeper"' in journal and '"succeeded"' in journal  # the app's record, the tasks' ends
        assert '"sleeper"' not in (data_dir / "db.json").read_text()  # appended, never rewritten
        with agent_process(fleet, data_dir) as agent:
            fleet.kapua.wait_connected(CLIENT, timeout=90)
            response = httpx.get(agent.url + "/api/apps", auth=("admin", ADMIN_PASSWORD), timeout=10)
            assert response.status_code == 200, response.text
            assert [app["name"] for app in response.json()["body"]] == ["sleeper"]
            ended = {(t["kind"], t["status"]) for t in agent.tasks()}
            assert ended == {("download", "succeeded"), ("install", "succeeded")}, ended
            pids += agent.app_pids()
    finally:
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_an_agent_appends_its_app_starts_to_the_runtime_journal_and_adopts_after_a_kill(
    fleet: Fleet, tmp_path: Path
) -> None:
    """An agent's app start writes its process record into runtime.json's journal (lines appended
    to an open file, not whole-file rewrites through new temp files): the record is in the journal
    alone when the agent is killed, and the restarted agent adopts the same process from it."""
    data_dir = tmp_path / "dev-3"
    pids: list[int] = []
    try:
        pids = _sleeper_running_then_agent_killed(fleet, data_dir, tmp_path / "package")
        journal = [json.loads(line) for line in (data_dir / "runtime.json.log").read_text().splitlines()]
        recorded = [rows["supervisor"]["sleeper"] for rows in (line["rows"] for line in journal)
                    if "sleeper" in rows.get("supervisor", {})]
        assert recorded and recorded[-1]["pid"] == pids[0], recorded
        assert "sleeper" not in json.loads((data_dir / "runtime.json").read_text()).get("supervisor", {})
        assert not (data_dir / "runtime.json.pending").exists()  # no whole-file visible writes either
        with agent_process(fleet, data_dir) as agent:
            fleet.kapua.wait_connected(CLIENT, timeout=90)
            adopted = wait_until(agent.app_pids, timeout=30, what="the app adopted by the restarted agent")
            pids += adopted
            assert adopted == pids[:1], (adopted, pids)
    finally:
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_an_agent_downloads_with_one_client_for_its_life(fleet: Fleet, tmp_path: Path) -> None:
    """Two installs one after the other: the second download reuses the first one's connection
    (one client built as the agent started, not one per download)."""
    files = GatedFiles()
    pids: list[int] = []
    with serve(files.app, timeout_keep_alive=120) as server, agent_process(fleet, tmp_path / "dev-3") as agent:
        try:
            device_id = fleet.kapua.wait_connected(CLIENT, timeout=90)["id"]
            for name in ("first-sleeper", "second-sleeper"):
                data, manifest = _sleeper_package(tmp_path / "packages", name)
                _install(fleet, device_id, server.url + files.add(f"{name}.tgz", data), data, manifest)
            pids = wait_until(lambda: agent.app_pids() if len(agent.app_pids()) == 2 else None,
                              timeout=30, what="both apps running on the agent")
        finally:
            for pid in set(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    assert len(files.client_ports) == 2 and len(set(files.client_ports)) == 1, files.client_ports
