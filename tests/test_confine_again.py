"""A start after a stop reuses what the previous start prepared for the app (its folders, its
groups with their limits) only while that still holds: changed limits are written, a group
removed behind the host's back is made again, a reinstalled code tree is handed to the app's
gid again.  Real host as root, real app processes, real cgroups where the machine has them.
"""

from __future__ import annotations

from pathlib import Path

from bolt_host.services import cgroups
from bolt_host.testing import RunningHost, running_host
from tests.helpers import async_wait_until
from tests.test_isolation import install_and_start, log_of, needs_root, require_cgroups, write_app

REPORTER = """
    import os, resource, signal
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print("RUN", os.getpid(), "NOFILE", soft, hard, flush=True)
    signal.pause()
"""


async def start_and_report(bolt: RunningHost, name: str) -> tuple[int, list[str]]:
    """Start ``name`` (installed) and wait for its run's line: (pid, the line's words)."""
    started = await bolt.admin.post("/api/apps/start", json={"name": name})
    assert started.status_code == 200, started.text
    pid = started.json()["body"]["pid"]
    await async_wait_until(lambda: f"RUN {pid} " in log_of(bolt, name), what=f"run {pid} of {name} reporting")
    line = next(line for line in log_of(bolt, name).splitlines() if f"RUN {pid} " in line)
    return pid, line.split()


async def stop(bolt: RunningHost, name: str) -> None:
    assert (await bolt.admin.post("/api/apps/stop", json={"name": name})).status_code == 200


@needs_root
async def test_a_start_after_a_stop_confines_anew_what_changed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "files", REPORTER, limits={"nofile": 256})
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0) as bolt:
        support = require_cgroups(bolt)
        await install_and_start(bolt, "files")
        await stop(bolt, "files")
        _, words = await start_and_report(bolt, "files")  # nothing changed: the same limit
        assert words[-2:] == ["256", "256"]
        await stop(bolt, "files")

        changed = await bolt.admin.put("/api/apps/files", json={"limits": {"nofile": 300}})
        assert changed.status_code == 200, changed.text
        _, words = await start_and_report(bolt, "files")
        assert words[-2:] == ["300", "300"]
        await stop(bolt, "files")

        group = support.group("files")
        assert group is not None
        group.remove()  # behind the host's back
        assert not group.exists()
        pid, _ = await start_and_report(bolt, "files")
        assert group.exists() and pid in group.members()
        await stop(bolt, "files")

        upgraded = await bolt.admin.post("/api/apps/local", json={"path": "files", "upgrade": True})
        assert upgraded.status_code < 300, upgraded.text
        code = Path(bolt.host.apps.require("files")["folder"])
        uid = (await bolt.admin.get("/api/apps/files")).json()["body"]["confinement"]["uid"]
        _, words = await start_and_report(bolt, "files")  # it read its code as its own uid
        assert code.stat().st_gid == uid and words[-2:] == ["300", "300"]
        await stop(bolt, "files")


def cpu_quota(group: cgroups.AppCgroup) -> str:
    """The group's CPU quota as the kernel shows it ("max"/"-1": none)."""
    if group.version == "v2":
        return (group.dirs["unified"] / "cpu.max").read_text().split()[0]
    return (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip()


@needs_root
async def test_a_cpu_limit_is_written_when_set_and_lifted_when_removed(tmp_path: Path) -> None:
    """The bandwidth files are written only when they change (a write costs milliseconds):
    a limit still reaches the group, and a removed one is lifted from the group it stays in."""
    repo = tmp_path / "repo"
    write_app(repo, "spin", REPORTER, limits={"cpu": 0.5})
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0) as bolt:
        support = require_cgroups(bolt)
        await install_and_start(bolt, "spin")
        group = support.group("spin")
        assert group is not None and cpu_quota(group) == "50000"
        await stop(bolt, "spin")
        lifted = await bolt.admin.put("/api/apps/spin", json={"limits": {"cpu": None}})
        assert lifted.status_code == 200, lifted.text
        await start_and_report(bolt, "spin")
        assert cpu_quota(group) in ("max", "-1")
        await stop(bolt, "spin")
        again = await bolt.admin.put("/api/apps/spin", json={"limits": {"cpu": 0.25}})
        assert again.status_code == 200, again.text
        await start_and_report(bolt, "spin")
        assert cpu_quota(group) == "25000"
        await stop(bolt, "spin")


@needs_root
async def test_an_install_prepares_what_the_first_start_needs(tmp_path: Path) -> None:
    """An install leaves the app's data folder its own, its code its gid's and its groups made
    with its limits, so its first start has nothing left to prepare; it runs confined in them."""
    repo = tmp_path / "repo"
    write_app(repo, "fresh", REPORTER, limits={"nofile": 256, "pids": 64})
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0) as bolt:
        support = require_cgroups(bolt)
        installed = await bolt.admin.post("/api/apps/local", json={"path": "fresh"})
        assert installed.status_code == 201, installed.text
        uid = (await bolt.admin.get("/api/apps/fresh")).json()["body"]["confinement"]["uid"]
        assert isinstance(uid, int)
        group = support.group("fresh")
        assert group is not None and group.exists()
        assert pids_limit(group) == "64"
        assert bolt.host.isolation.home_of("fresh").stat().st_uid == uid
        assert Path(bolt.host.apps.require("fresh")["folder"]).stat().st_gid == uid

        pid, words = await start_and_report(bolt, "fresh")
        assert pid in group.members() and words[-2:] == ["256", "256"]
        assert (pid_uid := Path(f"/proc/{pid}").stat().st_uid) == uid, pid_uid
        await stop(bolt, "fresh")


def pids_limit(group: cgroups.AppCgroup) -> str:
    """The group's process limit as the kernel shows it."""
    folder = group.dirs["unified"] if group.version == "v2" else group.dirs["pids"]
    return (folder / "pids.max").read_text().strip()
