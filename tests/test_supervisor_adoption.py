"""Host restarts: adoption after a crash, no duplicates, pid-reuse guard, autostart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host.services.supervisor import SECTION
from bolt_host.statefile import StateFile
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import (
    PROCS,
    Harness,
    marked_pids,
    process_gone,
    read_pid_file,
    supervisor_harness,
    wait_file,
)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with supervisor_harness(tmp_path) as running:
        yield running


async def whoami(port: int) -> int:
    async with httpx.AsyncClient(trust_env=False) as client:
        return (await client.get(f"http://127.0.0.1:{port}/whoami", timeout=5)).json()["pid"]


async def test_boot_after_a_crash_adopts_the_same_process(harness: Harness) -> None:
    app = harness.app("sticky", "http_server.py", health="/health")
    first_host = harness.supervisor()
    await first_host.boot()
    before = await first_host.start_app(app)
    await first_host.detach()  # the host "crashed": nothing stopped, nothing written

    second_host = harness.supervisor()
    await second_host.boot()

    adopted = second_host.context("sticky")
    assert adopted["status"] == "running" and adopted["pid"] == before["pid"]
    assert adopted["port"] == before["port"] and adopted["startedAt"] == before["startedAt"]
    assert marked_pids("sticky") == [before["pid"]]  # no second copy
    assert await whoami(adopted["port"]) == before["pid"]

    os.kill(before["pid"], signal.SIGKILL)  # exit detection works for adopted processes
    replaced = await async_wait_until(
        lambda: (c := second_host.context("sticky")) and c["status"] == "running" and c["pid"] != before["pid"] and c,
        timeout=10,
        what="the adopted app to be replaced",
    )
    assert await whoami(replaced["port"]) == replaced["pid"]
    crashed = next(body for name, body in harness.events if name == "app-crashed")
    assert crashed["exitCode"] is None and crashed["reason"] == "exited (adopted)"
    assert marked_pids("sticky") == [replaced["pid"]]


async def test_a_recorded_pid_that_is_not_ours_is_never_signalled(harness: Harness) -> None:
    stranger = subprocess.Popen(
        [sys.executable, str(PROCS / "never_listens.py")], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        harness.app("reused", "http_server.py")
        harness.app("gone", "http_server.py")
        stranger_started = psutil.Process(stranger.pid).create_time()
        records = harness.state
        # Right pid and start time but no marker (pid reuse the marker catches) ...
        records.put(SECTION, "reused", _record("reused", stranger.pid, stranger_started, desired="running"))
        # ... and a pid whose start time does not match (the record's process is gone).
        records.put(SECTION, "gone", _record("gone", stranger.pid, stranger_started - 100, desired="stopped"))

        host = harness.supervisor()
        await host.boot()

        assert stranger.poll() is None and psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE
        restarted = host.context("reused")
        assert restarted["status"] == "running" and restarted["pid"] != stranger.pid  # autostarted afresh
        assert host.context("gone")["status"] == "stopped"  # desired stopped: left alone
        assert records.get(SECTION, "gone")["pid"] is None
        await host.shutdown()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def _record(name: str, pid: int, create_time: float, desired: str) -> dict[str, Any]:
    return {
        "name": name,
        "pid": pid,
        "create_time": create_time,
        "port": None,
        "generation": 7,
        "desired": desired,
        "startedAt": "2024-01-01T00:00:00.000Z",
        "restarts": 0,
    }


async def test_shutdown_remembers_running_apps_for_the_next_boot(harness: Harness) -> None:
    runner = harness.app("autostarted", "http_server.py", health="/health")
    harness.app("parked", "http_server.py")
    first_host = harness.supervisor()
    await first_host.boot()
    before = await first_host.start_app(runner)
    await first_host.start_app(harness.apps["parked"])
    await first_host.stop_app("parked")

    await first_host.shutdown()

    assert process_gone(before["pid"]) and marked_pids("autostarted") == []
    record = StateFile(harness.state.path).get(SECTION, "autostarted")
    assert record["desired"] == "running" and record["pid"] is None

    second_host = harness.supervisor()
    await second_host.boot()

    after = second_host.context("autostarted")
    assert after["status"] == "running" and after["pid"] != before["pid"]
    assert await whoami(after["port"]) == after["pid"]
    assert second_host.context("parked")["status"] == "stopped"
    await second_host.shutdown()

    third_host = harness.supervisor(autostart=False)
    await third_host.boot()
    assert third_host.context("autostarted")["status"] == "stopped"


async def test_host_killed_with_sigkill_leaves_the_app_running_for_the_next_host(harness: Harness) -> None:
    app = harness.app("survivor", "http_server.py", health="/health")
    args = [str(harness.data_dir), json.dumps(app), str(harness.port_range[0]), str(harness.port_range[1])]
    # the runners own the state file now (each loads it from disk)

    first_runner = _runner(*args, "--start")
    try:
        context = await _read_context(first_runner)
        harness.track(context["pid"])
        first_runner.kill()
        first_runner.wait()
        assert not process_gone(context["pid"])
        assert await whoami(context["port"]) == context["pid"]

        second_runner = _runner(*args)
        try:
            adopted = await _read_context(second_runner)
            assert adopted["status"] == "running" and adopted["pid"] == context["pid"]
            assert marked_pids("survivor") == [context["pid"]]
            second_runner.send_signal(signal.SIGTERM)  # graceful shutdown stops the adopted app
            assert await asyncio.to_thread(second_runner.wait, 30) == 0
            await async_wait_until(lambda: process_gone(context["pid"]), what="the adopted app to stop")
        finally:
            _end(second_runner)
    finally:
        _end(first_runner)


async def test_stopping_an_adopted_app_ends_its_orphans_that_went_to_another_parent(harness: Harness) -> None:
    """After a host crash the app's orphans re-parent to init (or another subreaper), never to
    the new host: the stop finds them by their marker anywhere, not among its own children."""
    pid_file = harness.tmp_path / "tree-pids"
    app = harness.app("escaper", "term_ignoring_tree.py", str(pid_file))
    args = [str(harness.data_dir), json.dumps(app), str(harness.port_range[0]), str(harness.port_range[1])]
    first_runner = _runner(*args, "--start")
    try:
        await _read_context(first_runner)
        main, child, grandchild = read_pid_file(await wait_file(pid_file))
        harness.track(main, child, grandchild)
        first_runner.kill()  # the host dies ...
        first_runner.wait()
        os.kill(child, signal.SIGKILL)  # ... then the grandchild's parent: it is orphaned away from any host
        await async_wait_until(lambda: process_gone(child), what="the middle process to go")
        assert psutil.Process(grandchild).ppid() != first_runner.pid

        second_runner = _runner(*args)
        try:
            adopted = await _read_context(second_runner)
            assert adopted["status"] == "running" and adopted["pid"] == main
            second_runner.send_signal(signal.SIGTERM)  # graceful shutdown stops the adopted tree
            assert await asyncio.to_thread(second_runner.wait, 30) == 0
            assert process_gone(main) and process_gone(grandchild)
            assert marked_pids("escaper") == []
        finally:
            _end(second_runner)
    finally:
        _end(first_runner)


async def test_stopping_an_adopted_app_leaves_another_hosts_app_of_the_same_name_alone(harness: Harness) -> None:
    """Two hosts on one machine, each with an app ``twin`` at its first start.  Stopping this host's
    adopted ``twin`` searches the whole machine for its orphans by marker: the other host's
    ``twin``, started later, must not look like one of them."""
    app = harness.app("twin", "http_server.py", health="/health")
    first_host = harness.supervisor()
    await first_host.boot()
    ours = await first_host.start_app(app)
    await first_host.detach()  # the host "crashed": the next one adopts the app
    second_host = harness.supervisor()
    await second_host.boot()
    assert second_host.context("twin")["pid"] == ours["pid"]

    other_data = harness.tmp_path / "other-host"
    low, high = harness.port_range
    other_runner = _runner(str(other_data), json.dumps(app), str(low + 50), str(high), "--start")
    try:
        theirs = await _read_context(other_runner)
        harness.track(theirs["pid"])
        assert theirs["status"] == "running" and theirs["pid"] != ours["pid"]

        await second_host.stop_app("twin")
        assert process_gone(ours["pid"])
        assert not process_gone(theirs["pid"]), "stopping our app signalled another host's app"
        assert await whoami(theirs["port"]) == theirs["pid"]
        other_runner.send_signal(signal.SIGTERM)  # its own graceful shutdown stops its app
        assert await asyncio.to_thread(other_runner.wait, 30) == 0
        await async_wait_until(lambda: process_gone(theirs["pid"]), what="the other host's app to stop")
    finally:
        _end(other_runner)


def _runner(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROCS / "host_runner.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


async def _read_context(runner: subprocess.Popen[str]) -> dict[str, Any]:
    assert runner.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(runner.stdout.readline), timeout=60)
    assert line, f"host_runner exited early with {runner.poll()}"
    return json.loads(line)


def _end(runner: subprocess.Popen[str]) -> None:
    if runner.poll() is None:
        runner.kill()
    runner.wait()
    if runner.stdout is not None:
        runner.stdout.close()


async def test_boot_ends_an_adopted_process_whose_stop_had_recorded_its_intent(harness: Harness) -> None:
    app = harness.app("halfway", "http_server.py", health="/health")
    first_host = harness.supervisor()
    await first_host.boot()
    before = await first_host.start_app(app)
    # A stop naming many apps records each app as meant to be stopped (its pid still in the
    # record) as soon as it has signalled it; the host dies before the process is gone.
    record = harness.state.get(SECTION, "halfway")
    harness.state.put(SECTION, "halfway", {**record, "desired": "stopped"})
    await harness.state.commit()
    await first_host.detach()
    assert not process_gone(before["pid"])

    second_host = harness.supervisor()
    await second_host.boot()

    assert process_gone(before["pid"]) and marked_pids("halfway") == []
    assert second_host.context("halfway")["status"] == "stopped"
    assert harness.state.get(SECTION, "halfway")["desired"] == "stopped"
    await second_host.shutdown()
