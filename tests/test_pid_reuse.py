"""Pid reuse, made to happen: a pid the host read a moment ago goes to an unrelated process.

Under load pids wrap every few minutes (``pid_max`` is often 32768), so any pid the host
holds without a pidfd may name someone else by the time it signals.  These tests free a pid
and hand it out again at once through ``/proc/sys/kernel/ns_last_pid`` (root only), right
where the host could be preempted, and check that the new owner gets no signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bolt_host.services import cgroups
from bolt_host.services.processes import CREATE_TIME_TOLERANCE, AppProcess, base_environment
from bolt_host.services.proctable import MARKER_VARIABLE, boot_time, read_marker, start_time
from bolt_host.services.tree_stop import terminate_tree
from tests.helpers import async_wait_until, wait_until
from tests.test_supervisor_harness import PROCS

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
IDLE = [sys.executable, str(PROCS / "never_listens.py")]

pytestmark = pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="reusing a pid on purpose needs root")


def now_as_start_time() -> float:
    """The start time a process forked now would have (on the clock of ``start_time``)."""
    return boot_time() + time.clock_gettime(time.CLOCK_BOOTTIME)


def start_as_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` as process ``pid`` (freed just before), as a pid wrap would hand it out
    again: the kernel gives the next fork ``ns_last_pid + 1``.  Another process on the machine
    may fork in between and take it: then try again."""
    for _ in range(50):
        NS_LAST_PID.write_text(str(pid - 1))
        started = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        if started.pid == pid:
            return started
        started.kill()
        started.wait()
    raise AssertionError(f"pid {pid} never came back to this test")


def hand_pid_to_a_stranger(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """End ``process`` and start an unrelated process under its pid.  A pid comes back only after
    the whole range was handed out, so its new owner starts later than start times can blur
    (a wrap of 32768 pids takes far longer than this wait)."""
    started = start_time(process.pid)
    assert started is not None
    wait_until(lambda: now_as_start_time() > started + 2 * CREATE_TIME_TOLERANCE, what="a later start")
    process.kill()
    process.wait()  # reaped (by its parent, or init for an adopted app): the pid is free
    return start_as_pid(process.pid, IDLE)


def end(*processes: subprocess.Popen[bytes] | None) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


async def test_a_sweep_after_an_adopted_process_died_spares_the_process_that_got_its_pid() -> None:
    """An adopted app is not the host's child: when it dies, init reaps it at once, and its pid and
    process-group id may go to another process before the stop's sweep.  That process leads a group
    of the same id, carries no marker: the sweep must signal neither it nor its group."""
    marker = "reborn:1@test"
    app = subprocess.Popen(
        IDLE, env={**base_environment(), MARKER_VARIABLE: marker}, stdout=subprocess.DEVNULL, start_new_session=True
    )
    stranger: subprocess.Popen[bytes] | None = None
    adopted: AppProcess | None = None
    try:
        await async_wait_until(lambda: read_marker(app.pid) == marker, what="the marker")
        started = start_time(app.pid)
        assert started is not None
        adopted = AppProcess.adopt(app.pid, started, marker)
        assert adopted is not None and adopted.group_pinned
        stranger = hand_pid_to_a_stranger(app)
        assert not adopted.group_pinned  # though the event loop has not seen the exit yet

        assert await terminate_tree(adopted, marker=marker, since=started, grace=0.2) == []

        assert stranger.poll() is None, f"the sweep signalled the new owner of pid {app.pid}: {stranger.returncode}"
    finally:
        if adopted is not None:
            adopted.close()
        end(app, stranger)


@pytest.fixture
def app_cgroup(tmp_path: Path) -> Iterator[cgroups.AppCgroup]:
    """A real cgroup of this machine's kind, as the host makes one for an app."""
    support = cgroups.detect(tmp_path / "data")
    group = support.group("reused")
    if group is None:
        pytest.skip("no cgroups the host may create here")
    group.create({})
    try:
        yield group
    finally:
        group.remove()


def join(group: cgroups.AppCgroup, pid: int) -> None:
    for procs in group.procs_files():
        procs.write_text(str(pid))


class ReadThenPreempted:
    """A group's member list as the host reads it (``read``: the real read), where the host is
    preempted after its first read: meanwhile ``member`` ends and its pid goes to a process
    outside the group."""

    def __init__(self, read: Callable[[], set[int]], member: subprocess.Popen[bytes]) -> None:
        self.read = read
        self.member = member
        self.stranger: subprocess.Popen[bytes] | None = None

    def __call__(self) -> set[int]:
        listed = self.read()
        if self.stranger is None:
            assert self.member.pid in listed
            self.stranger = hand_pid_to_a_stranger(self.member)
        return listed


async def test_a_stop_reading_the_apps_cgroup_spares_a_listed_pid_that_went_to_another_process(
    tmp_path: Path, app_cgroup: cgroups.AppCgroup
) -> None:
    log_fd = os.open(tmp_path / "out.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        main = AppProcess.spawn(IDLE, cwd=tmp_path, env=base_environment(), log_fd=log_fd)
    finally:
        os.close(log_fd)
    helper = subprocess.Popen(IDLE, stdout=subprocess.DEVNULL, start_new_session=True)
    members = ReadThenPreempted(app_cgroup.members, helper)
    try:
        join(app_cgroup, main.pid)
        join(app_cgroup, helper.pid)

        survivors = await terminate_tree(main, marker="reused:1@test", since=main.create_time, grace=0.2,
                                         group_members=members)  # fmt: skip

        assert survivors == [] and await main.exited == -signal.SIGTERM
        assert members.stranger is not None and members.stranger.poll() is None, "the stop signalled a stranger"
    finally:
        main.send(signal.SIGKILL)
        await main.exited
        main.reap()
        main.close()
        end(helper, members.stranger)


async def test_emptying_a_cgroup_spares_a_listed_pid_that_went_to_another_process(
    app_cgroup: cgroups.AppCgroup,
) -> None:
    helper = subprocess.Popen(IDLE, stdout=subprocess.DEVNULL, start_new_session=True)
    members = ReadThenPreempted(app_cgroup.members, helper)
    app_cgroup.members = members  # type: ignore[method-assign]  # the real reads, with the preemption between
    try:
        join(app_cgroup, helper.pid)

        killed, left = app_cgroup.kill_all()

        assert members.stranger is not None and members.stranger.poll() is None, "kill_all killed a stranger"
        assert left == set() and killed == set()  # the only member had ended: nobody to kill, nor to reap by pid
    finally:
        end(helper, members.stranger)
