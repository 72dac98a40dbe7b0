"""Where an app's cgroups are: beside the host's own process in every hierarchy, so that under
contention an app weighs what one process weighs (as a child of raw ``Popen`` does), not a
share of ONE weight that all apps split; named for the data dir, so two hosts never share a
group, and the next host of a data dir removes the empty groups a killed one left.
Real cgroups, real host and app processes, as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest

from bolt_host.services import cgroups
from bolt_host.services.proctable import data_dir_id
from bolt_host.testing import running_host
from tests.helpers import free_port, wait_until
from tests.test_isolation import install_and_start, needs_root, require_cgroups, wait_for_line, write_app

pytestmark = pytest.mark.timeout(120)

PAUSER = "import signal\nprint('UP', flush=True)\nsignal.pause()\n"
PASSWORD = "layout-admin-password"


def cgroup_paths(pid: int) -> dict[str, str]:
    """The kernel's word: ``pid``'s cgroup path per v1 controller, and ``""`` -> its v2 path."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


@needs_root
async def test_an_apps_groups_sit_beside_the_hosts_process_and_weigh_one_process(tmp_path: Path) -> None:
    repo, data = tmp_path / "repo", tmp_path / "data"
    write_app(repo, "weighed", PAUSER)
    async with running_host(data, local_repo=repo, stop_grace_seconds=2.0) as bolt:
        support = require_cgroups(bolt)
        context = await install_and_start(bolt, "weighed")
        await wait_for_line(bolt, "weighed", "UP")  # printed after the join
        app, host = cgroup_paths(context["pid"]), cgroup_paths(os.getpid())  # running_host: the host is us
        keys = ["" if controller == "unified" else controller for controller in support.bases]
        assert keys
        for key in keys:
            where = PurePosixPath(app[key])
            assert where.parent == PurePosixPath(host[key]), (key, app[key], host[key])
            assert where.name == f"bolt-{data_dir_id(data)}.weighed"
        group = support.group("weighed")
        assert group is not None
        if support.version == "v1":  # the kernel's weight of one nice-0 task, as the host's own has
            assert (group.dirs["cpu"] / "cpu.shares").read_text().strip() == "1024"
        else:
            assert (group.dirs["unified"] / "cpu.weight").read_text().strip() == "100"
        assert (await bolt.admin.post("/api/apps/stop", json={"name": "weighed"})).status_code == 200


@pytest.fixture
def two_data_dirs(tmp_path: Path) -> Iterator[tuple[cgroups.CgroupSupport, cgroups.CgroupSupport]]:
    """The cgroup support of two hosts on this machine (data dirs ``a`` and ``b``); the groups
    the test leaves are removed at the end."""
    ours, theirs = cgroups.detect(tmp_path / "a"), cgroups.detect(tmp_path / "b")
    if not ours.version:
        pytest.skip("no cgroups the host may create here")
    try:
        yield ours, theirs
    finally:
        ours.remove_empty_groups()
        theirs.remove_empty_groups()


def test_two_hosts_never_share_a_group_and_each_removes_only_its_own_empty_ones(
    two_data_dirs: tuple[cgroups.CgroupSupport, cgroups.CgroupSupport],
) -> None:
    ours, theirs = two_data_dirs
    idle, busy, same_name = ours.group("idle"), ours.group("busy"), theirs.group("idle")
    assert idle is not None and busy is not None and same_name is not None
    assert set(idle.folders.values()).isdisjoint(same_name.folders.values())
    for group in (idle, busy, same_name):
        group.create({})
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        for procs in busy.procs_files():
            procs.write_text(str(sleeper.pid))
        ours.remove_empty_groups()
        assert not idle.exists() and busy.exists() and same_name.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert busy.members() == set()
    ours.remove_empty_groups()
    assert not busy.exists() and same_name.exists()
    theirs.remove_empty_groups()
    assert not same_name.exists()


