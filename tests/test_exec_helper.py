"""The exec helper (``bolt-exec``) that confines an app in one exec when the host is root, and
the chain it stands in for (``sh`` -> ``prlimit`` -> ``setpriv``), which the host falls back to:
both give the app the same uid, gid, no supplementary group, no capability, no new privileges,
its cgroups from its first instruction and its rlimits.  An unsafe copy of the helper is never
run; the helper's own failures are one line in the app's log and a distinct exit code.
Real hosts, real app processes, the real helper built by ``./scripts/setup``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.config import settings_from_env
from bolt_host.services import cgroups, exec_helper
from bolt_host.testing import RunningHost, running_host
from tests.helpers import async_wait_until, requires_tool
from tests.test_isolation import install_and_start, log_of, needs_root, wait_for_line, write_app

built = requires_tool(exec_helper.BUILT.exists(), "the exec helper is not built (./scripts/setup with gcc, libc6-dev)")


def helper_to_test() -> str:
    """The built helper; where the checkout lies under a folder the host must not trust (another
    user's), a copy in a private folder of root's, so the helper itself is still tested (the trust
    rules have tests of their own, with copies)."""
    if not exec_helper.BUILT.exists() or os.geteuid() != 0 or exec_helper.problem(exec_helper.BUILT) is None:
        return str(exec_helper.BUILT)
    private = tempfile.mkdtemp(prefix="bolt-exec-test-", dir="/var/tmp")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    copy = os.path.join(private, "bolt-exec")
    shutil.copy(exec_helper.BUILT, copy)
    os.chmod(private, 0o755)
    os.chmod(copy, 0o755)
    return copy


HELPER = helper_to_test()
UNTRUSTED = exec_helper.problem(HELPER)
trusted = requires_tool(UNTRUSTED is None, f"the exec helper is not built or not trusted here: {UNTRUSTED}")
NOBODY = 65534


def spawned_by(argv: list[str] | tuple[str, ...]) -> str:
    """What the host spawned to confine the app: ``helper`` or ``chain``."""
    return "helper" if argv[0] == os.path.realpath(HELPER) else "chain" if argv[0] == "/bin/sh" else argv[0]


@pytest.fixture(params=[pytest.param("helper", marks=trusted), "chain"])
async def confined(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningHost]:
    """A root host that confines apps with the helper, or with the chain (``BOLT_EXEC_HELPER=off``)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    setting = ("auto" if HELPER == str(exec_helper.BUILT) else HELPER) if request.param == "helper" else "off"
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0, exec_helper=setting) as bolt:
        bolt.host.state["test-repo"] = repo
        bolt.host.state["spawned-by"] = request.param
        assert (bolt.host.isolation.exec_helper is not None) == (request.param == "helper")
        yield bolt


REPORTER = """
    import os, resource, signal
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    for key in ("Uid", "Gid", "Groups", "NoNewPrivs", "CapEff", "CapPrm", "CapAmb"):
        print("STATUS", key, "=" + " ".join(status[key].split()), flush=True)
    print("CGROUP", open("/proc/self/cgroup").read().strip().replace("\\n", ";"), flush=True)
    for name in ("NOFILE", "NPROC", "AS"):
        print("LIMIT", name, *resource.getrlimit(getattr(resource, "RLIMIT_" + name)), flush=True)
    print("REPORTED", flush=True)
    signal.pause()
"""


def reported(log: str) -> dict[str, str]:
    """The reporter's lines: ``{"Uid": "=70000 70000 70000 70000", "LIMIT NOFILE": "256 256", ...}``."""
    found = {}
    for line in log.splitlines():
        words = line.split(" ", 2)
        if words[0] == "STATUS":
            found[words[1]] = words[2]
        elif words[0] == "LIMIT":
            found[f"LIMIT {words[1]}"] = words[2]
        elif words[0] == "CGROUP":
            found["CGROUP"] = line.partition(" ")[2]
    return found


def assert_dropped(status: dict[str, str], uid: int) -> None:
    assert status["Uid"] == status["Gid"] == f"={uid} {uid} {uid} {uid}", status
    assert status["Groups"] == "=", status  # no supplementary group
    assert status["NoNewPrivs"] == "=1", status
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "=0000000000000000", status


