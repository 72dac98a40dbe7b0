"""Crash faults: the host as a real process, ``kill -9`` at random moments, restarted each time.

Each round starts ``python -m bolt_host serve`` on the same data dir and port, checks the
invariants below against what earlier rounds had *acknowledged* (the client got a success
answer before the kill), then runs a mix of work concurrently and kills the host with
SIGKILL at a random moment while that work is in flight:

* local installs and upgrades of ``up1`` (running; an upgrade restarts it), with a new
  version each round;
* per-app db writes through ``echo``'s app token (``POST /api/db/crash/insert``);
* registry installs run as tasks (``POST /api/apps/install-task``), followed to the end:
  ``ticker`` (no dependencies) and ``pydeps``, a Python app whose ``requirements.txt`` pins a
  tiny wheel made for its version, so every install runs the real uv (``--no-index``, from a
  local wheel: fast, and the host's uv cache carries over from round to round);
* starts and stops of ``up2``;
* market operations: ``mkt`` installed from a market source (the registry) and uninstalled
  again, each through the market plugin's API and waited for (``sync``).

Invariants after every restart:

* the host boots: ``db.json`` and every per-app database load;
* no staging or swap leftovers (``apps/.staging-*``, ``.old-*``), no temp db files;
* every installed app's folder is whole: its ``package.json`` has the recorded version, and
  ``pydeps``' own environment is there and holds the dependency of that same version (a kill
  during the dependency step leaves the previous version whole, never a half-installed one);
* no orphans: no dependency tool (uv) of the killed host is left running (a tool's marker with
  its working folder in the data dir);
* acknowledged installs and upgrades are there (the recorded version is the last
  acknowledged one or a later attempt), acknowledged db documents are there;
* no task is left queued or running: an interrupted one is failed, with the reason in
  its log; acknowledged tasks exist, and a task seen succeeded has installed its version;
* ``echo``, started in the first round and never touched again, is adopted every time
  (same pid); each app has at most one live process, and every live app process is one
  the host knows; an app whose last change was an acknowledged start is running, one whose
  last change was an acknowledged stop is not;
* the market's row for ``mkt`` is settled (no operation left in flight) and agrees with the
  host: installed exactly when the host has the app, and as the last acknowledged operation
  (with no later attempt) left it.

Every process is ended by pid at the end: the host (SIGTERM, then SIGKILL) and any app
process carrying this host's URL in its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.statefile import StateFile
from bolt_host.storage import Database
from tests.fixtures.echo_copies import make_app_copy, set_app_version
from tests.helpers import free_port, make_wheel, wait_until
from tests.registry_server import RegistryServer

ROUNDS = int(os.environ.get("BOLT_CRASH_ROUNDS", "200"))
ADMIN_PASSWORD = "crash-admin-password"
SEED = int(os.environ.get("BOLT_CRASH_SEED", "20241123"))
CRASH_REASON = "marked failed at boot"
MARKET = "/app-store/api/v2"
MARKET_SOURCE = "crash-source"
MARKET_SETTLED = {"running", "stopped", "uninstalled"}
DEPENDENCY = "boltcrashdep"
DEPENDENCY_STEP = "=== preparing the app's Python environment"

# ~6.5 min on a quiet 2-core machine; a shared one at load 50-90 got through 99-140 rounds in 600 s
pytestmark = pytest.mark.timeout(1500)


def _version(round_number: int) -> str:
    return f"1.0.{round_number}"


def _patch(version: str) -> int:
    return int(version.rsplit(".", 1)[1])


@dataclass
class Acked:
    """What clients were told succeeded (and what they tried), across rounds."""

    install_attempts: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    installs: dict[str, tuple[float, str]] = field(default_factory=dict)
    documents: set[int] = field(default_factory=set)
    tasks: set[int] = field(default_factory=set)
    task_installs: dict[int, tuple[str, str]] = field(default_factory=dict)
    # up2: (time, op) of the last attempted and the last acknowledged start/stop
    last_attempt: tuple[float, str] | None = None
    last_ack: tuple[float, str] | None = None
    # mkt: the same for market installs and uninstalls
    market_attempt: tuple[float, str] | None = None
    market_ack: tuple[float, str] | None = None
    market_acks: int = 0
    market_refusal = ""  # the last refusal, shown when none ever succeeded
    lock: threading.Lock = field(default_factory=threading.Lock)


class HostProcess:
    """``python -m bolt_host serve`` in its own session, output to a log file."""

    def __init__(self, data_dir: Path, repo: Path, registry: str, port: int, log_path: Path) -> None:
        self.args = [
            sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--local-repo", str(repo), "--registry", registry, "--log-level", "warning",
        ]
        self.env = {
            **os.environ,
            "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BOLT_STOP_GRACE_SECONDS": "3",
            "BOLT_DEVICE_MODE": "off",
            "UV_NO_INDEX": "1",  # pydeps' dependency is a local wheel: no index, no network
        }
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.time()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"host exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/-/health", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout=60, interval=0.05, what="host start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def app_processes(host_url: str) -> list[tuple[int, str]]:
    """(pid, app) of every live process started for the host at ``host_url``."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get("BOLT_HOST_URL") == host_url and "BOLT_APP_NAME" in env:
                found.append((proc.pid, env["BOLT_APP_NAME"]))
    return found


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("echo", "up1", "up2"):
        make_app_copy(repo, name)
    make_app_copy(tmp_path, "pydeps")
    make_app_copy(tmp_path, "mkt")
    port = free_port()
    with RegistryServer() as registry:
        host = HostProcess(tmp_path / "data", repo, registry.url, port, tmp_path / "host.log")
        try:
            yield {
                "repo": repo, "registry": registry, "host": host, "data": tmp_path / "data",
                "pydeps": tmp_path / "pydeps", "wheels": tmp_path / "wheels", "mkt": tmp_path / "mkt",
            }
        finally:
            host.stop()
            for pid, _ in app_processes(host.url):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# work ------------------------------------------------------------------------------------
