"""Shared helpers for the supervisor tests (no tests here).

Fixture apps run the tiny programs in ``tests/fixtures/procs``.  Every pid a
test learns (from published contexts or pid files) is tracked; at teardown the
harness shuts the supervisors down, fails the test if a supervised process
survived, and kills and reaps leftovers by pid (after checking the pid still
names the same process), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil

from bolt_host.services.proctable import read_marker
from bolt_host.services.restarts import RestartPolicy
from bolt_host.services.sandbox import Isolation
from bolt_host.services.supervisor import Supervisor
from bolt_host.services.tokens import AppTokens
from bolt_host.statefile import StateFile
from tests.helpers import async_wait_until

PROCS = Path(__file__).parent / "fixtures" / "procs"


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs; a zombie child of ours is reaped on the way."""
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def marked_pids(name: str) -> list[int]:
    """Live processes anywhere on the machine carrying app ``name``'s supervisor marker."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        marker = read_marker(proc.info["pid"])
        if marker is not None and marker.rsplit(":", 1)[0] == name:
            found.append(proc.info["pid"])
    return sorted(found)


def read_pid_file(path: Path) -> list[int]:
    return [int(part) for part in path.read_text().split()]


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.state = StateFile(self.data_dir / "runtime.json")
        self.tokens = AppTokens(self.state)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.apps: dict[str, dict[str, Any]] = {}
        self.supervisors: list[Supervisor] = []
        self.isolations: list[Isolation] = []  # their app cgroups are removed at close, as a stopping host does
        self.tracked: dict[int, float | None] = {}
        low = random.randrange(10000, 19900, 100)  # below the ephemeral range
        self.port_range = (low, low + 99)

    def app(self, name: str, script: str, *args: str, **fields: Any) -> dict[str, Any]:
        folder = self.tmp_path / "apps" / name
        folder.mkdir(parents=True, exist_ok=True)
        app: dict[str, Any] = {
            "name": name,
            "version": "1.0.0",
            "path": name,
            "folder": str(folder),
            "main": None,
            "start": [sys.executable, str(PROCS / script), *args],
            "server": True,
            "health": None,
            "restart": "on-failure",
            "env": {},
            "system": False,
            "stopGraceSeconds": None,
        }
        app.update(fields)
        self.apps[name] = app
        return app

    def supervisor(self, **overrides: Any) -> Supervisor:
        options: dict[str, Any] = {
            "state": self.state,
            "data_dir": self.data_dir,
            "tokens": self.tokens,
            "host_url": "http://127.0.0.1:4000",
            "port_range": self.port_range,
            "grace_seconds": 2.0,
            "ready_timeout": 10.0,
            "stats_interval": 0.1,
            "publish": self.publish,
            "load_app": self.apps.get,
            "restart_policy": RestartPolicy(),
        }
        options.update(overrides)
        if options.get("isolation") is not None:
            self.isolations.append(options["isolation"])
        supervisor = Supervisor(**options)
        self.supervisors.append(supervisor)
        return supervisor

    async def publish(self, name: str, body: dict[str, Any]) -> None:
        self.events.append((name, body))
        if body.get("pid"):
            self.track(body["pid"])

    def track(self, *pids: int) -> None:
        for pid in pids:
            if pid not in self.tracked:
                with contextlib.suppress(psutil.Error):
                    self.tracked[pid] = psutil.Process(pid).create_time()

    def event_names(self, app: str) -> list[str]:
        return [name for name, body in self.events if body.get("name") == app]

    def statuses(self, app: str) -> list[str]:
        return [body["status"] for _, body in self.events if body.get("name") == app]

    async def wait_status(self, supervisor: Supervisor, app: str, status: str, timeout: float = 15.0) -> dict:
        def reached() -> dict | None:
            context = supervisor.context(app)
            return context if context is not None and context["status"] == status else None

        return await async_wait_until(reached, timeout=timeout, what=f"{app} to be {status}")

    async def close(self) -> list[int]:
        """Shut down, then kill leftovers by pid; returns the supervised pids that survived shutdown."""
        for supervisor in self.supervisors:
            with contextlib.suppress(Exception):
                await supervisor.shutdown()
        for isolation in self.isolations:
            isolation.remove_empty_groups()
        survivors = [pid for pid in self.tracked if not process_gone(pid)]
        for pid in survivors:
            kill_if_same(pid, self.tracked[pid])
        for pid in survivors:
            with contextlib.suppress(AssertionError):
                await async_wait_until(lambda pid=pid: process_gone(pid), timeout=5, what=f"pid {pid} to go")
        return survivors


def kill_if_same(pid: int, create_time: float | None) -> None:
    """SIGKILL ``pid`` only if it is still the process first seen with ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return
        os.kill(pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError):
        pass


@contextlib.asynccontextmanager
async def supervisor_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    survivors: list[int] = []
    try:
        yield harness
    finally:
        survivors = await harness.close()
    assert not survivors, f"processes survived the supervisor's shutdown: {survivors}"


async def wait_file(path: Path, timeout: float = 15.0) -> Path:
    await async_wait_until(path.exists, timeout=timeout, what=f"{path} to appear")
    return path


async def in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)