@needs_root
async def test_an_app_runs_as_its_uid_in_its_groups_with_its_limits(confined: RunningHost) -> None:
    write_app(confined.host.state["test-repo"], "reporter", REPORTER, limits={"nofile": 256})
    context = await install_and_start(confined, "reporter")
    status = reported(await wait_for_line(confined, "reporter", "REPORTED"))
    uid = (await confined.admin.get("/api/apps/reporter")).json()["body"]["confinement"]["uid"]
    assert_dropped(status, uid)
    assert status["LIMIT NOFILE"] == "256 256"
    confinement = confined.host.supervisor._apps["reporter"].confinement
    assert spawned_by(confinement.argv) == confined.host.state["spawned-by"]
    group = confinement.cgroup
    if group is not None:  # in its groups from its first line on (the same pid throughout)
        pid = context["pid"]
        assert status["CGROUP"] == Path(f"/proc/{pid}/cgroup").read_text().strip().replace("\n", ";")
        for folder in group.dirs.values():
            assert pid in {int(line) for line in (folder / "cgroup.procs").read_text().split()}, folder
    assert (await confined.admin.post("/api/apps/stop", json={"name": "reporter"})).status_code == 200


@needs_root
async def test_without_cgroups_processes_and_memory_are_rlimits(confined: RunningHost) -> None:
    """Every rlimit either way spawns: ``prlimit`` in the chain, the helper's own options."""
    confined.host.isolation.support = cgroups.NO_CGROUPS
    limits = {"nofile": 300, "pids": 50, "memory": "256MiB"}
    write_app(confined.host.state["test-repo"], "limited", REPORTER, limits=limits)
    await install_and_start(confined, "limited")
    status = reported(await wait_for_line(confined, "limited", "REPORTED"))
    uid = (await confined.admin.get("/api/apps/limited")).json()["body"]["confinement"]["uid"]
    assert_dropped(status, uid)
    memory = 256 * 1024 * 1024
    assert (status["LIMIT NOFILE"], status["LIMIT NPROC"], status["LIMIT AS"]) == (
        "300 300", "50 50", f"{memory} {memory}")
    argv = confined.host.supervisor._apps["limited"].confinement.argv
    if confined.host.state["spawned-by"] == "chain":
        assert "prlimit" in Path(argv[0]).name and "--nproc=50" in argv
    else:
        assert argv[0] == os.path.realpath(HELPER) and "--nproc=50:50" in argv
    assert (await confined.admin.post("/api/apps/stop", json={"name": "limited"})).status_code == 200


@needs_root
async def test_an_install_step_runs_as_the_app_with_its_limits(confined: RunningHost) -> None:
    repo, data_dir = confined.host.state["test-repo"], confined.host.settings.data_dir
    write_app(repo, "builder", "print('built')\n", limits={"nofile": 200})
    assert (await confined.admin.post("/api/apps/local", json={"path": "builder"})).status_code == 201
    isolation = confined.host.isolation
    app = confined.host.apps.require("builder")
    uid = isolation.assign(app)
    status = "grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapEff):' /proc/self/status"
    script = f"{status}; ulimit -n; cat {data_dir / 'db.json'}"
    argv = isolation.wrap_command(app, ["/bin/sh", "-c", script])
    if confined.host.state["spawned-by"] == "helper":
        assert argv[0] == os.path.realpath(HELPER) and "setpriv" not in " ".join(argv)
    else:
        assert Path(argv[0]).name == "prlimit" and any(Path(part).name == "setpriv" for part in argv)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": os.defpath})
    pairs = [line.partition(":") for line in done.stdout.splitlines() if ":" in line]
    lines = {key: " ".join(value.split()) for key, _, value in pairs}
    assert lines == {"Uid": f"{uid} {uid} {uid} {uid}", "Gid": f"{uid} {uid} {uid} {uid}", "Groups": "",
                     "NoNewPrivs": "1", "CapEff": "0000000000000000"}, done.stdout
    assert done.stdout.splitlines()[-1] == "200"
    assert "Permission denied" in done.stderr  # the host's state stays closed to it


@needs_root
async def test_a_command_that_does_not_exist_fails_the_start_with_the_reason(confined: RunningHost) -> None:
    write_app(confined.host.state["test-repo"], "missing", "", start="no-such-command-bolt-exec")
    assert (await confined.admin.post("/api/apps/local", json={"path": "missing"})).status_code == 201
    await confined.admin.post("/api/apps/start", json={"name": "missing"})

    def ended() -> dict[str, Any] | None:
        context = confined.host.supervisor.context("missing")
        return context if context and context["status"] in {"crashed", "failed"} else None

    context = await async_wait_until(ended, timeout=30, what="the start to fail")
    assert "exited with code 127" in context["reason"], context
    told = "bolt-exec: cannot run" if confined.host.state["spawned-by"] == "helper" else "setpriv: failed to execute"
    assert f"{told} no-such-command-bolt-exec" in log_of(confined, "missing")


