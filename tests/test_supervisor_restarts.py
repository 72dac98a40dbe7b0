"""Crashes and restarts: kill -9 replacement, crash loops, backoff, restart policies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bolt_host.errors import APP_NOT_RUNNING, BoltError
from bolt_host.services.ports import is_port_free
from bolt_host.services.proctable import read_environ_value
from bolt_host.services.restarts import CrashHistory, RestartPolicy, wants_restart
from bolt_host.services.sandbox import UID, Isolation
from bolt_host.services.start_batch import start_each
from bolt_host.services.tokens import AppTokens
from bolt_host.statefile import StateFile
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import Harness, marked_pids, process_gone, supervisor_harness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with supervisor_harness(tmp_path) as running:
        yield running


async def test_kill_9_of_a_running_app_is_replaced_quickly(harness: Harness) -> None:
    app = harness.app("phoenix", "http_server.py", health="/health")
    supervisor = harness.supervisor()
    await supervisor.boot()
    first = await supervisor.start_app(app)

    os.kill(first["pid"], signal.SIGKILL)
    second = await async_wait_until(
        lambda: (c := supervisor.context("phoenix")) and c["status"] == "running" and c["pid"] != first["pid"] and c,
        timeout=10,
        what="a replacement process",
    )

    async with httpx.AsyncClient(trust_env=False) as client:
        answer = (await client.get(f"http://127.0.0.1:{second['port']}/whoami")).json()
    assert answer["pid"] == second["pid"]
    assert second["restarts"] == 1
    assert process_gone(first["pid"])
    crashed = next(body for name, body in harness.events if name == "app-crashed")
    assert crashed["exitCode"] == -9 and crashed["reason"] == "killed by SIGKILL"
    backoff = next(body for name, body in harness.events if name == "app-backoff")
    assert backoff["status"] == "backoff" and backoff["nextRestartAt"].endswith("Z")
    assert harness.event_names("phoenix")[-3:] == ["app-backoff", "app-starting", "app-started"]
    assert marked_pids("phoenix") == [second["pid"]]


class SlowDisk(StateFile):
    """A state file whose durable writes wait while ``held`` is clear (a disk taking its time)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.held = threading.Event()
        self.held.set()
        self.waiting = threading.Event()  # a write waits for the disk

    def _next_write(self) -> Callable[[], None]:
        write = super()._next_write()

        def when_the_disk_is_free() -> None:
            if not self.held.is_set():
                self.waiting.set()
            self.held.wait(timeout=60)
            write()

        return when_the_disk_is_free


async def test_a_crash_restart_spawns_without_waiting_for_the_disk_and_a_killed_host_finds_it(
    harness: Harness,
) -> None:
    """The record of the new generation is visible (page cache) before its process exists, durable
    later: a host started after a kill -9 of this one adopts or ends that process; a machine
    crash would end it anyway.  So no fsync sits between the crash and the spawn."""
    harness.state = SlowDisk(harness.state.path)
    harness.tokens = AppTokens(harness.state)
    app = harness.app("phoenix", "http_server.py", health="/health")
    supervisor = harness.supervisor()
    await supervisor.boot()
    first = await supervisor.start_app(app)
    harness.state.held.clear()  # from here on nothing reaches the disk until the test says so
    try:
        os.kill(first["pid"], signal.SIGKILL)
        spawned = await async_wait_until(
            lambda: (c := supervisor.context("phoenix")) and c["pid"] not in (None, first["pid"]) and c["pid"],
            what="the replacement spawned while the disk holds every write",
        )
        harness.track(spawned)
        token = await async_wait_until(lambda: read_environ_value(spawned, "BOLT_APP_TOKEN"), what="its exec")
        durable = json.loads(harness.state.path.read_bytes())["supervisor"]["phoenix"]
        assert durable["pid"] == first["pid"]  # the main file still names the killed process
        after_kill_9 = StateFile(harness.state.path)  # what a host started now would load
        assert after_kill_9.get("supervisor", "phoenix")["generation"] == durable["generation"] + 1
        assert AppTokens(after_kill_9).belongs_to("phoenix", token)  # so boot can tell the process is ours
    finally:
        harness.state.held.set()
    running = await harness.wait_status(supervisor, "phoenix", "running")
    assert running["pid"] == spawned
    await async_wait_until(lambda: not harness.state.unsaved, what="the durable write")
    assert json.loads(harness.state.path.read_bytes())["supervisor"]["phoenix"]["pid"] == spawned


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid per app needs the host to run as root (as CI does)")
async def test_the_first_start_with_a_new_uid_waits_until_the_uid_is_on_disk(harness: Harness) -> None:
    """A new uid is durable before anything runs as it (files the app keeps must never belong to
    a number a machine crash made the host forget): this spawn waits for the fsync."""
    harness.state = SlowDisk(harness.state.path)
    harness.tokens = AppTokens(harness.state)
    isolation = Isolation(harness.data_dir, harness.state)
    if isolation.mode != UID:
        pytest.skip("no uid per app on this machine")
    isolation.secure_data_dir()
    app = harness.app("newcomer", "http_server.py", health="/health")
    supervisor = harness.supervisor(isolation=isolation)
    await supervisor.boot()
    harness.state.held.clear()
    try:
        start = asyncio.ensure_future(supervisor.start_app(app))
        await async_wait_until(harness.state.waiting.is_set, what="a write waiting for the disk")
        await async_wait_until(lambda: supervisor.context("newcomer") is not None, what="the start")
        assert supervisor.context("newcomer")["pid"] is None and marked_pids("newcomer") == []
        assert StateFile(harness.state.path).get("identities", "newcomer") is None  # not even visible
    finally:
        harness.state.held.set()
    started = await start
    harness.track(started["pid"])
    assert StateFile(harness.state.path).get("identities", "newcomer") is not None