def _installer(url: str, token: str, repo_version: str, acked: Acked, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=20) as client:
        while not stop.is_set():
            with acked.lock:
                acked.install_attempts.setdefault("up1", []).append((time.monotonic(), repo_version))
            with contextlib.suppress(httpx.HTTPError):
                answer = client.post("/api/apps/local", json={"path": "up1", "upgrade": True})
                if answer.status_code == 201:
                    with acked.lock:
                        acked.installs["up1"] = (time.monotonic(), answer.json()["body"]["version"])


def _db_writer(url: str, app_token: str, first: int, acked: Acked, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"X-Bolt-App-Token": app_token}, timeout=20) as client:
        seq = first
        while not stop.is_set():
            seq += 1
            with contextlib.suppress(httpx.HTTPError):
                answer = client.post("/api/db/crash/insert", json={"object": {"seq": seq}})
                if answer.status_code == 201:
                    with acked.lock:
                        acked.documents.add(seq)


def _publish_pydeps(registry: RegistryServer, folder: Path, wheels: Path, version: str) -> None:
    """``pydeps`` at ``version``, requiring the dependency's wheel of the same version."""
    wheel = make_wheel(wheels, DEPENDENCY, version, f"VERSION = {version!r}\n")
    (folder / "requirements.txt").write_text(f"{DEPENDENCY} @ {wheel.as_uri()}\n")
    registry.publish_dir(folder, version=version)


def _tasker(url: str, token: str, name: str, acked: Acked, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=20) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                answer = client.post("/api/apps/install-task", json={"name": name, "upgrade": True})
                if answer.status_code != 201:
                    continue
                task_id = answer.json()["body"]["id"]
                with acked.lock:
                    acked.tasks.add(task_id)
                while not stop.is_set():
                    record = client.get(f"/api/tasks/{task_id}").json()["body"]
                    if record["status"] == "succeeded":
                        with acked.lock:
                            acked.task_installs[task_id] = (record["result"]["name"], record["result"]["version"])
                    if record["status"] not in ("queued", "running"):
                        break