def helper_copy(
    folder: Path, *, owner: int = 0, mode: int = 0o755, folder_mode: int = 0o755, parent_mode: int = 0o755,
    parent_owner: int = 0,
) -> Path:
    folder.mkdir(parents=True)
    copy = folder / "bolt-exec"
    shutil.copy(HELPER, copy)
    os.chown(copy, owner, owner)
    os.chmod(copy, mode)
    os.chmod(folder, folder_mode)
    os.chmod(folder.parent, parent_mode)
    os.chown(folder.parent, parent_owner, parent_owner)
    return copy


@needs_root
@built
def test_only_a_copy_nobody_else_can_change_is_trusted(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    good = helper_copy(tmp_path / "good")
    assert exec_helper.problem(good) is None and exec_helper.choose(str(good)) == str(good)
    linked = tmp_path / "good" / "link"
    linked.symlink_to(good)
    assert exec_helper.choose(str(linked)) == str(good)  # run by its real path
    refused = {
        "owned by uid 65534": helper_copy(tmp_path / "foreign", owner=NOBODY),
        "writable by others (mode 757)": helper_copy(tmp_path / "writable", mode=0o757),
        "writable by others (mode 775)": helper_copy(tmp_path / "open-folder", folder_mode=0o775),
        "folder {tmp_path}/open-parent is writable by others (mode 777)": helper_copy(
            tmp_path / "open-parent" / "bin", parent_mode=0o777),
        "folder {tmp_path}/foreign-parent is owned by uid 65534": helper_copy(
            tmp_path / "foreign-parent" / "bin", parent_owner=NOBODY),
        "not an executable file": helper_copy(tmp_path / "plain", mode=0o644),
        "No such file or directory": tmp_path / "absent" / "bolt-exec",
    }
    sticky = helper_copy(tmp_path / "sticky" / "bin", parent_mode=0o1777)  # as /tmp: nobody else can swap it
    assert exec_helper.problem(sticky) is None
    for reason, path in refused.items():
        assert reason.format(tmp_path=tmp_path) in (exec_helper.problem(path) or ""), path
        assert exec_helper.choose(str(path)) is None, path
    assert exec_helper.choose("off") is None


@needs_root
@built
async def test_a_host_given_an_unsafe_helper_says_so_and_spawns_through_the_chain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o755)
    unsafe = helper_copy(tmp_path / "bin", owner=NOBODY)
    repo = tmp_path / "repo"
    write_app(repo, "reporter", REPORTER)
    caplog.set_level(logging.INFO, logger="bolt_host.exec_helper")
    async with running_host(tmp_path / "data", local_repo=repo, exec_helper=str(unsafe)) as bolt:
        assert bolt.host.isolation.exec_helper is None
        assert f"exec helper {unsafe} not used (the file {unsafe} is owned by uid {NOBODY}" in caplog.text
        await install_and_start(bolt, "reporter")
        status = reported(await wait_for_line(bolt, "reporter", "REPORTED"))
        assert_dropped(status, bolt.host.isolation.identities.known("reporter") or -1)
        assert spawned_by(bolt.host.supervisor._apps["reporter"].confinement.argv) == "chain"
        assert (await bolt.admin.post("/api/apps/stop", json={"name": "reporter"})).status_code == 200