async def test_crash_loop_backs_off_then_fails(harness: Harness) -> None:
    app = harness.app("looper", "crash_later.py", env={"CRASH_AFTER": "0.2"})
    supervisor = harness.supervisor(restart_policy=RestartPolicy(burst=4, window_seconds=60))
    await supervisor.boot()
    await supervisor.start_app(app)

    context = await harness.wait_status(supervisor, "looper", "failed", timeout=30)

    names = harness.event_names("looper")
    assert names.count("app-crashed") == 4
    assert names.count("app-backoff") == 3 and names[-1] == "app-failed"
    assert "backoff" in harness.statuses("looper")
    assert "crash loop: 4 crashes within 60 s" in context["reason"]
    assert "crash_later: crashing now" in context["reason"]
    assert context["restarts"] == 3 and context["pid"] is None
    assert marked_pids("looper") == []
    assert not supervisor.is_active("looper")


async def test_stop_cancels_a_pending_restart(harness: Harness) -> None:
    app = harness.app("patient", "http_server.py")
    supervisor = harness.supervisor(restart_policy=RestartPolicy(first_seconds=60, base_seconds=60))
    await supervisor.boot()
    first = await supervisor.start_app(app)
    os.kill(first["pid"], signal.SIGKILL)
    waiting = await harness.wait_status(supervisor, "patient", "backoff")
    timer = supervisor._apps["patient"].restart_task
    assert waiting["nextRestartAt"] is not None and timer is not None

    final = await supervisor.stop_app("patient")

    assert final["status"] == "stopped" and final["nextRestartAt"] is None
    await asyncio.wait({timer}, timeout=5)
    assert timer.cancelled()
    assert marked_pids("patient") == []
    assert harness.event_names("patient")[-2:] == ["app-stopping", "app-stopped"]


async def test_start_during_backoff_starts_at_once(harness: Harness) -> None:
    app = harness.app("eager", "http_server.py")
    supervisor = harness.supervisor(restart_policy=RestartPolicy(first_seconds=60, base_seconds=60))
    await supervisor.boot()
    first = await supervisor.start_app(app)
    os.kill(first["pid"], signal.SIGKILL)
    await harness.wait_status(supervisor, "eager", "backoff")

    second = await supervisor.start_app(app)

    assert second["status"] == "running" and second["pid"] != first["pid"]
    assert marked_pids("eager") == [second["pid"]]


async def test_restart_never_leaves_a_crashed_app_down(harness: Harness) -> None:
    crash_file = harness.tmp_path / "crash-now"
    app = harness.app("once", "crash_later.py", restart="never", env={"CRASH_FILE": str(crash_file)})
    supervisor = harness.supervisor()
    await supervisor.boot()
    context = await supervisor.start_app(app)

    crash_file.touch()
    crashed = await harness.wait_status(supervisor, "once", "crashed")
    await async_wait_until(lambda: supervisor.context("once")["pid"] is None, what="the tree to be swept")

    assert crashed["exitCode"] == 1
    assert "backoff" not in harness.statuses("once")
    assert process_gone(context["pid"]) and is_port_free(context["port"])
    with pytest.raises(BoltError) as failure:
        await supervisor.stop_app("once")
    assert failure.value.code == APP_NOT_RUNNING


