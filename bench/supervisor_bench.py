"""Supervision benchmark: bolt-host against plain ``subprocess.Popen`` and supervisord.

For each N (default 50 and 200) copies of ``bench/tinyapp.py`` it measures, on
each system in turn (Popen, supervisord, bolt-host):

* start all -> every app answers ``GET /health`` (seconds);
* stop all -> every app process has ended (seconds);
* ``kill -9`` of one app -> a NEW process of it answers ``/health`` (ms; K apps,
  one at a time, median and p90);
* status latency: bolt-host ``GET /api/apps/@live``, supervisord
  ``getAllProcessInfo`` (ms; sequential calls, median and p99);
* the supervisor's own RSS/USS/threads and idle CPU over a window with N apps
  running (psutil on the supervisor's pid only, not its children).

and prints one table per N with bolt-host's ratio to each baseline and the
issue's targets marked met/missed.  Usage (from the repo root, venv active)::

    python bench/supervisor_bench.py --n 50 --n 200

Everything binds 127.0.0.1 only; each phase has a deadline; every process the
benchmark starts is ended by pid (pidfd) in ``finally`` blocks, on errors and
on Ctrl-C / SIGTERM too.  supervisord is installed with pip into
``bench/.venv-supervisord`` on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_util import (
    LOOPBACK,
    NAME_VARIABLE,
    RUN_VARIABLE,
    Tracker,
    all_pids,
    find_new_child,
    free_port,
    free_ports,
    median,
    percentile,
    probe_health,
    sweep_run,
    wait_healthy,
    wait_pidfds_async,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TINYAPP = BENCH_DIR / "tinyapp.py"
SUPERVISORD_VENV = BENCH_DIR / ".venv-supervisord"
PYTHON = sys.executable

# Issue 4's targets.
TARGET_START_RATIO = 1.1  # start all, bolt-host / Popen
TARGET_RESTART_MS = 100.0  # kill -9 -> new process answers, median
TARGET_LIVE_MS = 5.0  # @live median at N=200
TARGET_IDLE_CPU = 0.5  # % of one core at N=200
TARGET_RSS_MB = 60.0  # host RSS at N=200
TARGET_N = 200

MB = 1024 * 1024


@dataclass
class Figures:
    system: str
    n: int
    start_all_s: float | None = None
    stop_all_s: float | None = None
    restart_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    uss_mb: float | None = None
    threads: int | None = None
    idle_cpu_pct: float | None = None
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
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-start", self.tracker):
            fig.start_all_s = await self.start_all()
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
        with profiled(self.opts, self.supervisor_pid(), f"{self.label}-{self.n}-stop", self.tracker):
            fig.stop_all_s = await self.stop_all()
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
        t0 = time.monotonic()
        await asyncio.sleep(self.opts.idle_seconds)
        after = proc.cpu_times()
        elapsed = time.monotonic() - t0
        fig = self.figures
        fig.notes["machine_cpu_busy_pct_during_idle"] = round(psutil.cpu_percent(None), 1)
        used = (after.user - before.user) + (after.system - before.system)
        fig.idle_cpu_pct = 100.0 * used / elapsed
        full = proc.memory_full_info()
        fig.rss_mb = full.rss / MB
        fig.uss_mb = full.uss / MB
        fig.threads = proc.num_threads()

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


class PopenBaseline(System):
    """The floor: the benchmark process itself runs the apps with ``subprocess.Popen``."""

    label = "Popen"

    def __init__(self, *args: Any, ports: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [PYTHON, "server.py"],
            cwd=self.repo / name,
            env=app_environment(name, self.ports[name], self.run_id),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        self.tracker.track(proc.pid)
        self.procs[name] = proc
        return proc

    async def start_all(self) -> float:
        t0 = time.monotonic()
        for name in self.names:
            self.spawn(name)
        return await wait_healthy(self.ports.values(), self.deadline()) - t0

    async def apps(self) -> dict[str, tuple[int, int]]:
        return {name: (proc.pid, self.ports[name]) for name, proc in self.procs.items() if proc.returncode is None}

    async def replacement(self, name: str, old_pid: int, known: set[int], deadline: float) -> tuple[int, int]:
        await wait_pidfds_async([self.tracker.pidfd(old_pid)], deadline)
        self.procs[name].wait()
        return self.spawn(name).pid, self.ports[name]

    async def stop_all(self) -> float:
        procs = list(self.procs.values())
        pidfds = [self.tracker.pidfd(proc.pid) for proc in procs]
        t0 = time.monotonic()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        await wait_pidfds_async(pidfds, self.deadline())
        for proc in procs:
            proc.wait()
        return time.monotonic() - t0

    def teardown(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class Supervisord(System):
    """supervisord 4.x from bench/.venv-supervisord, driven over XML-RPC on 127.0.0.1."""

    label = "supervisord"

    def __init__(self, *args: Any, ports: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.status_proxy: xmlrpc.client.ServerProxy | None = None

    def rpc(self) -> Any:
        return xmlrpc.client.ServerProxy(self.url).supervisor

    def write_config(self, rpc_port: int, password: str) -> Path:
        home = self.workdir / "supervisord"
        home.mkdir()
        lines = [
            "[supervisord]",
            f"logfile={home / 'supervisord.log'}",
            f"pidfile={home / 'supervisord.pid'}",
            f"childlogdir={home}",
            "nodaemon=true",
            "loglevel=warn",
            "minfds=1024",
            f"minprocs={max(200, self.n + 50)}",
            "",
            "[inet_http_server]",
            f"port={LOOPBACK}:{rpc_port}",
            "username=bench",
            f"password={password}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
        ]
        for name in self.names:
            env = app_environment(name, self.ports[name], self.run_id)
            environment = ",".join(f'{key}="{value}"' for key, value in env.items())
            lines += [
                f"[program:{name}]",
                f"command={PYTHON} server.py",
                f"directory={self.repo / name}",
                f"environment={environment}",
                "autostart=false",
                "autorestart=true",
                f"startsecs={self.opts.startsecs}",
                "startretries=3",
                "stopsignal=TERM",
                "stopwaitsecs=10",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                "stdout_logfile=NONE",
                "",
            ]
        path = home / "supervisord.conf"
        path.write_text("\n".join(lines))
        return path

    async def launch(self) -> None:
        binary = ensure_supervisord()
        rpc_port = free_port()
        password = secrets.token_hex(12)
        config = self.write_config(rpc_port, password)
        self.url = f"http://bench:{password}@{LOOPBACK}:{rpc_port}/RPC2"
        env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME") if key in os.environ}
        env[RUN_VARIABLE] = self.run_id
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(binary), "-n", "-c", str(config)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "supervisord" / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tracker.track(self.proc.pid)
        deadline = self.deadline()
        while True:
            try:
                await asyncio.to_thread(lambda: self.rpc().getState())
                break
            except (OSError, xmlrpc.client.Error):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("supervisord did not come up; see supervisord/stdout.log") from None
                await asyncio.sleep(0.05)
        self.figures.notes["boot_s"] = round(time.monotonic() - t0, 3)

    def supervisor_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start_all(self) -> float:
        t0 = time.monotonic()
        rpc = asyncio.create_task(asyncio.to_thread(lambda: self.rpc().startAllProcesses(False)))
        answered = await wait_healthy(self.ports.values(), self.deadline())
        results = await rpc
        failed = [r for r in results if r.get("status") != 80]  # SupervisorFaults.SUCCESS
        if failed:
            raise RuntimeError(f"supervisord could not start {len(failed)} app(s), e.g. {failed[0]}")
        return answered - t0

    async def apps(self) -> dict[str, tuple[int, int]]:
        infos = await asyncio.to_thread(lambda: self.rpc().getAllProcessInfo())
        return {i["name"]: (i["pid"], self.ports[i["name"]]) for i in infos if i["pid"]}

    def status_call(self) -> Callable[[], Any]:
        # A fresh connection per call, as supervisorctl does.  On a kept-alive
        # connection each call takes 40+ ms more: supervisord's medusa server
        # writes a response in several segments (Nagle meets delayed ACK).
        self.measure_keepalive_status()
        return lambda: xmlrpc.client.ServerProxy(self.url).supervisor.getAllProcessInfo()

    def measure_keepalive_status(self, calls: int = 20) -> None:
        proxy = self.status_proxy = xmlrpc.client.ServerProxy(self.url)
        proxy.supervisor.getAllProcessInfo()
        timings = []
        for _ in range(calls):
            t0 = time.perf_counter()
            proxy.supervisor.getAllProcessInfo()
            timings.append((time.perf_counter() - t0) * 1000)
        self.figures.notes["status_keepalive_median_ms"] = round(median(timings), 2)

    async def stop_all(self) -> float:
        running = await self.apps()
        pidfds = [self.tracker.pidfd(pid) for pid, _ in running.values()]

        def stop() -> float:
            self.rpc().stopAllProcesses(False)
            return time.monotonic()

        t0 = time.monotonic()
        rpc = asyncio.create_task(asyncio.to_thread(stop))
        gone = await wait_pidfds_async(pidfds, self.deadline())
        return max(gone, await rpc) - t0

    def teardown(self) -> None:
        if self.status_proxy is not None:
            with contextlib.suppress(Exception):
                self.status_proxy("close")()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                self.rpc().shutdown()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("  supervisord did not shut down in 30 s: SIGKILL", flush=True)
                self.proc.kill()
                self.proc.wait(timeout=10)


class BoltHost(System):
    """The real host: ``python -m bolt_host serve`` as a subprocess, driven over its HTTP API."""

    label = "bolt-host"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = ""
        self.client: httpx.AsyncClient | None = None
        self.status_conn: http.client.HTTPConnection | None = None

    async def launch(self) -> None:
        self.port = free_port()
        password = secrets.token_urlsafe(16)
        low = self.opts.port_base
        env = dict(os.environ)
        env.update(
            {
                "BOLT_ADMIN_PASSWORD": password,
                "BOLT_PORT_RANGE": f"{low}-{low + 1999}",
                "BOLT_LOG_LEVEL": "warning",
                RUN_VARIABLE: self.run_id,
            }
        )
        if self.opts.ready_timeout is not None:
            env["BOLT_READY_TIMEOUT_SECONDS"] = str(self.opts.ready_timeout)
        if not self.opts.with_plugins:
            env["BOLT_PLUGINS"] = ""  # an empty allow-list: the core host only
        data_dir = self.workdir / "bolt-data"
        log = (self.workdir / "bolt-host.log").open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bolt_host", "serve", "--port", str(self.port), "--host", LOOPBACK, *self.dirs(data_dir)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tracker.track(self.proc.pid)
        base = f"http://{LOOPBACK}:{self.port}"
        limits = httpx.Limits(max_connections=self.opts.concurrency, max_keepalive_connections=self.opts.concurrency)
        self.client = httpx.AsyncClient(base_url=base, trust_env=False, timeout=120.0, limits=limits)
        deadline = self.deadline()
        while True:
            try:
                reply = await self.client.post("/api/users/login", json={"name": "admin", "password": password})
                if reply.status_code == 200:
                    self.token = reply.json()["body"]["token"]
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bolt-host did not come up; see {self.workdir / 'bolt-host.log'}")
            await asyncio.sleep(0.05)
        self.figures.notes["boot_s"] = round(time.monotonic() - t0, 3)
        self.client.headers["x-bolt-user-token"] = self.token
        t0 = time.monotonic()
        semaphore = asyncio.Semaphore(8)

        async def install(name: str) -> None:
            async with semaphore:
                await self.call("POST", "/api/apps/local", {"path": name})

        await asyncio.wait_for(asyncio.gather(*(install(name) for name in self.names)), self.opts.phase_timeout)
        self.figures.notes["install_s"] = round(time.monotonic() - t0, 3)

    def dirs(self, data_dir: Path) -> list[str]:
        return ["--data-dir", str(data_dir), "--local-repo", str(self.repo)]

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.client is not None
        reply = await self.client.request(method, path, json=body)
        if reply.status_code >= 300:
            raise RuntimeError(f"{method} {path} {body}: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json().get("body")

    def supervisor_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start_all(self) -> float:
        semaphore = asyncio.Semaphore(self.opts.concurrency)
        deadline = self.deadline()

        async def start(name: str) -> None:
            async with semaphore:
                context = await self.call("POST", "/api/apps/start", {"name": name})
            self.tracker.track(context["pid"])
            if not await probe_health(context["port"]):
                await wait_healthy([context["port"]], deadline)

        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(start(name) for name in self.names)), self.opts.phase_timeout)
        return time.monotonic() - t0

    async def apps(self) -> dict[str, tuple[int, int]]:
        contexts = await self.call("GET", "/api/apps/@live")
        return {c["name"]: (c["pid"], c["port"]) for c in contexts if c.get("pid") and c["status"] == "running"}

    def status_call(self) -> Callable[[], Any]:
        conn = self.status_conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        headers = {"x-bolt-user-token": self.token}

        def live() -> None:
            conn.request("GET", "/api/apps/@live", headers=headers)
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"@live: HTTP {reply.status} {body[:200]!r}")

        return live

    async def stop_all(self) -> float:
        running = await self.apps()
        pidfds = [self.tracker.pidfd(pid) for pid, _ in running.values()]
        semaphore = asyncio.Semaphore(self.opts.concurrency)

        async def stop(name: str) -> None:
            async with semaphore:
                await self.call("POST", "/api/apps/stop", {"name": name})

        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(stop(name) for name in running)), self.opts.phase_timeout)
        answered = time.monotonic()
        gone = await wait_pidfds_async(pidfds, self.deadline())
        return max(answered, gone) - t0

    async def close_clients(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    def teardown(self) -> None:
        if self.status_conn is not None:
            self.status_conn.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # graceful: the host stops its apps
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            print("  bolt-host did not stop in 60 s: SIGKILL", flush=True)
            self.proc.kill()
            self.proc.wait(timeout=10)


def ensure_supervisord() -> Path:
    """bench/.venv-supervisord/bin/supervisord, created with venv + pip on first use."""
    binary = SUPERVISORD_VENV / "bin" / "supervisord"
    if binary.exists():
        return binary
    print(f"  creating {SUPERVISORD_VENV} (pip install supervisor)", flush=True)
    subprocess.run([PYTHON, "-m", "venv", str(SUPERVISORD_VENV)], check=True, timeout=300)
    pip = SUPERVISORD_VENV / "bin" / "pip"
    subprocess.run([str(pip), "install", "--quiet", "supervisor"], check=True, timeout=600)
    return binary


def supervisord_version() -> str:
    python = SUPERVISORD_VENV / "bin" / "python"
    if not python.exists():
        return "?"
    code = "from importlib.metadata import version; print(version('supervisor'))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() or "?"


# one N ---------------------------------------------------------------------------
async def bench_n(n: int, systems: list[str], opts: Options, keep: bool) -> dict[str, Figures]:
    run_id = f"{os.getpid()}-{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"bolt-supbench-{n}-"))
    results: dict[str, Figures] = {}
    try:
        repo = write_local_repo(workdir, n, run_id)
        baseline_ports = free_ports(n, opts.port_base + 2000, opts.port_base + 3999)
        classes: dict[str, Callable[..., System]] = {
            "popen": lambda *a: PopenBaseline(*a, ports=baseline_ports),
            "supervisord": lambda *a: Supervisord(*a, ports=baseline_ports),
            "bolt-host": BoltHost,
        }
        for key in systems:
            tracker = Tracker()
            system = classes[key](workdir, repo, n, run_id, opts, tracker)
            try:
                results[system.label] = await system.run()
            except Exception as exc:  # report what was measured, go on with the next system
                print(f"  [{system.label}] FAILED: {exc}", flush=True)
                system.figures.notes["error"] = str(exc)[:300]
                results[system.label] = system.figures
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(system.close_clients(), 5)
                system.teardown()
                leftovers = tracker.end_all()
                strays = sweep_run(run_id, tracker)
                if leftovers or strays:
                    print(f"  [{system.label}] killed leftovers {leftovers} and strays {strays}", flush=True)
                tracker.close()
    finally:
        if keep:
            print(f"  kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


# report ----------------------------------------------------------------------------
def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def report(n: int, results: dict[str, Figures]) -> str:
    bolt = results.get("bolt-host")
    popen = results.get("Popen")
    sup = results.get("supervisord")

    def row(title: str, get: Callable[[Figures], float | int | None], digits: int, target: str, met: str) -> str:
        values = [get(f) if f is not None else None for f in (bolt, popen, sup)]
        cells = [_fmt(v, digits) for v in values]
        return (
            f"| {title} | {cells[0]} | {cells[1]} | {cells[2]} | {_ratio(values[0], values[1])} "
            f"| {_ratio(values[0], values[2])} | {target} | {met} |"
        )

    def verdict(ok: bool | None, applies: bool = True) -> str:
        if ok is None:
            return "n/a"
        if not applies:
            return f"({'met' if ok else 'missed'}; target is at N={TARGET_N})"
        return "**met**" if ok else "**missed**"

    start_ratio = (
        bolt.start_all_s / popen.start_all_s if bolt and popen and bolt.start_all_s and popen.start_all_s else None
    )
    at_target = n >= TARGET_N
    lines = [
        f"#### N = {n}",
        "",
        "| figure | bolt-host | Popen | supervisord | bolt/Popen | bolt/supervisord | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
        row(
            "start all -> all answer /health (s)",
            lambda f: f.start_all_s,
            2,
            f"<= {TARGET_START_RATIO}x Popen",
            "**missed** (failed)"
            if bolt is not None and bolt.start_all_s is None and "error" in bolt.notes
            else verdict(None if start_ratio is None else start_ratio <= TARGET_START_RATIO),
        ),
        row("stop all -> all pids gone (s)", lambda f: f.stop_all_s, 2, "", ""),
        row(
            "kill -9 -> new pid answers, median (ms)",
            lambda f: f.restart_median,
            0,
            f"< {TARGET_RESTART_MS:g} ms",
            verdict(None if not bolt or bolt.restart_median is None else bolt.restart_median < TARGET_RESTART_MS),
        ),
        row("kill -9 -> new pid answers, p90 (ms)", lambda f: f.restart_p90, 0, "", ""),
        row(
            "status call median (ms) [@live / getAllProcessInfo]",
            lambda f: f.status_median,
            2,
            f"< {TARGET_LIVE_MS:g} ms at N={TARGET_N}",
            verdict(None if not bolt or bolt.status_median is None else bolt.status_median < TARGET_LIVE_MS, at_target),
        ),
        row("status call p99 (ms)", lambda f: f.status_p99, 2, "", ""),
        row(
            "idle CPU, N apps running (% of one core)",
            lambda f: f.idle_cpu_pct,
            2,
            f"< {TARGET_IDLE_CPU:g} % at N={TARGET_N}",
            verdict(None if not bolt or bolt.idle_cpu_pct is None else bolt.idle_cpu_pct < TARGET_IDLE_CPU, at_target),
        ),
        row(
            "supervisor RSS (MB)",
            lambda f: f.rss_mb,
            1,
            f"< {TARGET_RSS_MB:g} MB at N={TARGET_N}",
            verdict(None if not bolt or bolt.rss_mb is None else bolt.rss_mb < TARGET_RSS_MB, at_target),
        ),
        row("supervisor USS (MB)", lambda f: f.uss_mb, 1, "", ""),
        row("supervisor threads", lambda f: f.threads, 0, "", ""),
        "",
    ]
    for fig in results.values():
        lines.append(f"- {fig.system}: " + ", ".join(f"{k}={v}" for k, v in fig.notes.items()))
    return "\n".join(lines) + "\n"


def header(opts: Options, ns: list[int], systems: list[str]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Supervision benchmark, {now}; {os.cpu_count()} CPUs, load average {load} at start, "
        f"{len(psutil.pids())} processes; Python {sys.version.split()[0]}; supervisor {supervisord_version()}\n"
        f"N={ns}; systems={systems}; start/stop concurrency (bolt-host)={opts.concurrency}; "
        f"kills={opts.kills}; status calls={opts.status_calls}; idle window={opts.idle_seconds:g} s "
        f"after {opts.settle_seconds:g} s settle; supervisord startsecs={opts.startsecs}; "
        f"bolt-host plugins={'on' if opts.with_plugins else 'off'}, "
        f"ready timeout={opts.ready_timeout or 30:g} s\n"
    )


# main -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="number of apps (repeatable; default 50 and 200)")
    parser.add_argument(
        "--systems", default="popen,supervisord,bolt-host", help="comma-separated subset of popen,supervisord,bolt-host"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="bolt-host start/stop requests in flight")
    parser.add_argument("--kills", type=int, default=20, help="apps killed with SIGKILL, one at a time")
    parser.add_argument("--status-calls", type=int, default=200, help="sequential @live / getAllProcessInfo calls")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window")
    parser.add_argument("--settle-seconds", type=float, default=3.0, help="wait after start all before the window")
    parser.add_argument("--phase-timeout", type=float, default=180.0, help="deadline of each phase (s)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=21000,
        help="bolt-host app ports base..base+1999, baseline apps base+2000..base+3999 (keep below the ephemeral range)",
    )
    parser.add_argument("--startsecs", type=int, default=1, help="supervisord startsecs")
    parser.add_argument("--ready-timeout", type=float, help="bolt-host readiness deadline per start (default 30 s)")
    parser.add_argument("--with-plugins", action="store_true", help="let bolt-host load its installed plugins")
    parser.add_argument("--py-spy", type=Path, help="py-spy binary: profile each phase of the supervisors")
    parser.add_argument("--json", type=Path, help="also write the raw figures here (e.g. bench/results/...)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders (logs, configs)")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)  # SIGTERM ends us like Ctrl-C: finally blocks run
    opts = Options(
        concurrency=args.concurrency,
        kills=args.kills,
        status_calls=args.status_calls,
        idle_seconds=args.idle_seconds,
        settle_seconds=args.settle_seconds,
        phase_timeout=args.phase_timeout,
        port_base=args.port_base,
        with_plugins=args.with_plugins,
        startsecs=args.startsecs,
        ready_timeout=args.ready_timeout,
        py_spy=args.py_spy,
    )
    ns = args.n or [50, 200]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"popen", "supervisord", "bolt-host"}
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    if "supervisord" in systems:
        ensure_supervisord()
    print(header(opts, ns, systems), flush=True)
    everything: dict[int, dict[str, Figures]] = {}
    for n in ns:
        print(f"N = {n}", flush=True)
        everything[n] = await bench_n(n, systems, opts, args.keep)
        print("\n" + report(n, everything[n]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        dump = {str(n): {k: asdict(v) for k, v in r.items()} for n, r in everything.items()}
        args.json.write_text(json.dumps(dump, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process started was ended", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