def run_helper(*args: str, helper: str = HELPER, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [*prefix, helper, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": os.defpath})


@needs_root
@built
def test_the_helper_stops_with_one_line_and_125_before_the_app_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    app = ["--", "/bin/sh", "-c", f"touch {marker}"]
    uid = ["--uid=70999", "--gid=70999"]
    failures = {
        "cannot join the cgroup of /nonexistent/tasks: No such file or directory": ["--join=/nonexistent/tasks", *uid],
        f"cannot join the cgroup of {tmp_path}: Is a directory": [f"--join={tmp_path}", *uid],
        "--join: not an absolute path: 'tasks'": ["--join=tasks", *uid],
        "cannot set nofile=4294967295:4294967295: Operation not permitted": ["--nofile=4294967295:4294967295", *uid],
        "--nofile: not SOFT:HARD (decimal, soft <= hard): '300:200'": ["--nofile=300:200", *uid],
        "--nproc: not SOFT:HARD: '50'": ["--nproc=50", *uid],
        "--uid: not an id from 1 to 4294967294: '0'": ["--uid=0", "--gid=70999"],
        "--gid: not an id from 1 to 4294967294: '-5'": ["--uid=70999", "--gid=-5"],
        "--uid: not an id from 1 to 4294967294: '7e3'": ["--uid=7e3", "--gid=70999"],
        "--uid given twice": [*uid, "--uid=70998"],
        "--uid and --gid are required": ["--uid=70999"],
        "unknown option '--user=70999' (usage: bolt-exec [--join=FILE]...": ["--user=70999", *uid],
    }
    for message, options in failures.items():
        done = run_helper(*options, *app)
        assert done.returncode == 125 and done.stderr.startswith(f"bolt-exec: {message}"), (options, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), done.stderr
    done = run_helper(*uid)
    assert (done.returncode, done.stderr) == (125, "bolt-exec: no \"--\" before the command\n")
    done = run_helper(*uid, "/bin/true")  # a command is never taken for an option's end
    assert done.returncode == 125 and done.stderr.startswith("bolt-exec: unknown option '/bin/true'")
    done = run_helper(*uid, "--")
    assert (done.returncode, done.stderr) == (125, "bolt-exec: no command after \"--\"\n")
    # not root: it cannot drop (nor join, nor raise a limit) and says so
    done = run_helper(*uid, *app, prefix=("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"))
    told = "bolt-exec: cannot clear the supplementary groups: Operation not permitted\n"
    assert (done.returncode, done.stderr) == (125, told)
    assert not marker.exists()


@needs_root
@built
def test_the_helper_runs_what_it_can_reach_and_says_what_it_cannot(tmp_path: Path) -> None:
    uid = ["--uid=70999", "--gid=70999"]
    missing = run_helper(*uid, "--", "no-such-command-bolt-exec")
    assert missing.returncode == 127
    assert missing.stderr == f"bolt-exec: cannot run no-such-command-bolt-exec: not found in PATH={os.defpath}\n"
    gone = tmp_path / "gone"
    ran = run_helper(*uid, "--", str(gone))
    assert (ran.returncode, ran.stderr) == (127, f"bolt-exec: cannot run {gone}: No such file or directory\n")
    closed = tmp_path / "closed"
    closed.write_text("#!/bin/sh\necho hi\n")
    closed.chmod(0o700)  # root's own: executable by root only
    refused = run_helper(*uid, "--", str(closed))
    assert (refused.returncode, refused.stderr) == (126, f"bolt-exec: cannot run {closed}: Permission denied\n")
    # found as root (a folder closed to the app on the way), run as the app: as setpriv did
    hidden = tmp_path / "private" / "bin"
    hidden.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    shutil.copy("/bin/cat", hidden / "cat")
    ran = run_helper(*uid, "--", str(hidden / "cat"), "/proc/self/status")
    assert ran.returncode == 0, ran.stderr
    assert "Uid:\t70999\t70999\t70999\t70999" in ran.stdout and "NoNewPrivs:\t1" in ran.stdout
    assert run_helper(*uid, "--", "/bin/cat", str(hidden / "cat")).returncode == 1  # its files stay closed
    with tempfile.TemporaryDirectory(dir="/tmp") as open_folder:  # a script without "#!": sh runs it
        os.chmod(open_folder, 0o755)
        script = Path(open_folder, "plain-script")
        script.write_text('echo "ran as $(id -u) with $*"\n')
        script.chmod(0o755)
        ran = run_helper(*uid, "--", str(script), "one", "two")
        assert (ran.returncode, ran.stdout) == (0, "ran as 70999 with one two\n"), ran.stderr


def test_the_setting_is_auto_off_or_an_absolute_path() -> None:
    assert settings_from_env({}).exec_helper == "auto"
    for value in ("auto", "off", "/usr/local/libexec/bolt-exec"):
        assert settings_from_env({"BOLT_EXEC_HELPER": value}).exec_helper == value
    for value in ("bin/bolt-exec", "", "on"):
        with pytest.raises(ValueError, match=r"BOLT_EXEC_HELPER .*must be auto, off or an absolute path"):
            settings_from_env({"BOLT_EXEC_HELPER": value})