async def test_clean_exit_under_on_failure_is_a_stop(harness: Harness) -> None:
    app = harness.app("job", "exit_code.py", "0", server=False)
    supervisor = harness.supervisor()
    await supervisor.boot()
    await supervisor.start_app(app)

    context = await harness.wait_status(supervisor, "job", "stopped")

    assert context["exitCode"] == 0
    assert "app-crashed" not in harness.event_names("job")


async def test_restart_always_restarts_after_a_clean_exit(harness: Harness) -> None:
    app = harness.app("again", "exit_code.py", "0", server=False, restart="always")
    supervisor = harness.supervisor(restart_policy=RestartPolicy(burst=3))
    await supervisor.boot()
    await supervisor.start_app(app)

    context = await harness.wait_status(supervisor, "again", "failed")

    assert harness.event_names("again").count("app-crashed") == 3
    assert "crash loop" in context["reason"]


def test_backoff_delay_grows_with_jitter_and_a_cap() -> None:
    policy = RestartPolicy(base_seconds=0.1, factor=2, max_seconds=30, jitter=0.1)

    assert policy.delay(0, rand=lambda: 0.0) == 0.0  # the first restart comes at once
    assert policy.delay(1, rand=lambda: 0.5) == pytest.approx(0.1)
    assert policy.delay(4, rand=lambda: 0.5) == pytest.approx(0.8)
    assert policy.delay(1, rand=lambda: 0.0) == pytest.approx(0.09)
    assert policy.delay(1, rand=lambda: 1.0) == pytest.approx(0.11)
    assert policy.delay(20, rand=lambda: 0.5) == pytest.approx(30)
    assert RestartPolicy(first_seconds=2.0).delay(0) == 2.0


def test_crash_history_resets_after_stable_uptime_and_limits_the_rate() -> None:
    history = CrashHistory(RestartPolicy(stable_seconds=30, burst=3, window_seconds=60))

    history.record(now=0, uptime=1)
    history.record(now=1, uptime=1)
    assert history.attempt == 2 and not history.over_limit
    history.record(now=40, uptime=35)  # a stable run: backoff starts over
    assert history.attempt == 1 and history.over_limit  # but 3 crashes within 60 s

    history.record(now=200, uptime=1)  # the old crashes left the window
    assert not history.over_limit and len(history.recent) == 1


def test_restart_modes() -> None:
    assert wants_restart("on-failure", 1) and wants_restart("on-failure", -9) and wants_restart(None, None)
    assert not wants_restart("on-failure", 0)
    assert wants_restart("always", 0)
    assert not wants_restart("never", 1)


class CountedRequests(StateFile):
    """A state file that counts the durable writes asked for without waiting (``commit_soon``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.soon = 0

    def commit_soon(self) -> None:
        self.soon += 1
        super().commit_soon()


async def test_the_launches_of_a_bulk_start_leave_the_pids_durable_write_to_the_last(harness: Harness) -> None:
    """While launches wait for their turn, a launch only records its pid: the last one asks for the
    write (each start still waits for its pid on disk before it answers).  A write after each
    launch cost ~0.7 ms of the host's CPU, about 120 of them for a start of 200 apps."""
    harness.state = CountedRequests(harness.state.path)
    harness.tokens = AppTokens(harness.state)
    apps = [harness.app(f"bulk{i}", "http_server.py", health="/health") for i in range(4)]
    supervisor = harness.supervisor()
    await supervisor.boot()
    asked_before = harness.state.soon
    started = await start_each(apps, supervisor.start_app, 0)
    assert all(isinstance(context, dict) and context["status"] == "running" for context in started), started
    # one after the records' shared visible write (before the launches), one after the last launch
    assert harness.state.soon - asked_before == 2
    on_disk = json.loads(harness.state.path.read_bytes())["supervisor"]
    assert [on_disk[app["name"]]["pid"] for app in apps] == [context["pid"] for context in started]
    await supervisor.stop_apps([app["name"] for app in apps])