def test_the_groups_of_the_layout_before_go_once_empty(
    two_data_dirs: tuple[cgroups.CgroupSupport, cgroups.CgroupSupport],
) -> None:
    """Before, a host made ``<own>/bolt-<id>/<app>``: a host of the same data dir removes them."""
    ours, theirs = two_data_dirs
    former = [base / ours.prefix.rstrip(".") for base in ours.bases.values()]
    others = [base / theirs.prefix.rstrip(".") for base in theirs.bases.values()]
    try:
        for parent in former + others:
            (parent / "app").mkdir(parents=True, exist_ok=True)
        ours.remove_empty_groups()
        assert not any(parent.exists() for parent in former)
        assert all((parent / "app").is_dir() for parent in others)
    finally:
        for parent in former + others:
            for folder in (parent / "app", parent):
                if folder.exists():
                    folder.rmdir()


class ServedHost:
    """``python -m bolt_host serve`` in its own session, driven over HTTP."""

    def __init__(self, data: Path, repo: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--port", str(self.port), "--data-dir", str(data), "--local-repo", str(repo), "--log-level", "warning"]
        env = {**os.environ, "BOLT_ADMIN_PASSWORD": PASSWORD, "BOLT_STOP_GRACE_SECONDS": "3", "BOLT_DEVICE_MODE": "off"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bolt_host", "serve", *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.client = httpx.Client(base_url=self.url, auth=("admin", PASSWORD), timeout=60)
        wait_until(self._ready, timeout=60, interval=0.05, what="host start")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"host exited with {self.proc.returncode}")
        try:
            return self.client.get("/-/health").status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, path: str, body: dict[str, str]) -> dict[str, object]:
        reply = self.client.post(path, json=body)
        assert reply.status_code < 300, reply.text
        answer: dict[str, object] = reply.json()["body"]
        return answer

    def end(self, how: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(how)
            self.proc.wait(timeout=60)
        self.client.close()


@needs_root
def test_a_killed_hosts_groups_go_when_the_next_host_of_its_data_dir_shuts_down(tmp_path: Path) -> None:
    repo, data = tmp_path / "repo", tmp_path / "data"
    for name in ("idle", "runner"):
        write_app(repo, name, PAUSER)
    support = cgroups.detect(data)
    if not support.version:
        pytest.skip("no cgroups the host may create here")
    idle, runner = support.group("idle"), support.group("runner")
    assert idle is not None and runner is not None
    another = cgroups.detect(tmp_path / "another")  # a host of another data dir on this machine
    bystander = another.group("idle")
    assert bystander is not None
    bystander.create({})
    try:
        first = ServedHost(data, repo, tmp_path / "host.log")
        try:
            first.call("/api/apps/local", {"path": "idle"})  # an install makes the app's groups
            first.call("/api/apps/local", {"path": "runner"})
            pid = int(str(first.call("/api/apps/start", {"name": "runner"})["pid"]))
            wait_until(lambda: pid in runner.members(), what="the runner in its group")
        finally:
            first.end(signal.SIGKILL)
        assert idle.exists() and runner.exists()  # what the killed host left

        second = ServedHost(data, repo, tmp_path / "host.log")  # adopts the runner
        second.end(signal.SIGTERM)  # stops it, then removes the empty groups
        assert not idle.exists() and not runner.exists()
        assert bystander.exists()
    finally:
        runner.kill_all()  # ends the runner if a host did not
        support.remove_empty_groups()
        another.remove_empty_groups()


def test_controllers_mounted_together_make_one_folder_and_a_new_group_stays_new(
    two_data_dirs: tuple[cgroups.CgroupSupport, cgroups.CgroupSupport],
) -> None:
    """Where ``cpu`` and ``cpuacct`` share one mount, both name the same folder: it is made once,
    and the group counts as new (no limits to lift), not as one a previous run left."""
    ours, _ = two_data_dirs
    base = next(iter(ours.bases.values()))
    together = cgroups.CgroupSupport("v1", {"cpu": base, "cpuacct": base}, ours.prefix)
    group = together.group("paired")
    assert group is not None and len(set(group.folders.values())) == 1
    assert group.make_folders() is True
    assert group.exists()
    assert group.make_folders() is False  # a group that is there is not new
