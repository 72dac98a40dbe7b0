"""Load: many concurrent readers of /api/apps and /api/apps/@live, plus operators starting
and stopping apps, for a fixed time against a real host (``python -m bolt_host serve``).

    python bench/load.py                       # 20 s, 32 readers, 4 operators, 8 apps
    python bench/load.py --duration 60 --readers 64 --json bench/results/load.json

Prints throughput and p50/p99 latency per endpoint, the 5xx and transport-error counts,
and, at the end, whether any app has more than one live process (duplicates) or a live
process the host does not list.  Readers use a user token (as the dashboard and CLI do
after login); HTTP Basic would spend one scrypt run per request and measure that instead.
Every process started is ended by pid (the host, then any app process left).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "fixtures" / "apps" / "echo"
PASSWORD = "load-admin-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_repo(folder: Path, apps: int) -> list[str]:
    names = []
    for number in range(1, apps + 1):
        name = f"load-{number}"
        shutil.copytree(ECHO, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = json.loads((folder / name / "package.json").read_text())
        manifest["name"] = name
        (folder / name / "package.json").write_text(json.dumps(manifest))
        names.append(name)
    return names


def app_processes(host_url: str) -> dict[str, list[int]]:
    """Live processes started for the host at ``host_url``, by app name (zombies left out)."""
    found: dict[str, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
        except OSError:
            continue
        if env.get("BOLT_HOST_URL") == host_url and "BOLT_APP_NAME" in env:
            found[env["BOLT_APP_NAME"]].append(int(entry))
    return dict(found)


class Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, int] = defaultdict(int)

    def record(self, label: str, seconds: float, status: int | None) -> None:
        if status is None:
            self.errors[label] += 1
            return
        self.latencies[label].append(seconds)
        self.statuses[label][status] += 1

    def server_errors(self) -> int:
        return sum(n for codes in self.statuses.values() for code, n in codes.items() if code >= 500)


async def timed(stats: Stats, label: str, call: Any) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call
    except httpx.HTTPError:
        stats.record(label, 0.0, None)
        return None
    stats.record(label, time.perf_counter() - started, response.status_code)
    return response


async def reader(client: httpx.AsyncClient, stats: Stats, until: float) -> None:
    while time.monotonic() < until:
        await timed(stats, "GET /api/apps", client.get("/api/apps"))
        await timed(stats, "GET /api/apps/@live", client.get("/api/apps/@live"))


async def operator(client: httpx.AsyncClient, stats: Stats, apps: list[str], until: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        name = rng.choice(apps)
        op = rng.choice(["start", "stop"])
        response = await timed(stats, f"POST /api/apps/{op}", client.post(f"/api/apps/{op}", json={"name": name}))
        if response is not None and response.status_code >= 500:
            print(f"  {op} {name}: {response.status_code} {response.text[:200]}", file=sys.stderr)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace, url: str, apps: list[str]) -> tuple[Stats, float]:
    login = httpx.post(url + "/api/users/login", json={"name": "admin", "password": PASSWORD}, timeout=30)
    token = login.json()["body"]["token"]
    limits = httpx.Limits(max_connections=args.readers + args.operators + 4)
    timeout = httpx.Timeout(60.0)
    stats = Stats()
    async with httpx.AsyncClient(
        base_url=url, headers={"X-Bolt-User-Token": token}, limits=limits, timeout=timeout
    ) as client:
        for name in apps:  # half the apps start out running
            if apps.index(name) % 2 == 0:
                await client.post("/api/apps/start", json={"name": name})
        started = time.monotonic()
        until = started + args.duration
        per_operator = [apps[i :: args.operators] for i in range(args.operators)]
        await asyncio.gather(
            *(reader(client, stats, until) for _ in range(args.readers)),
            *(operator(client, stats, per_operator[i] or apps, until, args.seed + i) for i in range(args.operators)),
        )
        elapsed = time.monotonic() - started
    return stats, elapsed


def report(stats: Stats, elapsed: float, args: argparse.Namespace, duplicates: dict[str, list[int]],
           unknown: dict[str, list[int]]) -> dict[str, Any]:
    rows = []
    total = 0
    for label in sorted(stats.latencies):
        values = stats.latencies[label]
        total += len(values)
        codes = dict(sorted(stats.statuses[label].items()))
        rows.append({
            "endpoint": label,
            "requests": len(values),
            "per_second": round(len(values) / elapsed, 1),
            "p50_ms": round(percentile(values, 0.50) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1) if values else None,
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
            "statuses": codes,
            "transport_errors": stats.errors.get(label, 0),
        })
    print(f"\n{args.readers} readers + {args.operators} operators, {len(rows)} endpoints, {elapsed:.1f} s, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| endpoint | requests | req/s | p50 ms | p99 ms | max ms | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        statuses = ", ".join(f"{code}: {n}" for code, n in row["statuses"].items())
        print(f"| `{row['endpoint']}` | {row['requests']} | {row['per_second']} | {row['p50_ms']} | "
              f"{row['p99_ms']} | {row['max_ms']} | {statuses} |")
    summary = {
        "duration_s": round(elapsed, 1),
        "readers": args.readers,
        "operators": args.operators,
        "apps": args.apps,
        "throughput_per_s": round(total / elapsed, 1),
        "server_errors_5xx": stats.server_errors(),
        "transport_errors": sum(stats.errors.values()),
        "duplicate_processes": duplicates,
        "processes_unknown_to_host": unknown,
        "endpoints": rows,
    }
    print(f"| **all** | {total} | {summary['throughput_per_s']} | | | | 5xx: {summary['server_errors_5xx']}, "
          f"transport errors: {summary['transport_errors']} |")
    print(f"duplicate processes at the end: {duplicates or 'none'}; unknown to the host: {unknown or 'none'}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--operators", type=int, default=4)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bolt-load-"))
    (work / "repo").mkdir()
    apps = make_repo(work / "repo", args.apps)
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
            for name in apps:
                admin.post("/api/apps/local", json={"path": name}).raise_for_status()
        stats, elapsed = asyncio.run(run(args, url, apps))
        with httpx.Client(base_url=url, auth=("admin", PASSWORD), timeout=60) as admin:
            listed = {c["name"]: c["pid"] for c in admin.get("/api/apps/@live").json()["body"]}
        live = app_processes(url)
        duplicates = {name: pids for name, pids in live.items() if len(pids) > 1}
        unknown = {name: pids for name, pids in live.items() if listed.get(name) not in pids}
        summary = report(stats, elapsed, args, duplicates, unknown)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 1 if summary["server_errors_5xx"] or duplicates or unknown else 0
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
