"""Host start and stop: a plugin that fails to start is named and leaves nothing running;
an in-process restart (stop + start, as the device backend's reboot does) delivers each
event to plugins once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from bolt_host import hookimpl
from bolt_host.app import create_app
from bolt_host.host import PluginStartupError
from bolt_host.testing import running_host, settings_for_tests

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Started and stopped like any plugin; remembers what it saw."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.events: list[str] = []

    @hookimpl
    def startup(self, host: Any) -> None:
        self.calls.append("startup")

    @hookimpl
    def shutdown(self, host: Any) -> None:
        self.calls.append("shutdown")

    @hookimpl
    def on_event(self, host: Any, event: Any) -> None:
        self.events.append(event.name)


class Broken:
    """Fails in its startup, after noting the pid of the app the host autostarted."""

    def __init__(self) -> None:
        self.seen_pid: int | None = None
        self.shutdowns = 0

    @hookimpl
    def startup(self, host: Any) -> None:
        context = host.supervisor.context("ticker") or {}
        self.seen_pid = context.get("pid")
        raise RuntimeError("no licence key")

    @hookimpl
    def shutdown(self, host: Any) -> None:
        self.shutdowns += 1


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_a_failing_startup_names_the_plugin_and_stops_what_had_started(tmp_path: Path) -> None:
    async with running_host(tmp_path) as bolt:  # leaves ticker installed and meant to run
        await bolt.admin.post("/api/apps/local", json={"path": "ticker"})
        assert (await bolt.admin.post("/api/apps/start", json={"name": "ticker"})).status_code == 200
    tasks_before = _other_tasks()
    broken, recorder = Broken(), Recorder()
    app = create_app(settings_for_tests(tmp_path, autostart=True), plugins=[broken, recorder])
    host = app.state.host
    try:
        with pytest.raises(PluginStartupError, match="plugin 'Broken' failed to start: no licence key"):
            await host.start()
        assert broken.seen_pid is not None, "ticker was not autostarted before the plugin ran"
        assert not _alive(broken.seen_pid), "the autostarted app outlived the failed start"
        assert recorder.calls == ["startup", "shutdown"], "the plugin that had started was not shut down"
        assert broken.shutdowns == 0, "a plugin that never started was shut down"
        assert host.started is False
        assert _other_tasks() - tasks_before == set(), "background tasks left running"
    finally:
        if broken.seen_pid and _alive(broken.seen_pid):
            os.kill(broken.seen_pid, signal.SIGKILL)
    with pytest.raises(PluginStartupError, match="'Broken'"):
        async with running_host(tmp_path, plugins=[Broken()]):
            pass
    assert _other_tasks() - tasks_before == set(), "running_host leaked the failed host's tasks"
    async with running_host(tmp_path, plugins=[Recorder()]) as again:  # the data dir is usable again
        assert (await again.admin.get("/api/apps/ticker")).status_code == 200


async def test_an_in_process_restart_delivers_each_event_to_plugins_once(tmp_path: Path) -> None:
    recorder = Recorder()
    async with running_host(tmp_path, plugins=[recorder]) as bolt:
        await bolt.host.stop()
        await bolt.host.start()
        await bolt.host.publish("restart-probe")
        await bolt.host.events.drain()
        assert recorder.events.count("restart-probe") == 1
        assert recorder.calls == ["startup", "shutdown", "startup"]
