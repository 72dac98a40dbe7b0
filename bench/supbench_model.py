"""The supervision benchmark's figures, options and the measuring procedures every system shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_util import (
    LOOPBACK,
    NAME_VARIABLE,
    RUN_VARIABLE,
    Tracker,
    all_pids,
    find_new_child,
    median,
    percentile,
    thread_cpu_ns,
    wait_healthy,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TINYAPP = BENCH_DIR / "tinyapp.py"
SUPERVISORD_VENV = BENCH_DIR / ".venv-supervisord"
CIRCUS_VENV = BENCH_DIR / ".venv-circus"
PM2_DIR = BENCH_DIR / ".pm2"  # node_modules/pm2, installed with npm on first use
PYTHON = sys.executable

MB = 1024 * 1024


@dataclass
class Figures:
    system: str
    n: int
    start_all_s: float | None = None
    stop_call_s: float | None = None  # the stop request answered (the Popen floor: every app reaped)
    stop_all_s: float | None = None
    restart_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    uss_mb: float | None = None
    threads: int | None = None
    idle_cpu_pct: float | None = None
    start_cpu_s: float | None = None  # CPU the supervisor itself used during start all
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def restart_median(self) -> float | None:
        return median(self.restart_ms) if self.restart_ms else None

    @property
    def restart_p90(self) -> float | None:
        return percentile(self.restart_ms, 0.9) if self.restart_ms else None

    @property
    def status_median(self) -> float | None:
        return median(self.status_ms) if self.status_ms else None

    @property
    def status_p99(self) -> float | None:
        return percentile(self.status_ms, 0.99) if self.status_ms else None


@dataclass
class Options:
    concurrency: int
    kills: int
    status_calls: int
    idle_seconds: float
    settle_seconds: float
    phase_timeout: float
    port_base: int
    with_plugins: bool
    startsecs: int
    ready_timeout: float | None = None
    bulk: bool = True  # bolt-host: one start (stop) call naming every app, else one call per app
    py_spy: Path | None = None
    profile_dir: Path = BENCH_DIR / "results"


# the app repository ------------------------------------------------------------
def app_names(n: int) -> list[str]:
    return [f"app-{i:03d}" for i in range(n)]


def write_local_repo(root: Path, n: int, run_id: str) -> Path:
    """N copies of the tiny app as bolt-host app folders (also used by the baselines)."""
    repo = root / "repo"
    for name in app_names(n):
        folder = repo / name
        folder.mkdir(parents=True)
        shutil.copyfile(TINYAPP, folder / "server.py")
        manifest = {
            "name": name,
            "version": "1.0.0",
            "description": "benchmark app",
            "keywords": ["bolt-app"],
            "bolt": {"main": "server.py", "health": "/health", "env": {RUN_VARIABLE: run_id}},
        }
        (folder / "package.json").write_text(json.dumps(manifest))
    return repo


def app_environment(name: str, port: int, run_id: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME", "TZ") if key in os.environ}
    env.update({"PORT": str(port), "HOST": LOOPBACK, NAME_VARIABLE: name, RUN_VARIABLE: run_id})
    return env


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


@contextlib.contextmanager
def profiled(opts: Options, pid: int | None, name: str, tracker: Tracker) -> Iterator[None]:
    """Record ``pid`` with py-spy (raw collapsed stacks, all threads) while the block runs."""
    if opts.py_spy is None or pid is None:
        yield
        return
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    output = opts.profile_dir / f"pyspy-{name}.txt"
    command = [str(opts.py_spy), "record", "-p", str(pid), "-o", str(output), "--format", "raw", "-r", "250"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracker.track(recorder.pid)
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(timeout=5)
        print(f"  py-spy profile: {output}", flush=True)


# the systems -------------------------------------------------------------------
class System:
    """One supervisor under test; the measuring procedures are shared."""

    label = "?"

    def __init__(self, workdir: Path, repo: Path, n: int, run_id: str, opts: Options, tracker: Tracker) -> None:
        self.workdir = workdir
        self.repo = repo
        self.n = n
        self.names = app_names(n)
        self.run_id = run_id
        self.opts = opts
        self.tracker = tracker
        self.figures = Figures(self.label, n)

    # hooks
    async def launch(self) -> None:
        """Start the supervisor itself (and install the apps)."""

    async def start_all(self) -> float:
        raise NotImplementedError

    async def stop_all(self) -> float:
        """Stop every app; returns seconds until every app process is gone, sets ``stop_call_s``."""
        raise NotImplementedError

    async def apps(self) -> dict[str, tuple[int, int]]:
        """name -> (pid, port) of every app process."""
        raise NotImplementedError

    async def replacement(self, name: str, old_pid: int, known: set[int], deadline: float) -> tuple[int, int]:
        """After ``old_pid`` of ``name`` got SIGKILL: the new (pid, port), once it exists."""
        parent = self.supervisor_pid()
        assert parent is not None
        while time.monotonic() < deadline:
            found = find_new_child(parent, name, known)
            if found is not None:
                return found
            await asyncio.sleep(0.001)
        raise TimeoutError(f"{self.label}: {name} was not replaced")

    def supervisor_pid(self) -> int | None:
        return None

    def status_call(self) -> Callable[[], Any] | None:
        return None

    async def close_clients(self) -> None:
        """Close async clients before :meth:`teardown`."""

    def teardown(self) -> None:
        """End everything this system started; must not raise."""

    def deadline(self) -> float:
        return time.monotonic() + self.opts.phase_timeout

    # shared procedures
    async def run(self) -> Figures:
        fig = self.figures
        print(f"  [{self.label}] N={self.n}: launching", flush=True)
        fig.notes["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        await self.launch()
        print(f"  [{self.label}] start all", flush=True)
        supervisor = self.supervisor_pid()
        cpu_before = _cpu_seconds(supervisor)
        with profiled(self.opts, supervisor, f"{self.label}-{self.n}-start", self.tracker):
            fig.start_all_s = await self.start_all()
        cpu_after = _cpu_seconds(supervisor)
        if cpu_before is not None and cpu_after is not None:
            fig.start_cpu_s = cpu_after - cpu_before
        running = await self.apps()
        for pid, _ in running.values():
            self.tracker.track(pid)
        if len(running) != self.n:
            raise RuntimeError(f"{self.label}: {len(running)} of {self.n} apps running after start all")
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-idle", self.tracker):
            await self.measure_idle()
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-status", self.tracker):
            self.measure_status()
        print(f"  [{self.label}] kill -9 x{min(self.opts.kills, self.n)}", flush=True)
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-kill", self.tracker):
            await self.measure_restarts()
        print(f"  [{self.label}] stop all", flush=True)
        cpu_before = _cpu_seconds(supervisor)
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-stop", self.tracker):
            fig.stop_all_s = await self.stop_all()
        cpu_after = _cpu_seconds(supervisor)
        if cpu_before is not None and cpu_after is not None:
            fig.notes["stop_cpu_s"] = round(cpu_after - cpu_before, 3)  # the supervisor's own, stop all
        fig.notes["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return fig

    async def measure_idle(self) -> None:
        pid = self.supervisor_pid()
        if pid is None:
            return
        proc = psutil.Process(pid)
        await asyncio.sleep(self.opts.settle_seconds)  # let the start settle (a stats tick, GC)
        psutil.cpu_percent(None)
        before = proc.cpu_times()
        used_ns, timeline, ended = await self._idle_window_ns(pid)
        after = proc.cpu_times()
        fig = self.figures
        fig.notes["machine_cpu_busy_pct_during_idle"] = round(psutil.cpu_percent(None), 1)
        ticks = (after.user - before.user) + (after.system - before.system)
        fig.notes["idle_cpu_pct_from_ticks"] = round(100.0 * ticks / self.opts.idle_seconds, 3)
        if used_ns is None:
            fig.idle_cpu_pct = 100.0 * ticks / self.opts.idle_seconds
        else:
            fig.idle_cpu_pct = 100.0 * used_ns / 1e9 / self.opts.idle_seconds
            fig.notes["idle_cpu_ms_per_second"] = timeline  # where in the window the CPU went
            if ended:
                fig.notes["idle_threads_ended"] = ended  # up to 1 s of each one's CPU is missing
        full = proc.memory_full_info()
        fig.rss_mb = full.rss / MB
        fig.uss_mb = full.uss / MB
        fig.threads = proc.num_threads()

    async def _idle_window_ns(self, pid: int) -> tuple[int | None, list[float], int]:
        """CPU nanoseconds of ``pid``'s threads over the idle window, read every second (so
        the figure needs no clock ticks, and the timeline shows when the CPU went); also how
        many threads ended in the window (their last second is not counted)."""
        first = thread_cpu_ns(pid)
        if first is None:
            await asyncio.sleep(self.opts.idle_seconds)
            return None, [], 0
        latest, ended, timeline, counted = dict(first), set(), [], 0
        t0 = time.monotonic()
        while (left := self.opts.idle_seconds - (time.monotonic() - t0)) > 0:
            await asyncio.sleep(min(1.0, left))
            now = thread_cpu_ns(pid) or {}
            ended |= latest.keys() - now.keys()
            latest.update(now)
            total = sum(ns - first.get(tid, 0) for tid, ns in latest.items())
            timeline.append(round((total - counted) / 1e6, 2))
            counted = total
        return counted, timeline, len(ended)

    def measure_status(self) -> None:
        call = self.status_call()
        if call is None:
            return
        call()  # warm up (connection, caches)
        timings = []
        deadline = self.deadline()
        for _ in range(self.opts.status_calls):
            t0 = time.perf_counter()
            call()
            timings.append((time.perf_counter() - t0) * 1000)
            if time.monotonic() > deadline:
                break
        self.figures.status_ms = timings

    async def measure_restarts(self) -> None:
        count = min(self.opts.kills, self.n)
        victims = [self.names[i * self.n // count] for i in range(count)]
        running = await self.apps()
        for name in victims:
            pid, _ = running[name]
            known = all_pids()
            deadline = time.monotonic() + min(self.opts.phase_timeout, 30.0)
            t0 = time.monotonic()
            self.tracker.send(pid, signal.SIGKILL)
            new_pid, port = await self.replacement(name, pid, known, deadline)
            self.tracker.track(new_pid)
            answered = await wait_healthy([port], deadline, sweep=0.001)
            self.figures.restart_ms.append((answered - t0) * 1000)
            await asyncio.sleep(0.3)  # one at a time, on a quiet system
