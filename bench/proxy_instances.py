"""The /x/ proxy with 1, 2 and 4 instances of one tiny app, against the app's own port; and the
worst request latency during a rolling restart against a plain one (issue 21).

    python bench/proxy_instances.py                   # 8 s per phase, 16 concurrent clients
    python bench/proxy_instances.py --seconds 15 --clients 32 --json bench/results/proxy_instances.json

A real host (``python -m bolt_host serve`` on 127.0.0.1, fresh data dir) runs the ``rolling``
test app (Starlette on uvicorn: ``GET /version`` answers its version and pid).  One asyncio
client with keep-alive connections sends ``GET /version`` from ``--clients`` loops for
``--seconds``: first to instance 0's port directly (the baseline), then through
``/x/tiny/version`` (user token, as the dashboard sends it) with 1, 2 and 4 instances.  Then,
with one instance and ``--restart-clients`` loops, the steady latency, and the latency and
failures from the moment a rolling restart, then a plain one, is asked until it answered.
Every process started is ended by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import app_processes, free_port, percentile  # a sibling script

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "fixtures" / "apps" / "rolling"
PASSWORD = "bench-admin-password"


class Run:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0

    def figures(self, seconds: float) -> dict[str, Any]:
        values = self.latencies
        return {
            "requests": len(values),
            "per_second": round(len(values) / seconds, 1),
            "p50_ms": round(percentile(values, 0.50) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2) if values else None,
            "failed": self.failures,
        }


async def drive(client: httpx.AsyncClient, path: str, clients: int, stop: asyncio.Event) -> Run:
    run = Run()

    async def loop() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            try:
                answer = await client.get(path)
                if answer.status_code != 200:
                    run.failures += 1
                    continue
            except httpx.HTTPError:
                run.failures += 1
                continue
            run.latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return run


async def for_seconds(client: httpx.AsyncClient, path: str, clients: int, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    task = asyncio.create_task(drive(client, path, clients, stop))
    await asyncio.sleep(seconds)  # the measuring window (a benchmark, not a test)
    stop.set()
    return (await task).figures(seconds)


async def during(client: httpx.AsyncClient, admin: httpx.AsyncClient, clients: int, mode: str) -> dict[str, Any]:
    """Latencies from the moment the restart is asked until it answered."""
    stop = asyncio.Event()
    task = asyncio.create_task(drive(client, "/x/tiny/version", clients, stop))
    await asyncio.sleep(0.5)  # the loops are going before the restart is asked
    began = time.monotonic()
    answer = await admin.post("/api/apps/restart", json={"name": "tiny", "mode": mode})
    answer.raise_for_status()
    took = time.monotonic() - began
    stop.set()
    figures = (await task).figures(took + 0.5)
    figures["restart_s"] = round(took, 2)
    return figures


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    login = httpx.post(url + "/api/users/login", json={"name": "admin", "password": PASSWORD}, timeout=30)
    token = login.json()["body"]["token"]
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    results: dict[str, Any] = {"throughput": {}, "restarts": {}}
    async with (
        httpx.AsyncClient(base_url=url, auth=("admin", PASSWORD), timeout=120) as admin,
        httpx.AsyncClient(base_url=url, headers={"X-Bolt-User-Token": token}, limits=limits, timeout=60) as proxied,
    ):
        started = await admin.post("/api/apps/start", json={"name": "tiny"})
        if started.status_code != 200:
            raise SystemExit(f"the app did not start: {started.text}")
        context = started.json()["body"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{context['port']}", limits=limits) as direct:
            results["throughput"]["direct"] = await for_seconds(direct, "/version", args.clients, args.seconds)
        for count in (1, 2, 4):
            (await admin.put("/api/apps/tiny", json={"instances": count})).raise_for_status()
            figures = await for_seconds(proxied, "/x/tiny/version", args.clients, args.seconds)
            results["throughput"][f"proxy, {count} instance{'s' if count > 1 else ''}"] = figures
        (await admin.put("/api/apps/tiny", json={"instances": 1})).raise_for_status()
        results["restarts"]["steady"] = await for_seconds(
            proxied, "/x/tiny/version", args.restart_clients, args.seconds
        )
        results["restarts"]["rolling restart"] = await during(proxied, admin, args.restart_clients, "rolling")
        results["restarts"]["plain restart"] = await during(proxied, admin, args.restart_clients, "stop-start")
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{args.clients} clients, {args.seconds} s each")
    base = results["throughput"]["direct"]["per_second"]
    print("| target | req/s | ratio to direct | p50 ms | p99 ms | failed |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in results["throughput"].items():
        print(f"| {label} | {row['per_second']} | {row['per_second'] / base:.2f} | {row['p50_ms']} | "
              f"{row['p99_ms']} | {row['failed']} |")
    steady = results["restarts"]["steady"]["p99_ms"]
    print(f"\n{args.restart_clients} clients through /x/, one instance")
    print("| window | requests | p99 ms | p99 / steady p99 | max ms | failed | restart took s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, row in results["restarts"].items():
        print(f"| {label} | {row['requests']} | {row['p99_ms']} | {row['p99_ms'] / steady:.2f} | {row['max_ms']} | "
              f"{row['failed']} | {row.get('restart_s', '')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--restart-clients", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bolt-proxy-bench-"))
    work.chmod(0o711)  # apps run as their own uids (as root): they must pass through to their folders
    shutil.copytree(APP, work / "repo" / "tiny", ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((work / "repo" / "tiny" / "package.json").read_text())
    (work / "repo" / "tiny" / "package.json").write_text(json.dumps({**manifest, "name": "tiny"}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BOLT_ADMIN_PASSWORD": PASSWORD, "BOLT_DEVICE_MODE": "off", "BOLT_STOP_GRACE_SECONDS": "3"}
    log = (work / "host.log").open("wb")
    host = subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir", str(work / "data"),
         "--local-repo", str(work / "repo"), "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/-/health", timeout=2).status_code == 200:
                    break
            if host.poll() is not None or time.monotonic() > deadline:
                print((work / "host.log").read_text()[-2000:], file=sys.stderr)
                return 2
            time.sleep(0.05)  # polling the start-up (a benchmark, not a test)
        with httpx.Client(base_url=url, auth=("admin", PASSWORD), timeout=60) as admin:
            admin.post("/api/apps/local", json={"path": "tiny"}).raise_for_status()
        results = asyncio.run(measure(url, args))
        report(results, args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(timeout=30)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait(timeout=10)
        for pids in app_processes(url).values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