def _starter(url: str, token: str, rng: random.Random, acked: Acked, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=30) as client:
        while not stop.is_set():
            op = rng.choice(["start", "stop"])
            attempt = (time.monotonic(), op)
            with acked.lock:
                acked.last_attempt = attempt
            with contextlib.suppress(httpx.HTTPError):
                answer = client.post(f"/api/apps/{op}", json={"name": "up2"})
                if answer.status_code == 200 or (op == "stop" and answer.json().get("code") == 420):
                    with acked.lock:
                        acked.last_ack = attempt


def _marketer(url: str, version: str, acked: Acked, stop: threading.Event) -> None:
    with httpx.Client(base_url=url + MARKET, auth=("admin", ADMIN_PASSWORD), timeout=30) as client:
        while not stop.is_set():
            for op in ("install", "uninstall"):
                attempt = (time.monotonic(), op)
                with acked.lock:
                    acked.market_attempt = attempt
                with contextlib.suppress(httpx.HTTPError):
                    if op == "install":
                        body = {"source": MARKET_SOURCE, "app_name": "mkt", "version": version, "sync": True}
                        answer = client.post("/apps/mkt/install", json=body)
                    else:
                        answer = client.request("DELETE", "/apps/mkt", json={"sync": True})
                    if answer.status_code == 200:
                        with acked.lock:
                            acked.market_ack, acked.market_acks = attempt, acked.market_acks + 1
                    else:
                        acked.market_refusal = answer.text[:300]


def _check_market(url: str, apps: dict[str, Any], acked: Acked) -> list[str]:
    with httpx.Client(base_url=url + MARKET, auth=("admin", ADMIN_PASSWORD), timeout=30) as client:
        sources = client.get("/market/state").json()["data"]["user_data"]["sources"]
    rows = [r["status"] for source in sources.values() for r in source["app_state_latest"]]
    row = next((r for r in rows if r["name"] == "mkt"), None)
    if row is None:
        return []
    state = row["state"]
    problems = []
    if state in MARKET_SETTLED and (state != "uninstalled") != ("mkt" in apps):
        problems.append(f"mkt: market says {state}, host has it: {'mkt' in apps}")
    if state.endswith("ing") and state != "running":
        problems.append(f"mkt: market operation left in flight ({state})")
    with acked.lock:
        attempt, ack = acked.market_attempt, acked.market_ack
    if ack is not None and ack == attempt and (ack[1] == "install") != ("mkt" in apps):
        problems.append(f"mkt: acknowledged market {ack[1]} lost (host has it: {'mkt' in apps}, market {state})")
    return problems


# checks ----------------------------------------------------------------------------------
def _wait_settled(client: httpx.Client) -> list[dict[str, Any]]:
    """Contexts once no app is starting or stopping (boot adopts or restarts them first)."""

    def settled() -> list[dict[str, Any]] | None:
        contexts = client.get("/api/apps/@live").json()["body"]
        busy = [c for c in contexts if c["status"] in ("starting", "stopping", "backoff")]
        return None if busy else contexts or [{}]

    found = wait_until(settled, timeout=30, interval=0.05, what="apps settled after boot")
    return [c for c in found if c]


def _check_files(data: Path, booted_at: float) -> list[str]:
    """Leftovers of the killed host (a temp file younger than this boot is a write in progress)."""
    problems = []
    for folder in (data / "apps", data / "public"):
        leftovers = [p.name for p in folder.glob(".*")] if folder.is_dir() else []
        if leftovers:
            problems.append(f"leftovers in {folder.name}/: {leftovers}")
    for folder in (data, data / "databases"):
        temps = [p.name for p in folder.glob(".*.tmp") if _mtime(p) < booted_at]
        if temps:
            problems.append(f"temp files in {folder}: {temps}")
    for path in (data / "databases").glob("*.json"):
        try:
            Database(path).close()
        except Exception as exc:
            problems.append(f"{path.name} does not load: {exc}")
    try:
        StateFile(data / "runtime.json")
    except Exception as exc:
        problems.append(f"runtime.json does not load: {exc}")
    return problems


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # renamed into place meanwhile: not a leftover


