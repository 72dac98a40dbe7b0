"""Boot after a host killed at the exact moments the random ``kill -9`` rounds of
``test_crash_faults`` can only hit by chance: the two windows of an install's folder swap, and
the gap between an app's spawn and the record of its pid."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil

from bolt_host.statefile import StateFile
from bolt_host.testing import RunningHost, running_host
from tests.fixtures.echo_copies import make_app_copy, set_app_version
from tests.helpers import wait_until


def _repo_with(tmp_path: Path, name: str) -> Path:
    """A local repository holding a copy of the echo app named ``name``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    make_app_copy(repo, name)
    return repo


async def _install(bolt: RunningHost, name: str) -> None:
    assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201


async def test_boot_puts_back_a_folder_moved_aside_by_a_cut_off_swap(tmp_path: Path) -> None:
    """Killed between 'move the old version aside' and 'move the new one in': the old one returns."""
    repo = _repo_with(tmp_path, "up1")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        await _install(bolt, "up1")
    apps_dir = tmp_path / "data" / "apps"
    (apps_dir / "up1").rename(apps_dir / ".old-up1-ab_cd123")  # the state at the kill
    (apps_dir / ".staging-x1y2z3w4").mkdir()
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        app = (await bolt.admin.get("/api/apps/up1")).json()["body"]
        assert json.loads((Path(app["folder"]) / "package.json").read_text())["version"] == app["version"]
    assert sorted(p.name for p in apps_dir.iterdir()) == ["up1"]


async def test_boot_rolls_a_record_forward_to_the_version_its_folder_holds(tmp_path: Path) -> None:
    """Killed between the swap (new files in place) and the db write: the record follows the files."""
    repo = _repo_with(tmp_path, "up1")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        await _install(bolt, "up1")
        changed = await bolt.admin.put("/api/apps/up1", json={"order": 7})
        assert changed.status_code == 200
    set_app_version(tmp_path / "data" / "apps", "up1", "2.0.0")  # the swapped-in files, the old record
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        app = (await bolt.admin.get("/api/apps/up1")).json()["body"]
    assert app["version"] == "2.0.0" and app["order"] == 7


async def test_a_rolled_forward_record_keeps_the_apps_own_python(tmp_path: Path) -> None:
    """The venv the dependency step made came with the swapped-in folder: the record names it."""
    repo = _repo_with(tmp_path, "up3")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        await _install(bolt, "up3")
    folder = tmp_path / "data" / "apps" / "up3"
    (folder / ".venv" / "bin").mkdir(parents=True)
    (folder / ".venv" / "bin" / "python").symlink_to(sys.executable)
    set_app_version(tmp_path / "data" / "apps", "up3", "2.0.0")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        app = (await bolt.admin.get("/api/apps/up3")).json()["body"]
    assert app["version"] == "2.0.0" and app["python"] == str(folder / ".venv" / "bin" / "python")


async def test_boot_ends_a_process_spawned_but_never_recorded(tmp_path: Path) -> None:
    """Killed between the spawn and the record of its pid: boot finds the process by its marker
    and app token, and ends it, instead of leaving a second, unknown copy of the app running."""
    repo = _repo_with(tmp_path, "up2")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        await _install(bolt, "up2")
        pid = (await bolt.admin.post("/api/apps/start", json={"name": "up2"})).json()["body"]["pid"]
        await bolt.host.supervisor.detach()  # the host dies; the app lives on
    try:
        state = StateFile(tmp_path / "data" / "runtime.json")
        record = state.get("supervisor", "up2")
        state.put("supervisor", "up2", {**record, "pid": None, "create_time": None})  # the write that never happened
        state.commit_now()
        async with running_host(tmp_path / "data", local_repo=repo) as bolt:
            assert bolt.host.supervisor.context("up2") is None or bolt.host.supervisor.context("up2")["pid"] != pid

            def gone() -> bool:
                return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

            wait_until(gone, timeout=15, what="the unrecorded process ended at boot")
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
