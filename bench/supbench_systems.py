"""The systems the supervision benchmark compares: a Popen baseline, supervisord and bolt-host."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_model import PYTHON, REPO_ROOT, SUPERVISORD_VENV, System, app_environment, profiled
from supbench_util import (
    LOOPBACK,
    RUN_VARIABLE,
    free_port,
    median,
    probe_health,
    process_cpu_s,
    wait_healthy,
    wait_or_kill,
    wait_pidfds_async,
    watch_healthy,
)


class PopenBaseline(System):
    """The floor: the benchmark process itself runs the apps with ``subprocess.Popen``."""

    label = "Popen"

    def __init__(self, *args: Any, ports: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, name: str) -> list[str]:
        return [PYTHON, "server.py"]

    def environment(self, name: str) -> dict[str, str]:
        return app_environment(name, self.ports[name], self.run_id)

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            self.command(name),
            cwd=self.repo / name,
            env=self.environment(name),
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
        self.figures.stop_call_s = time.monotonic() - t0
        return self.figures.stop_call_s

    def status_call(self) -> Callable[[], Any]:
        """The floor of a listing: name, pid and liveness of every app from memory."""
        return lambda: [(name, proc.pid, proc.poll()) for name, proc in self.procs.items()]

    def teardown(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            wait_or_kill(proc, 5)


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
        answered = await rpc
        self.figures.stop_call_s = answered - t0
        return max(gone, answered) - t0

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
    folder = "bolt-host"  # <workdir>/<folder>-data and <folder>.log: one each per variant

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = ""
        self.client: httpx.AsyncClient | None = None
        self.status_conn: http.client.HTTPConnection | None = None

    def host_environment(self) -> dict[str, str]:
        low = self.opts.port_base
        env = dict(os.environ)
        env.update({"BOLT_PORT_RANGE": f"{low}-{low + 1999}", "BOLT_LOG_LEVEL": "warning", RUN_VARIABLE: self.run_id})
        if self.opts.ready_timeout is not None:
            env["BOLT_READY_TIMEOUT_SECONDS"] = str(self.opts.ready_timeout)
        if not self.opts.with_plugins:
            env["BOLT_PLUGINS"] = ""  # an empty allow-list: the core host only
        return env

    async def launch(self) -> None:
        self.port = free_port()
        password = secrets.token_urlsafe(16)
        env = {**self.host_environment(), "BOLT_ADMIN_PASSWORD": password}
        data_dir = self.workdir / f"{self.folder}-data"
        log = (self.workdir / f"{self.folder}.log").open("wb")
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
                raise RuntimeError(f"{self.label} did not come up; see {self.workdir / f'{self.folder}.log'}")
            await asyncio.sleep(0.05)
        self.figures.notes["boot_s"] = round(time.monotonic() - t0, 3)
        self.client.headers["x-bolt-user-token"] = self.token
        t0, cpu0 = time.monotonic(), process_cpu_s(self.proc.pid)
        semaphore = asyncio.Semaphore(8)

        async def install(name: str) -> None:
            async with semaphore:
                await self.call("POST", "/api/apps/local", {"path": name})

        with profiled(self.opts, self.proc.pid, f"{self.label}-{self.n}-install", self.tracker):
            await asyncio.wait_for(asyncio.gather(*(install(name) for name in self.names)), self.opts.phase_timeout)
        self.figures.notes["install_s"] = round(time.monotonic() - t0, 3)
        self.figures.notes["install_cpu_s"] = round(process_cpu_s(self.proc.pid) - cpu0, 3)  # the host's, children not

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
        deadline = self.deadline()
        if self.opts.bulk:  # one call, as supervisord's startAllProcesses
            # The apps are probed while they start, as raw's and supervisord's are (their ports
            # are in the host's range): the figure is when the call has answered and the bench has
            # seen every app of the answer answer /health itself, whichever is later.
            answered: dict[int, float] = {}
            low = self.opts.port_base
            t0 = time.monotonic()
            watcher = asyncio.create_task(watch_healthy(low, low + 1999, answered))
            try:
                answer = await self.call("POST", "/api/apps/start", {"names": self.names})
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            call_done = time.monotonic()
            self.figures.notes["start_call_s"] = round(call_done - t0, 3)
            if answer["failed"]:
                raise RuntimeError(f"bolt-host could not start {answer['failed']}")
            for context in answer["started"]:
                self.tracker.track(context["pid"])
            ports = [context["port"] for context in answer["started"]]
            unseen = [port for port in ports if port not in answered]
            self.figures.notes["start_probed_after_call"] = len(unseen)
            last = await wait_healthy(unseen, deadline) if unseen else call_done
            return max(call_done, last, *(answered[port] for port in ports if port in answered)) - t0
        semaphore = asyncio.Semaphore(self.opts.concurrency)

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

    def measure_status(self) -> None:
        super().measure_status()
        if self.status_conn is None:
            return
        conn, headers = self.status_conn, {"x-bolt-user-token": self.token}
        timings = []
        for _ in range(self.opts.status_calls):  # the light listing (?fields=), on the same connection
            t0 = time.perf_counter()
            conn.request("GET", "/api/apps/@live?fields=name,status,pid", headers=headers)
            conn.getresponse().read()
            timings.append((time.perf_counter() - t0) * 1000)
        if timings:
            self.figures.notes["light_status_median_ms"] = round(median(timings), 3)

    async def stop_all(self) -> float:
        running = await self.apps()
        pidfds = [self.tracker.pidfd(pid) for pid, _ in running.values()]
        semaphore = asyncio.Semaphore(self.opts.concurrency)

        async def stop(name: str) -> None:
            async with semaphore:
                await self.call("POST", "/api/apps/stop", {"name": name})

        t0 = time.monotonic()
        if self.opts.bulk:
            stopping = self.call("POST", "/api/apps/stop", {"names": list(running)})
        else:
            stopping = asyncio.gather(*(stop(name) for name in running))
        await asyncio.wait_for(stopping, self.opts.phase_timeout)
        answered = time.monotonic()
        self.figures.stop_call_s = answered - t0
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