def _check_round(
    host: HostProcess, data: Path, token: str, echo_pid: int | None, acked: Acked, app_token: str | None
) -> tuple[list[str], int | None]:
    problems = _check_files(data, host.started_at)
    with httpx.Client(base_url=host.url, headers={"X-Bolt-User-Token": token}, timeout=30) as client:
        assert client.get("/api/users/@current").status_code == 200, "the admin session survives a kill"
        contexts = {c["name"]: c for c in _wait_settled(client)}
        apps = {a["name"]: a for a in client.get("/api/apps").json()["body"]}
        for name, app in apps.items():
            manifest = Path(app["folder"]) / "package.json"
            if not manifest.is_file():
                problems.append(f"{name}: folder missing or half-installed ({app['folder']})")
            elif json.loads(manifest.read_text())["version"] != app["version"]:
                problems.append(
                    f"{name}: record says {app['version']}, folder holds {json.loads(manifest.read_text())['version']}"
                )
        if "pydeps" in apps:
            problems += _check_dependencies(apps["pydeps"])
        problems += _check_market(host.url, apps, acked)
        problems += _orphan_tools(data)
        with acked.lock:
            installs = dict(acked.installs)
            attempts = {k: list(v) for k, v in acked.install_attempts.items()}
            tasks, task_installs, documents = set(acked.tasks), dict(acked.task_installs), set(acked.documents)
            last_attempt, last_ack = acked.last_attempt, acked.last_ack
        for name, (when, version) in installs.items():
            later = {v for t, v in attempts.get(name, []) if t >= when}
            recorded = apps.get(name, {}).get("version")
            if recorded is None or (recorded != version and recorded not in later):
                problems.append(f"{name}: acknowledged {version} lost (recorded {recorded}, later tries {later})")
        # tasks
        records = {t["id"]: t for t in client.get("/api/tasks").json()["body"]}
        for record in records.values():
            if record["status"] in ("queued", "running"):
                problems.append(f"task {record['id']} still {record['status']} after boot")
            if record["status"] == "failed" and CRASH_REASON in (record.get("error") or ""):
                log = client.get(f"/api/tasks/{record['id']}/log").text
                if CRASH_REASON not in log:
                    problems.append(f"task {record['id']} failed at boot without the reason in its log")
        problems += [f"acknowledged task {t} lost" for t in tasks if t not in records]
        for task_id, (name, version) in task_installs.items():
            recorded = apps.get(name, {}).get("version")
            if recorded is None or _patch(recorded) < _patch(version):
                problems.append(f"task {task_id} succeeded with {name} {version}, recorded {recorded}")
        # per-app data
        if app_token is not None:
            found = client.post("/api/db/crash/find", json={"query": {}}, headers={"X-Bolt-App-Token": app_token})
            if found.status_code != 200:
                problems.append(f"echo's app token refused after boot: {found.text}")
            else:
                lost = documents - {doc["seq"] for doc in found.json()["body"]}
                if lost:
                    problems.append(f"{len(lost)} acknowledged documents lost: {sorted(lost)[:10]}")
        # processes
        live = app_processes(host.url)
        by_app: dict[str, list[int]] = {}
        for pid, name in live:
            by_app.setdefault(name, []).append(pid)
        for name, pids in by_app.items():
            if len(pids) > 1:
                problems.append(f"{name}: {len(pids)} live processes {pids}")
            known = contexts.get(name, {}).get("pid")
            if known not in pids or contexts[name]["status"] != "running":
                markers = [_environ(pid, "BOLT_SUPERVISOR_ID") for pid in pids]
                records = json.loads((data / "runtime.json").read_text()).get("supervisor", {})
                record = records.get(name)
                problems.append(
                    f"{name}: live process {pids} (markers {markers}) unknown to the host "
                    f"({contexts.get(name)}; recorded {record})"
                )
        echo = contexts.get("echo")
        if echo_pid is not None and (echo is None or echo["pid"] != echo_pid):
            problems.append(f"echo not adopted: was pid {echo_pid}, now {echo}")
        if last_ack is not None and last_ack == last_attempt:
            running = contexts.get("up2", {}).get("status") == "running"
            if last_ack[1] == "start" and not running:
                problems.append("up2: acknowledged start, but not running after boot")
            if last_ack[1] == "stop" and running:
                problems.append("up2: acknowledged stop, but running after boot")
    return problems, (echo or {}).get("pid")


