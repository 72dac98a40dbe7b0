"""circus and PM2 for the supervision benchmark, each driven by one long-lived client process.

circus runs from ``bench/.venv-circus`` (pip) and is driven by ``supbench_circus_driver.py``
(circus's own ZeroMQ client); PM2 is npm-installed into ``bench/.pm2`` and driven by
``supbench_pm2_driver.js`` through PM2's programmatic API from one node process, fork mode.
Both drivers time each call themselves, so the pipe to this process is not counted.
Nothing fetched leaves the gitignored bench folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_model import CIRCUS_VENV, MB, PM2_DIR, PYTHON, System, app_environment
from supbench_util import LOOPBACK, RUN_VARIABLE, free_port, wait_healthy, wait_or_kill, wait_pidfds, wait_pidfds_async

MARK = "@@"  # the drivers' answers; anything else on their stdout is a library talking


class Driver:
    """A client process answering one JSON request per line (see the driver scripts)."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.lock = threading.Lock()

    def request(self, op: str, **fields: Any) -> tuple[Any, float]:
        """(result, ms the call took inside the driver); raises when the driver refused."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"driver ended during {op!r}; see {self.log.name}")
                text = line.decode(errors="replace")
                if text.startswith(MARK):
                    break
                self.log.write(line)
        answer = json.loads(text[len(MARK) :])
        if not answer["ok"]:
            raise RuntimeError(f"{op}: {answer['error'][:500]}")
        return answer["result"], float(answer["ms"])

    async def arequest(self, op: str, **fields: Any) -> tuple[Any, float]:
        return await asyncio.to_thread(self.request, op, **fields)

    def close(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class DrivenPeer(System):
    """What circus and PM2 share: ports chosen by the benchmark, a driver, a supervisor pid."""

    def __init__(self, *args: Any, ports: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.driver: Driver | None = None
        self.daemon_pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._status_timings: list[float] = []

    def supervisor_pid(self) -> int | None:
        return self.daemon_pid

    async def start_until_healthy(self, **fields: Any) -> tuple[float, float]:
        """Send "start" and wait until every app answers; (when the last did, the call's ms).

        A refused call ends the wait at once instead of at the phase deadline.
        """
        assert self.driver is not None
        call = asyncio.create_task(self.driver.arequest("start", **fields))
        healthy = asyncio.create_task(wait_healthy(self.ports.values(), self.deadline()))
        await asyncio.wait({call, healthy}, return_when=asyncio.FIRST_EXCEPTION)
        if call.done() and call.exception() is not None:
            healthy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await healthy
        elif healthy.done() and healthy.exception() is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call, 30)
        _, ms = await call
        return await healthy, ms

    async def stop_all(self) -> float:
        assert self.driver is not None
        running = await self.apps()
        pidfds = [self.tracker.pidfd(pid) for pid, _ in running.values()]
        t0 = time.monotonic()
        call = asyncio.create_task(self.driver.arequest("stop"))
        gone = await wait_pidfds_async(pidfds, self.deadline())
        _, ms = await call
        self.figures.stop_call_s = ms / 1000
        return max(gone - t0, ms / 1000)

    def status_call(self) -> Callable[[], Any]:
        assert self.driver is not None
        driver = self.driver
        timings = self._status_timings
        self.figures.notes["status_timed_in"] = "driver"

        def status() -> None:
            timings.append(driver.request("status")[1])

        return status

    def measure_status(self) -> None:
        super().measure_status()
        # The driver's own timing of each call (without this process's pipe round trip).
        if self._status_timings:
            self.figures.status_ms = self._status_timings[1:]  # the first was the warm-up call

    def note_driver_rss(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(self.driver.proc.pid).memory_info().rss
                self.figures.notes["driver_rss_mb"] = round(rss / MB, 1)

    async def measure_idle(self) -> None:
        await super().measure_idle()
        self.note_driver_rss()


class Circus(DrivenPeer):
    """circusd with one watcher per app (``autostart = false``), driven over its ZeroMQ endpoint."""

    label = "circus"

    def write_config(self, endpoint: str) -> Path:
        home = self.workdir / "circus"
        home.mkdir()
        lines = [
            "[circus]",
            f"endpoint = {endpoint}",
            f"pubsub_endpoint = tcp://{LOOPBACK}:{free_port()}",
            f"stats_endpoint = tcp://{LOOPBACK}:{free_port()}",
            "statsd = false",
            "",
        ]
        for name in self.names:
            lines += [
                f"[watcher:{name}]",
                f"cmd = {PYTHON} server.py",
                f"working_dir = {self.repo / name}",
                "numprocesses = 1",
                "autostart = false",
                "respawn = true",
                "copy_env = false",
                "stop_signal = TERM",
                "stop_children = true",
                "graceful_timeout = 10",
                "",
                f"[env:{name}]",
                *(f"{key} = {value}" for key, value in app_environment(name, self.ports[name], self.run_id).items()),
                "",
            ]
        path = home / "circus.ini"
        path.write_text("\n".join(lines))
        return path

    async def launch(self) -> None:
        binary = ensure_circus()
        endpoint = f"tcp://{LOOPBACK}:{free_port()}"
        config = self.write_config(endpoint)
        env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME") if key in os.environ}
        env[RUN_VARIABLE] = self.run_id
        home = self.workdir / "circus"
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(binary), "--log-level", "warning", "--log-output", str(home / "circusd.log"), str(config)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=(home / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tracker.track(self.proc.pid)
        self.daemon_pid = self.proc.pid
        driver_script = str(Path(__file__).resolve().parent / "supbench_circus_driver.py")
        self.driver = Driver([str(CIRCUS_VENV / "bin" / "python"), driver_script, endpoint], env, home / "driver.log")
        self.tracker.track(self.driver.proc.pid)
        await asyncio.wait_for(self.driver.arequest("status"), self.opts.phase_timeout)  # answers once circusd is up
        self.figures.notes["boot_s"] = round(time.monotonic() - t0, 3)

    async def start_all(self) -> float:
        assert self.driver is not None
        t0 = time.monotonic()
        answered, ms = await self.start_until_healthy(names=self.names)
        self.figures.notes["start_calls_ms"] = round(ms, 1)
        return answered - t0

    async def apps(self) -> dict[str, tuple[int, int]]:
        assert self.driver is not None
        pids, _ = await self.driver.arequest("pids", names=self.names)
        return {name: (found[0], self.ports[name]) for name, found in pids.items() if found}

    def teardown(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.request("quit")
            self.driver.close()
        if self.proc is not None:
            wait_or_kill(self.proc, 30)


class PM2(DrivenPeer):
    """PM2's God daemon (its own PM2_HOME), apps in fork mode, from one node process's pm2 API."""

    label = "PM2"

    async def launch(self) -> None:
        ensure_pm2()
        home = self.workdir / "pm2"
        home.mkdir()
        env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME") if key in os.environ}
        env.update({RUN_VARIABLE: self.run_id, "PM2_HOME": str(home)})
        driver_script = str(Path(__file__).resolve().parent / "supbench_pm2_driver.js")
        t0 = time.monotonic()
        self.driver = Driver(["node", driver_script, str(PM2_DIR)], env, home / "driver.log")
        self.tracker.track(self.driver.proc.pid)
        answer, _ = await asyncio.wait_for(self.driver.arequest("connect"), self.opts.phase_timeout)
        self.daemon_pid = int(answer["daemon"])
        self.tracker.track(self.daemon_pid)
        self.figures.notes["boot_s"] = round(time.monotonic() - t0, 3)

    async def start_all(self) -> float:
        assert self.driver is not None
        apps = [
            {"name": name, "cwd": str(self.repo / name), "env": app_environment(name, self.ports[name], self.run_id)}
            for name in self.names
        ]
        t0 = time.monotonic()
        answered, ms = await self.start_until_healthy(apps=apps, interpreter=PYTHON)
        self.figures.notes["start_call_ms"] = round(ms, 1)
        return answered - t0

    async def apps(self) -> dict[str, tuple[int, int]]:
        assert self.driver is not None
        listing, _ = await self.driver.arequest("status")
        return {name: (pid, self.ports[name]) for name, pid, status in listing if pid and status == "online"}

    def teardown(self) -> None:
        if self.driver is None:
            return
        with contextlib.suppress(Exception):
            self.driver.request("quit")
        self.driver.close()
        if self.daemon_pid is not None:  # the daemon is not our child: wait on its pidfd
            with contextlib.suppress(Exception):
                wait_pidfds([self.tracker.pidfd(self.daemon_pid)], time.monotonic() + 15)


def ensure_circus() -> Path:
    """bench/.venv-circus/bin/circusd, created with venv + pip on first use."""
    binary = CIRCUS_VENV / "bin" / "circusd"
    if binary.exists():
        return binary
    print(f"  creating {CIRCUS_VENV} (pip install circus)", flush=True)
    subprocess.run([PYTHON, "-m", "venv", str(CIRCUS_VENV)], check=True, timeout=300)
    subprocess.run([str(CIRCUS_VENV / "bin" / "pip"), "install", "--quiet", "circus"], check=True, timeout=600)
    return binary


def ensure_pm2() -> Path:
    """bench/.pm2/node_modules/pm2, installed with npm on first use."""
    module = PM2_DIR / "node_modules" / "pm2"
    if module.exists():
        return module
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("PM2 needs node and npm on PATH")
    print(f"  installing pm2 into {PM2_DIR} (npm install pm2)", flush=True)
    PM2_DIR.mkdir(parents=True, exist_ok=True)
    (PM2_DIR / "package.json").write_text(json.dumps({"name": "supbench-pm2", "private": True}))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "pm2"], cwd=PM2_DIR, check=True, timeout=900)
    return module


def peer_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    python = CIRCUS_VENV / "bin" / "python"
    if python.exists():
        code = "from importlib.metadata import version; print(version('circus'))"
        result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
        found["circus"] = result.stdout.strip() or "?"
    package = PM2_DIR / "node_modules" / "pm2" / "package.json"
    if package.exists():
        found["PM2"] = json.loads(package.read_text()).get("version", "?")
    return found

