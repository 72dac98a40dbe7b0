"""Device fan-out benchmark: one manager, one Mosquitto, N lightweight agents on this machine.

Measures, for installing one small app (download from a registry, SHA256 check,
install, start) on every device at once through Kapua's ``_download`` API:

* time until every device is connected (after the agent processes start);
* the N ``POST .../packages/_download`` calls: wall time and per-call latency;
* time until every operation ended (the last `endedOn`; COMPLETED = the app is running);
* the manager's RSS (before / peak / after) and CPU (mean / peak, % of one core)
  sampled every 100 ms during the fan-out, by pid with psutil;
* MQTT publishes per second through the broker during the fan-out (mean, and the
  busiest one-second window), counted by a wildcard subscriber (requests, replies,
  notifications, presence).

The manager is a real ``python -m bolt_host serve`` process with
``BOLT_DEVICE_MODE=manager``; the agents are full ``Host`` objects without HTTP,
``--per-process`` of them per process (bench/device_agents.py).  Usage::

    python bench/device_fanout.py --agents 50 --per-process 10
    python bench/device_fanout.py --agents 500 --per-process 50 --app sleep --restart-broker-after 1

``--app sleep`` installs an app whose process is ``sleep`` (cheap to spawn) instead of a
Python loop; ``--restart-broker-after S`` restarts Mosquitto S seconds into the burst, and
the result then says whether every operation still ended (COMPLETED, or FAILED with a
reason) and none was left RUNNING.

Everything binds 127.0.0.1; each phase has a deadline; every process started here
(broker, manager, agent processes and the apps they started) is ended by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import h11
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from device_stages import MANAGER_PASSWORD, BrokerCounter, births_after, manager_stages, stage_seconds, wait_for  # noqa: E402

from bolt_host.services.extract import pack_directory  # noqa: E402
from tests.fixtures.device.fleet import sha256_of  # noqa: E402
from tests.fixtures.device.mosquitto import Mosquitto  # noqa: E402
from tests.helpers import free_port  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
APP_MAIN = "import time\nwhile True:\n    time.sleep(3600)\n"


def make_app(folder: Path, kind: str = "python") -> tuple[bytes, dict[str, Any]]:
    """The app to install: a Python process (``python``), or ``sleep`` (a process that costs
    next to nothing to spawn, so a many-device run on few cores measures the fleet, not Python
    start-ups)."""
    bolt = {"main": "main.py", "server": False} if kind == "python" else {"start": "sleep 86400", "server": False}
    manifest = {"name": "fanout-app", "version": "1.0.0", "keywords": ["bolt-app"], "bolt": bolt}
    src = folder / "fanout-app"
    src.mkdir(parents=True)
    (src / "package.json").write_text(json.dumps(manifest))
    (src / "main.py").write_text(APP_MAIN)
    return pack_directory(src, folder / "fanout-app.tgz").read_bytes(), manifest


class Sampler(threading.Thread):
    """CPU% and RSS of one pid every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (cpu %, rss bytes)
        self.halt = threading.Event()

    def run(self) -> None:
        self.process.cpu_percent(None)
        while not self.halt.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.samples.append((self.process.cpu_percent(None), self.process.memory_info().rss))


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def descendants(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.extend(child.pid for child in psutil.Process(pid).children(recursive=True))
    return found


def end(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


async def fan_out(
    port: int, token: str, devices: list[dict[str, Any]], request: dict[str, Any]
) -> list[tuple[float, int, dict[str, Any]]]:
    """One ``_download`` per device, all at once, each on its own connection: (seconds, status,
    body) per call; the body also names the device's client id and when (``time.monotonic()``)
    its answer was read.  Plain HTTP/1.1 through h11, not an httpx client: httpx's connection
    pool walks every connection (a ``getpeername`` and a ``poll`` each) whenever a response
    ends, so 500 calls cost it 250,000 system calls, each a chance for another thread of this
    process to take the GIL for 5 ms; its answers were read up to 13 s after the manager had
    sent them (bench/README.md, issue 16)."""
    body = json.dumps(request).encode()

    async def one(device: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = h11.Connection(h11.CLIENT)
        target = f"/v1/_/devices/{device['id']}/packages/_download"
        headers = [("host", f"127.0.0.1:{port}"), ("authorization", f"Bearer {token}"),
                   ("content-type", "application/json"), ("content-length", str(len(body))),
                   ("connection", "close")]
        writer.write(connection.send(h11.Request(method="POST", target=target, headers=headers))
                     + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
        status, chunks = 0, []
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            writer.close()
        at = time.monotonic()
        answer = {**json.loads(b"".join(chunks)), "device": device["id"], "clientId": device["clientId"],
                  "answeredAt": at}
        return time.perf_counter() - started, status, answer

    return await asyncio.gather(*(one(d) for d in devices))


class Registry:
    """``bolt-host registry serve`` on a folder holding the app's tarball, as a process of its
    own: the 500 downloads it serves must not share this process's GIL with the calls."""

    def __init__(self, folder: Path, tarball: bytes, name: str, version: str) -> None:
        folder.mkdir(parents=True)
        (folder / f"{name}-{version}.tgz").write_bytes(tarball)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bolt_host", "registry", "serve", str(folder), "--port", str(self.port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def packument() -> dict[str, Any] | None:
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.url}/{name}", timeout=2)
                if response.status_code == 200:
                    return response.json()["versions"][version]
            return None

        self.version_doc: dict[str, Any] = wait_for(packument, 60, "the registry")

    def stop(self) -> None:
        end(self.process)


def wait_operations(api: httpx.Client, started: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Every started operation once it is no longer RUNNING (polling only the pending ones)."""
    pending = {o["id"]: o for o in started}
    ended: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while pending:
        for operation_id, operation in list(pending.items()):
            current = api.get(f"/v1/_/devices/{operation['device']}/operations/{operation_id}").json()
            if current.get("status") != "RUNNING":
                ended.append(current)
                del pending[operation_id]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} operations still RUNNING after {timeout}s")
        if pending:
            time.sleep(1.0)  # a poll of the manager's API, not a wait for an event
    return ended


def epoch_of(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def log_complete(operation: dict[str, Any]) -> bool:
    """A COMPLETED install's log has every step; a FAILED one says why."""
    lines = operation.get("log", "").splitlines()
    if operation["status"] == "COMPLETED":
        return "download COMPLETED 100%" in lines and "install COMPLETED 100%" in lines
    return bool(lines) and any(":" in line or not line.startswith(("download", "install")) for line in lines)


class BrokerRestart(threading.Thread):
    """Restarts the broker ``after`` seconds into the burst; records when it was down."""

    def __init__(self, broker: Mosquitto, after: float) -> None:
        super().__init__(daemon=True)
        self.broker, self.after = broker, after
        self.go = threading.Event()
        self.down_at = self.up_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        self.go.wait()
        time.sleep(self.after)  # the moment in the burst chosen on the command line
        try:
            self.down_at = time.monotonic()
            self.broker.restart()
            self.up_at = time.monotonic()
        except BaseException as exc:  # reported in the result, never lost in a thread
            self.error = exc


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    program = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # --nonblocking: a profiler that stops the process for each sample slows it on a loaded machine
    return subprocess.Popen([program, "record", "--nonblocking", "--pid", str(pid), "-r", "100", "-f", "raw",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def perf_record(out: Path) -> subprocess.Popen[bytes]:
    """The whole machine's CPU samples with call graphs (``perf record -a -g``) until interrupted:
    every process, the app processes' execs and the kernel included."""
    return subprocess.Popen(["perf", "record", "-a", "-g", "-F", "999", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def strace_count(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """System calls of a process and its threads, counted (``strace -c -f``) until interrupted."""
    return subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class MemoryReports:
    """Asks the manager (started with BOLT_DEVICE_MEMORY_REPORTS) for its memory reports
    (bolt_device/memory.py): each one labelled, each awaited before the next."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.folder, self.pid, self.count = folder, pid, 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, label: str) -> None:
        self.count += 1
        (self.folder / "label").write_text(label)
        os.kill(self.pid, signal.SIGUSR1)
        wait_for((self.folder / f"{self.count}.txt").exists, 120, f"memory report {self.count}")

    def take_when(self, ready: Any, label: str) -> None:
        """One report from a thread once ``ready()`` holds (the burst's peak), while the calls go on."""
        def watch() -> None:
            with contextlib.suppress(TimeoutError):
                wait_for(ready, 120, label, interval=0.02)
                self.take(label)

        threading.Thread(target=watch, daemon=True).start()

    def trim(self) -> None:
        os.kill(self.pid, signal.SIGUSR2)
        wait_for((self.folder / f"{self.count}-trim.txt").exists, 60, "malloc_trim")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="device-fanout-"))
    users = {"bolt-manager": MANAGER_PASSWORD, "bolt-manager-observer": MANAGER_PASSWORD}
    users.update({f"agent-{i}": f"pw-{i}" for i in range(args.agents)})
    manager: subprocess.Popen[bytes] | None = None
    profilers: list[subprocess.Popen[bytes]] = []
    reports: MemoryReports | None = None
    agents: list[subprocess.Popen[bytes]] = []
    app_pids: list[int] = []
    counter: BrokerCounter | None = None
    broker = Mosquitto(work / "broker", users, managers=("bolt-manager", "bolt-manager-observer"))
    registry: Registry | None = None
    try:
        broker.start()
        data, manifest = make_app(work, args.app)
        registry = Registry(work / "registry", data, manifest["name"], manifest["version"])
        doc = registry.version_doc
        port = free_port()
        env = {**os.environ, "BOLT_DEVICE_MODE": "manager", "BOLT_DEVICE_BROKER_URL": broker.url,
               "BOLT_DEVICE_USERNAME": "bolt-manager", "BOLT_DEVICE_PASSWORD": MANAGER_PASSWORD,
               "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD, "BOLT_DISABLE_PLUGINS": "robot,market,enterprise",
               "BOLT_AUTOSTART": "false", "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}",
               # every call comes from this one address (in a fleet: many clients, or one
               # integration server); the host's per-address cap (128 by default) would refuse them
               "BOLT_MAX_CONNECTIONS_PER_IP": str(args.agents + 16)}
        stage_log = work / "manager-stages.json"
        env["BOLT_DEVICE_STAGE_LOG"] = str(stage_log)
        if args.memory_reports is not None:
            env["BOLT_DEVICE_MEMORY_REPORTS"] = str(args.memory_reports)
            if args.trace_frames > 0:
                env["PYTHONTRACEMALLOC"] = str(args.trace_frames)
        env.update(args.manager_env)
        log = (work / "manager.log").open("wb")
        manager = subprocess.Popen(
            [sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir", str(work / "manager"),
             "--registry", registry.url, "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"

        def manager_up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.post(base + "/v1/authentication/user", timeout=2,
                                  json={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 200
            return False

        wait_for(manager_up, 60, "the manager")
        if args.memory_reports is not None:
            reports = MemoryReports(args.memory_reports, manager.pid)
        token = httpx.post(base + "/v1/authentication/user",
                           json={"username": "admin", "password": ADMIN_PASSWORD}).json()["tokenId"]
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        counter = BrokerCounter(broker.port)

        started = time.monotonic()
        for first in range(0, args.agents, args.per_process):
            count = min(args.per_process, args.agents - first)
            agent_log = (work / f"agents-{first}.log").open("wb")
            agents.append(subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "device_agents.py"), "--broker", broker.url,
                 "--first", str(first), "--count", str(count), "--data-root", str(work / "agents"),
                 *(["--cprofile", str(args.cprofile_agent)] if args.cprofile_agent and first == 0 else [])],
                stdout=agent_log, stderr=subprocess.STDOUT, start_new_session=True,
            ))

        def connected() -> list[dict[str, Any]] | None:
            items = api.get("/v1/_/devices", params={"limit": 1000, "status": "CONNECTED"}).json()["items"]
            return items if len(items) >= args.agents else None

        devices = wait_for(connected, 300, f"{args.agents} devices connected", interval=1.0)
        connect_seconds = time.monotonic() - started
        idle = Sampler(manager.pid)
        idle.start()
        time.sleep(2.0)
        idle.halt.set()
        idle.join()

        request = {"uri": doc["dist"]["tarball"], "name": manifest["name"], "version": manifest["version"],
                   "fileHash": sha256_of(data), "install": True}
        sampler = Sampler(manager.pid)
        # py-spy attached for the burst only (the manager, one agent process); its output is not committed
        if args.profile is not None:
            profilers.append(py_spy(manager.pid, args.profile))
        if args.profile_agent is not None:
            profilers.append(py_spy(agents[0].pid, args.profile_agent))
        if args.strace_agent is not None:
            profilers.append(strace_count(agents[-1].pid, args.strace_agent))
        if args.perf is not None:
            profilers.append(perf_record(args.perf))
        if args.cprofile_agent is not None:
            os.kill(agents[0].pid, signal.SIGUSR1)
        if reports is not None:
            reports.take(f"idle, {len(devices)} devices connected")
            reports.take_when(lambda: len(counter.requested) >= len(devices),
                              "peak: every request through the broker, the calls waiting for replies")
        restart = BrokerRestart(broker, args.restart_broker_after) if args.restart_broker_after is not None else None
        if restart is not None:
            restart.start()
        messages_before = counter.count
        cpu_before = cpu_seconds([manager.pid]), cpu_seconds([a.pid for a in agents])
        # the registry serving the 500 downloads, and the broker (a restart makes a new one: not counted)
        broker_pid = broker.process.pid if broker.process is not None and restart is None else None
        others_before = cpu_seconds([registry.process.pid]), cpu_seconds([broker_pid] if broker_pid else [])
        sampler.start()
        fan_wall, fan_started = time.time(), time.monotonic()
        load_at_burst = os.getloadavg()
        counter.requested.clear()
        counter.replied.clear()
        if restart is not None:
            restart.go.set()
        client_cpu = time.process_time()
        calls = asyncio.run(fan_out(port, token, devices, request))
        accepted_seconds = time.monotonic() - fan_started
        client_cpu = time.process_time() - client_cpu  # this process: the 500 calls, the counter, the sampler
        latencies = [seconds for seconds, _, _ in calls]
        started_ops = [body for _, status, body in calls if status == 200]
        refused = [f"{status} {body.get('kapuaErrorCode') or body.get('type')}" for _, status, body in calls
                   if status != 200]
        if restart is not None:
            restart.join(timeout=120)
        # the subscriber sees the last notifications without loading the manager; what it missed
        # (a broker restart blinds it for a moment) is then read from the manager's API
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: len(set(counter.installed) | set(counter.failed)) >= len(started_ops), 300,
                     "every device's last notification", interval=0.1)
        operations = wait_operations(api, started_ops, 300)
        last_end = max((epoch_of(o["endedOn"]) for o in operations if o.get("endedOn")), default=fan_wall)
        fan_seconds = last_end - fan_wall
        messages = counter.count - messages_before
        window = [t for t in counter.times if t >= fan_started]
        peak_rate = max((sum(1 for u in window if t <= u < t + 1.0) for t in window), default=0)
        cpu_spent = (cpu_seconds([manager.pid]) - cpu_before[0], cpu_seconds([a.pid for a in agents]) - cpu_before[1],
                     cpu_seconds([registry.process.pid]) - others_before[0],
                     cpu_seconds([broker_pid]) - others_before[1] if broker_pid else None)
        sampler.halt.set()
        sampler.join()
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        if args.cprofile_agent is not None:
            os.kill(agents[0].pid, signal.SIGUSR2)
            wait_for(args.cprofile_agent.exists, 60, "the agent's profile")
        if reports is not None:
            reports.take("after: every operation ended")
            reports.trim()
            reports.take("after malloc_trim(0)")
        completed = sum(o["status"] == "COMPLETED" for o in operations)
        running = {"type": "attributePredicate", "attributeName": "status", "attributeValue": "RUNNING"}
        in_manager = still_running = 0
        for device in devices:  # every operation the burst made, those the refused calls closed included
            path = f"/v1/_/devices/{device['id']}/operations/_count"
            in_manager += api.post(path, json={}).json()["count"]
            still_running += api.post(path, json={"predicate": running}).json()["count"]
        failed_reasons = sorted({o["log"].splitlines()[-1] for o in operations if o["status"] != "COMPLETED"})
        app_pids = descendants([a.pid for a in agents])
        stages = stage_seconds(counter, fan_started)
        if restart is not None:
            stages["birthAfterRestart"] = births_after(counter, restart.up_at)
        cpu = [s[0] for s in sampler.samples] or [0.0]
        rss = [s[1] for s in sampler.samples] or [0]
        idle_rss = [s[1] for s in idle.samples] or [0]
        agents_rss = sum(p.memory_info().rss for p in map(psutil.Process, [a.pid for a in agents]))
        end(manager)  # it writes its stage log as it stops
        stages["manager"] = manager_stages(stage_log, counter, calls, fan_started)
        return {
            "agents": args.agents,
            "agentProcesses": len(agents),
            "cpus": psutil.cpu_count(),
            "connectAllSeconds": round(connect_seconds, 2),
            "postAllAcceptedSeconds": round(accepted_seconds, 3),
            "postLatencyMs": {"p50": round(statistics.median(latencies) * 1000, 1),
                              "max": round(max(latencies) * 1000, 1)},
            "app": args.app,
            "installAllSeconds": round(fan_seconds, 2),
            "stagesSeconds": stages,
            "callsRefused": refused,
            "operationsStarted": len(started_ops),
            "operationsInManager": in_manager,
            "operationsStillRunning": still_running,
            "operationsCompleted": completed,
            "operationsFailed": len(operations) - completed,
            "operationsFailedReasons": failed_reasons,
            "operationsWithCompleteLog": sum(log_complete(o) for o in operations),
            "brokerRestart": None if restart is None else {
                "after": args.restart_broker_after, "downSeconds": round(restart.up_at - restart.down_at, 2),
                "error": repr(restart.error) if restart.error else None},
            "loadAverageAtBurst": [round(x, 2) for x in load_at_burst],
            "loadAverage": [round(x, 2) for x in os.getloadavg()],
            "managerEnv": dict(args.manager_env),
            "managerRssMiB": {"idle": round(max(idle_rss) / 2**20, 1), "peak": round(max(rss) / 2**20, 1),
                              "after": round(rss[-1] / 2**20, 1)},
            "managerCpuPercent": {"mean": round(statistics.mean(cpu), 1), "peak": round(max(cpu), 1)},
            # CPU time used from the burst's start until every operation had ended, to tell the
            # manager's own work from the agents' (their processes, not the apps they start)
            "cpuSecondsDuringFanOut": {"manager": round(cpu_spent[0], 1), "agentProcesses": round(cpu_spent[1], 1),
                                       "registry": round(cpu_spent[2], 1),
                                       "broker": None if cpu_spent[3] is None else round(cpu_spent[3], 1)},
            "benchCpuSecondsWhileCalling": round(client_cpu, 1),
            "brokerMessages": messages,
            "brokerMessagesPerSecond": round(messages / fan_seconds, 1) if fan_seconds > 0 else None,
            "brokerMessagesPeakPerSecond": peak_rate,
            "agentProcessesRssMiB": round(agents_rss / 2**20, 1),
            "managerDbBytes": (work / "manager" / "db.json").stat().st_size,
        }
    finally:
        if counter is not None:
            counter.close()
        app_pids = app_pids or descendants([a.pid for a in agents])
        for agent in agents:
            end(agent)
        for pid in app_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for profiler in profilers:
            end(profiler)
        end(manager)
        broker.stop()
        if registry is not None:
            registry.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--per-process", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "device_fanout.json")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data dirs)")
    parser.add_argument("--app", choices=("python", "sleep"), default="python",
                        help="the installed app's process: a Python loop, or 'sleep' (cheap to spawn)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="record the manager with py-spy during the burst (raw folded stacks)")
    parser.add_argument("--profile-agent", type=Path, default=None, metavar="FILE",
                        help="record the first agent process with py-spy during the burst (raw folded stacks)")
    parser.add_argument("--cprofile-agent", type=Path, default=None, metavar="FILE",
                        help="cProfile the first agent process's event loop (CPU time) during the burst")
    parser.add_argument("--strace-agent", type=Path, default=None, metavar="FILE",
                        help="count the last agent process's system calls during the burst (strace -c -f)")
    parser.add_argument("--perf", type=Path, default=None, metavar="FILE",
                        help="perf record -a -g of the whole machine during the burst (perf report -i FILE)")
    parser.add_argument("--memory-reports", type=Path, default=None, metavar="DIR",
                        help="the manager traces its allocations and writes memory reports into DIR: idle, at "
                             "the burst's peak, after it, after malloc_trim (bolt_device/memory.py)")
    parser.add_argument("--trace-frames", type=int, default=1,
                        help="frames per allocation for --memory-reports (0: no tracemalloc, only RSS and malloc's "
                             "figures; more: slower, tracebacks in the reports)")
    parser.add_argument("--manager-env", type=lambda v: tuple(v.split("=", 1)), action="append", default=[],
                        metavar="NAME=VALUE", help="extra environment for the manager (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--restart-broker-after", type=float, default=None, metavar="SECONDS",
                        help="restart Mosquitto this many seconds into the burst")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