def _check_dependencies(app: dict[str, Any]) -> list[str]:
    """The app's environment is its own and holds the dependency its version requires."""
    folder = Path(app["folder"])
    python = folder / ".venv" / "bin" / "python"
    if app.get("python") != str(python) or not python.exists():
        return [f"pydeps {app['version']}: environment missing (python {app.get('python')})"]
    installed = sorted(p.name for p in folder.glob(f".venv/lib/python*/site-packages/{DEPENDENCY}-*.dist-info"))
    if installed != [f"{DEPENDENCY}-{app['version']}.dist-info"]:
        return [f"pydeps {app['version']}: environment holds {installed}"]
    return []


def _orphan_tools(data: Path) -> list[str]:
    """Dependency tools of a killed host still running (their marker and working folder tell)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            if (proc.environ().get("BOLT_SUPERVISOR_ID") or "").startswith("tool-") and proc.cwd().startswith(
                str(data)
            ):
                found.append(f"orphan tool {proc.pid} {proc.cmdline()[:3]} in {proc.cwd()}")
    return found


def _environ(pid: int, key: str) -> str | None:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).environ().get(key)
    return None


def _login(url: str) -> str:
    answer = httpx.post(url + "/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["body"]["token"]


def _app_token(pid: int) -> str:
    return psutil.Process(pid).environ()["BOLT_APP_TOKEN"]


def test_kill_9_during_installs_db_writes_tasks_and_starts(world: dict[str, Any]) -> None:
    rng = random.Random(SEED)
    host: HostProcess = world["host"]
    repo: Path = world["repo"]
    data: Path = world["data"]
    registry: RegistryServer = world["registry"]
    acked = Acked()
    registry.publish_dir(BUNDLED_LOCAL_REPO / "ticker", version=_version(0))
    _publish_pydeps(registry, world["pydeps"], world["wheels"], _version(0))

    registry.publish_dir(world["mkt"], version=_version(0))  # one version: the market reads its catalog once
    host.start()
    token = _login(host.url)
    source = {"id": MARKET_SOURCE, "type": "remote", "base_url": registry.url}
    added = httpx.post(host.url + MARKET + "/settings/market-source", json=source,
                       auth=("admin", ADMIN_PASSWORD), timeout=30)
    assert added.status_code == 200, added.text
    with httpx.Client(base_url=host.url, headers={"X-Bolt-User-Token": token}, timeout=30) as client:
        for name in ("echo", "up1", "up2"):
            assert client.post("/api/apps/local", json={"path": name}).status_code == 201
        echo_pid = client.post("/api/apps/start", json={"name": "echo"}).json()["body"]["pid"]
        assert client.post("/api/apps/start", json={"name": "up1"}).status_code == 200
    app_token = _app_token(echo_pid)
    acked.installs["up1"] = (time.monotonic(), "1.0.0")
    started = time.monotonic()
    kills_in_flight = 0
    interrupted: set[int] = set()
    cut_in_dependencies: set[int] = set()  # tasks killed while uv was installing pydeps' dependency

    for round_number in range(1, ROUNDS + 1):
        version = _version(round_number)
        set_app_version(repo, "up1", version)
        registry.publish_dir(BUNDLED_LOCAL_REPO / "ticker", version=version)
        _publish_pydeps(registry, world["pydeps"], world["wheels"], version)
        stop = threading.Event()
        workers = [
            threading.Thread(target=_installer, args=(host.url, token, version, acked, stop)),
            threading.Thread(target=_db_writer, args=(host.url, app_token, round_number * 100_000, acked, stop)),
            threading.Thread(target=_tasker, args=(host.url, token, "ticker", acked, stop)),
            threading.Thread(target=_tasker, args=(host.url, token, "pydeps", acked, stop)),
            threading.Thread(target=_starter, args=(host.url, token, rng, acked, stop)),
            threading.Thread(target=_marketer, args=(host.url, _version(0), acked, stop)),
        ]
        for worker in workers:
            worker.start()
        try:
            _wait_for_kill_moment(round_number, rng, host.url, token, acked)
            host.kill9()
        finally:  # also when pytest-timeout interrupts the round: looping clients would keep the run from exiting
            stop.set()
        for worker in workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a client hung after the host was killed"
        kills_in_flight += 1

        host.start()
        problems, echo_now = _check_round(host, data, token, echo_pid, acked, app_token)
        assert not problems, f"round {round_number} (seed {SEED}):\n  " + "\n  ".join(problems) + (
            f"\n--- host log ---\n{host.log_tail()}"
        )
        assert echo_now == echo_pid
        newly = _tasks_failed_by_the_crash(host.url, token) - interrupted
        interrupted |= newly
        cut_in_dependencies |= _cut_during_dependency_install(host.url, token, newly)

    print(
        f"{kills_in_flight} kills in {time.monotonic() - started:.1f}s: {len(acked.documents)} documents, "
        f"{len(acked.tasks)} tasks, {len(acked.task_installs)} task installs acknowledged; "
        f"up1 at {acked.installs['up1'][1]}; {len(interrupted)} tasks cut off by a kill, failed at boot, "
        f"{len(cut_in_dependencies)} of them during pydeps' dependency step (uv); "
        f"{acked.market_acks} market operations acknowledged"
    )
    assert len(acked.documents) > 0 and len(acked.tasks) > 0
    assert interrupted, "no kill landed while a task ran: the boot's handling of cut-off tasks went untested"
    assert cut_in_dependencies, "no kill landed during a dependency install: that window went untested"
    assert any(name == "pydeps" for name, _ in acked.task_installs.values()), "pydeps never installed"
    assert acked.market_acks > 0, f"no market operation ever completed: {acked.market_refusal}"


def _wait_for_kill_moment(round_number: int, rng: random.Random, url: str, token: str, acked: Acked) -> None:
    """Every 4th round kills during a dependency step, every 10th right after a market operation
    completed (bounded: a moment that does not come in time is a random one); the rest at a
    random moment, mostly short (rounds stay cheap) and now and then long (no sleeping on a
    guess: the clock is polled)."""
    if round_number % 4 == 0:
        with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=5) as client:
            if _poll(lambda: _dependency_step_running(client), seconds=10):
                return
    if round_number % 10 == 5:
        done = acked.market_acks
        if _poll(lambda: acked.market_acks > done, seconds=10):
            return
    kill_at = time.monotonic() + (rng.uniform(0.02, 0.6) if rng.random() < 0.9 else rng.uniform(0.6, 2.0))
    _poll(lambda: time.monotonic() >= kill_at, seconds=5)


def _poll(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if condition():
                return True
        time.sleep(0.005)  # a poll interval, not a wait on a guess
    return False


def _dependency_step_running(client: httpx.Client) -> bool:
    for record in client.get("/api/tasks", params={"status": "running"}).json()["body"]:
        log = client.get(f"/api/tasks/{record['id']}/log").text
        if DEPENDENCY_STEP in log and "=== installed" not in log:
            return True
    return False


def _cut_during_dependency_install(url: str, token: str, task_ids: set[int]) -> set[int]:
    """Of the tasks a kill cut off, those whose log shows the dependency step begun, not ended."""
    cut = set()
    with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=30) as client:
        for task_id in task_ids:
            log = client.get(f"/api/tasks/{task_id}/log").text
            if DEPENDENCY_STEP in log and "=== installed" not in log:
                cut.add(task_id)
    return cut


def _tasks_failed_by_the_crash(url: str, token: str) -> set[int]:
    with httpx.Client(base_url=url, headers={"X-Bolt-User-Token": token}, timeout=30) as client:
        records = client.get("/api/tasks").json()["body"]
    return {r["id"] for r in records if r["status"] == "failed" and CRASH_REASON in (r.get("error") or "")}
