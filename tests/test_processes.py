"""Process mechanics with real processes: spawn, pidfd exit watch, tree kill, identity checks."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest

from bolt_host.errors import BoltError
from bolt_host.services.processes import (
    AppProcess,
    TreeMember,
    base_environment,
    build_command,
    describe_exit,
    enable_child_subreaper,
    find_tree,
    identity_matches,
)
from bolt_host.services.proctable import MARKER_VARIABLE, ProcessTable, read_marker
from bolt_host.services.start_command import LAUNCHER
from bolt_host.services.stats import TreeSampler
from bolt_host.services.tree_stop import terminate_tree
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import PROCS, process_gone, read_pid_file, wait_file


def spawn(tmp_path: Path, script: str, *args: str, marker: str = "fixture:1", **env: str) -> AppProcess:
    log_fd = os.open(tmp_path / "out.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        environment = {**base_environment(), MARKER_VARIABLE: marker, **env}
        return AppProcess.spawn(
            [sys.executable, str(PROCS / script), *args], cwd=tmp_path, env=environment, log_fd=log_fd
        )
    finally:
        os.close(log_fd)


async def finish(process: AppProcess) -> None:
    """End a test's process by its pidfd and reap it."""
    if process.alive:
        process.send(signal.SIGKILL)
        await process.exited
    process.reap()
    process.close()


def test_build_command_from_start_or_main() -> None:
    assert build_command({"start": "node server.js --port 1"}) == ["node", "server.js", "--port", "1"]
    assert build_command({"start": ["./run", 3]}) == ["./run", "3"]
    assert build_command({"main": "app.py"}) == [sys.executable, "app.py"]
    # issue 13: a .js main goes through the launcher, which listens for a module that exports an app
    assert build_command({"main": "server.js"}) == ["node", str(LAUNCHER), "server.js"]
    with pytest.raises(BoltError):
        build_command({"name": "x", "main": None, "start": None})
    with pytest.raises(BoltError):
        build_command({"name": "x", "main": "run.rb"})


def test_base_environment_passes_only_safe_variables() -> None:
    source = {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "HOME": "/h",
        "TZ": "UTC",
        "BOLT_ADMIN_PASSWORD": "x",
        "SSH_AUTH_SOCK": "s",
    }
    assert base_environment(source) == {"PATH": "/bin", "LANG": "C.UTF-8", "HOME": "/h", "TZ": "UTC"}
    assert base_environment({})["PATH"] == os.defpath


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None) == "exited (adopted)"


def test_child_subreaper_can_be_enabled() -> None:
    assert enable_child_subreaper() is True


async def test_exit_code_is_seen_through_the_pidfd(tmp_path: Path) -> None:
    process = spawn(tmp_path, "exit_code.py", "3")

    assert await process.exited == 3
    process.reap()
    process.close()
    assert process_gone(process.pid)
    assert "fatal: cannot go on" in (tmp_path / "out.log").read_text()


async def test_death_by_signal_is_a_negative_code_and_no_thread_per_child(tmp_path: Path) -> None:
    threads_before = threading.active_count()
    processes = [spawn(tmp_path, "never_listens.py") for _ in range(5)]

    assert threading.active_count() == threads_before  # no child-watcher thread per process
    for process in processes:
        process.send(signal.SIGKILL)
    assert [await process.exited for process in processes] == [-signal.SIGKILL] * 5
    for process in processes:
        await finish(process)


async def test_terminate_tree_kills_term_ignoring_descendants_and_setsid_escapers(tmp_path: Path) -> None:
    enable_child_subreaper()
    pid_file = tmp_path / "pids"
    process = spawn(tmp_path, "term_ignoring_tree.py", str(pid_file), marker="tree:1")
    try:
        main, child, grandchild = read_pid_file(await wait_file(pid_file))
        table = ProcessTable.snapshot()
        root = TreeMember(main, process.create_time)
        tree = find_tree(table, root, process.pgid, "tree:1", process.create_time, group_pinned=True, anywhere=False)
        members = {member.pid for member in tree}
        assert members == {main, child, grandchild}

        survivors = await terminate_tree(process, marker="tree:1", since=process.create_time, grace=0.2)

        assert survivors == []
        assert await process.exited == -signal.SIGKILL
        process.reap()
        assert all(process_gone(pid) for pid in (main, child, grandchild))
    finally:
        for pid in read_pid_file(pid_file) if pid_file.exists() else []:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
        await finish(process)


async def test_terminate_tree_finds_orphans_reparented_to_the_host(tmp_path: Path) -> None:
    """The main process obeys SIGTERM and dies first; its TERM-ignoring children are found by marker."""
    enable_child_subreaper()
    pid_file = tmp_path / "pids"
    process = spawn(tmp_path, "term_ignoring_tree.py", str(pid_file), marker="orphans:1")
    try:
        main, child, grandchild = read_pid_file(await wait_file(pid_file))
        process.send(signal.SIGKILL)  # leaves child and grandchild re-parented to us
        await process.exited
        assert psutil.Process(child).ppid() == os.getpid()

        survivors = await terminate_tree(process, marker="orphans:1", since=process.create_time, grace=0.2)

        assert survivors == []
        process.reap()
        assert all(process_gone(pid) for pid in (main, child, grandchild))
    finally:
        for pid in read_pid_file(pid_file) if pid_file.exists() else []:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
        await finish(process)


async def test_the_idle_round_finds_the_orphans_a_whole_pass_finds(tmp_path: Path) -> None:
    """While nobody reads stats the sampler only lists the host's children; it must find
    the same re-parented app processes as a pass over the whole table."""
    enable_child_subreaper()
    pid_file = tmp_path / "pids"
    process = spawn(tmp_path, "term_ignoring_tree.py", str(pid_file), marker="idle:1")
    try:
        main, child, _grandchild = read_pid_file(await wait_file(pid_file))
        process.send(signal.SIGKILL)  # the child re-parents to us (the grandchild stays its child)
        await process.exited
        await async_wait_until(lambda: psutil.Process(child).ppid() == os.getpid(), what="re-parenting")

        roots = {"idle": main}
        light = TreeSampler().orphans(roots)
        _, whole = TreeSampler().sample(roots, {"idle:1": "idle"})

        assert light is not None
        assert [(o.pid, o.marker) for o in light] == [(child, "idle:1")]
        assert sorted(light, key=lambda o: o.pid) == sorted(whole, key=lambda o: o.pid)
        assert await terminate_tree(process, marker="idle:1", since=process.create_time, grace=0.2) == []
        process.reap()
    finally:
        for pid in read_pid_file(pid_file) if pid_file.exists() else []:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
        await finish(process)


async def test_adoption_requires_pid_start_time_and_marker(tmp_path: Path) -> None:
    process = spawn(tmp_path, "never_listens.py", marker="adoptee:4")
    try:
        # environ is filled in late in execve, possibly after Popen returned
        await async_wait_until(lambda: read_marker(process.pid) == "adoptee:4", what="the marker")
        assert identity_matches(process.pid, process.create_time, "adoptee:4")
        assert not identity_matches(process.pid, process.create_time, "adoptee:5")
        assert not identity_matches(process.pid, process.create_time - 10, "adoptee:4")
        assert AppProcess.adopt(process.pid, process.create_time - 10, "adoptee:4") is None
        assert AppProcess.adopt(os.getpid(), psutil.Process().create_time(), "adoptee:4") is None

        adopted = AppProcess.adopt(process.pid, process.create_time, "adoptee:4")
        assert adopted is not None and adopted.adopted
        adopted.send(signal.SIGKILL)
        assert await adopted.exited is None  # an adopted process's exit code is not ours to know
        adopted.close()
    finally:
        await finish(process)
