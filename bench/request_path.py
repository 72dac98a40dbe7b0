"""The fixed per-request path, two (or more) source trees interleaved under the same load.

Starts one ``python -m bolt_host serve`` per source tree (``--tree LABEL=PATH``; the trees'
own ``bolt_host`` and plugins, this venv's packages), as ``supervisor_bench.py`` does: fresh
data dir, the four store plugins unless ``--plugins-off``, N copies of ``bench/tinyapp.py``
installed and started with one call.  Then, in rounds that alternate which tree goes first:

* ``--calls`` sequential kept-alive ``GET /api/apps/@live`` (full) and
  ``?fields=name,status,pid`` (light): wall median per call, and the host's CPU per call
  (the scheduler's nanoseconds of every host thread, ``/proc/<pid>/task/*/schedstat``);
* with ``--start-rounds``: stop all, start all with one call naming every app (bulk), stop
  all, start them with one call per app (``--concurrency`` in flight): wall time until the
  calls answered (each answers once its app is ready) and the host's CPU, per-app / bulk.

    python bench/request_path.py --tree main=/tmp/main --tree branch=. --n 200 --rounds 5

Everything binds 127.0.0.1; every host is ended by its pid (SIGTERM: it stops its apps).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from supbench_model import app_names, write_local_repo  # noqa: E402
from supbench_util import free_port, login_when_up, thread_cpu_ns  # noqa: E402

LIGHT = "/api/apps/@live?fields=name,status,pid"
FULL = "/api/apps/@live"


def host_cpu_ns(pid: int) -> int:
    return sum((thread_cpu_ns(pid) or {}).values())


@dataclass
class Tree:
    label: str
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    wall_ms: dict[str, list[float]] = field(default_factory=dict)  # per figure: each round's median
    cpu_us: dict[str, list[float]] = field(default_factory=dict)  # per figure: each round's CPU per call

    def add(self, figure: str, wall: float, cpu: float) -> None:
        self.wall_ms.setdefault(figure, []).append(wall)
        self.cpu_us.setdefault(figure, []).append(cpu)


async def launch(tree: Tree, work: Path, repo: Path, opts: argparse.Namespace, port_base: int) -> None:
    password = secrets.token_urlsafe(16)
    tree.port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}
    env.update(
        {
            "PYTHONPATH": f"{tree.root}:{tree.root / 'plugins'}",
            "BOLT_ADMIN_PASSWORD": password,
            "BOLT_PORT_RANGE": f"{port_base}-{port_base + max(opts.n * 2, 100)}",
            "BOLT_LOG_LEVEL": "warning",
        }
    )
    if opts.plugins_off:
        env["BOLT_PLUGINS"] = ""
    data = work / f"{tree.label}-data"
    command = [sys.executable, "-m", "bolt_host", "serve", "--port", str(tree.port), "--host", "127.0.0.1"]
    command += ["--data-dir", str(data), "--local-repo", str(repo)]
    log = (work / f"{tree.label}.log").open("wb")
    tree.proc = subprocess.Popen(
        command, cwd=tree.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tree.port}", timeout=600, trust_env=False) as client:
        tree.token = await login_when_up(client, tree.proc, password, str(work / f"{tree.label}.log"))
        client.headers["x-bolt-user-token"] = tree.token
        semaphore = asyncio.Semaphore(8)

        async def install(name: str) -> None:
            async with semaphore:
                (await client.post("/api/apps/local", json={"path": name})).raise_for_status()

        await asyncio.gather(*(install(name) for name in app_names(opts.n)))
        answer = await client.post("/api/apps/start", json={"names": app_names(opts.n)})
        answer.raise_for_status()
        if answer.json()["body"]["failed"]:
            raise RuntimeError(f"{tree.label}: apps failed to start")


def listing_round(tree: Tree, path: str, calls: int) -> tuple[float, float, int]:
    """``calls`` kept-alive GETs: (median ms, host CPU us per call, body bytes)."""
    assert tree.proc is not None
    conn = http.client.HTTPConnection("127.0.0.1", tree.port, timeout=30)
    headers = {"x-bolt-user-token": tree.token}
    timings = []
    size = 0
    try:
        for _ in range(20):  # the connection and the kept listing warm
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
        cpu = host_cpu_ns(tree.proc.pid)
        for _ in range(calls):
            began = time.perf_counter()
            conn.request("GET", path, headers=headers)
            reply = conn.getresponse()
            body = reply.read()
            timings.append((time.perf_counter() - began) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"{tree.label} {path}: HTTP {reply.status} {body[:200]!r}")
            size = len(body)
        cpu_per_call = (host_cpu_ns(tree.proc.pid) - cpu) / calls / 1000
    finally:
        conn.close()
    return statistics.median(timings), cpu_per_call, size


async def start_round(tree: Tree, opts: argparse.Namespace) -> None:
    """Bulk start, then per-app start calls, each from all stopped: wall and host CPU of each."""
    assert tree.proc is not None
    names = app_names(opts.n)
    limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{tree.port}", timeout=600, trust_env=False, limits=limits,
        headers={"x-bolt-user-token": tree.token},
    ) as client:

        async def call(body: dict[str, object]) -> None:
            reply = await client.post("/api/apps/start", json=body)
            reply.raise_for_status()

        semaphore = asyncio.Semaphore(opts.concurrency)

        async def one(name: str) -> None:
            async with semaphore:
                await call({"name": name})

        for figure in ("bulk start", "per-app start"):
            (await client.post("/api/apps/stop", json={"names": names})).raise_for_status()
            cpu, began = host_cpu_ns(tree.proc.pid), time.monotonic()
            if figure == "bulk start":
                await call({"names": names})
            else:
                await asyncio.gather(*(one(name) for name in names))
            tree.add(figure, (time.monotonic() - began) * 1000, (host_cpu_ns(tree.proc.pid) - cpu) / 1000)


def end(tree: Tree) -> None:
    if tree.proc is None or tree.proc.poll() is not None:
        return
    tree.proc.send_signal(signal.SIGTERM)
    try:
        tree.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        tree.proc.kill()
        tree.proc.wait(timeout=10)


def report(trees: list[Tree], opts: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f"\nN={opts.n}, {opts.rounds} rounds of {opts.calls} calls, load average {load[0]:.1f} {load[1]:.1f}")
    figures = list(trees[0].wall_ms)
    print("| figure | " + " | ".join(f"{t.label} wall (median of rounds) | {t.label} host CPU" for t in trees) + " |")
    print("|---" * (1 + 2 * len(trees)) + "|")
    for figure in figures:
        unit = ("ms", "us/call") if "start" not in figure else ("ms", "ms")
        cells = []
        for tree in trees:
            wall = statistics.median(tree.wall_ms[figure])
            cpu = statistics.median(tree.cpu_us[figure]) / (1000 if "start" in figure else 1)
            cells.append(f"{wall:.3f} {unit[0]} ({min(tree.wall_ms[figure]):.3f}-{max(tree.wall_ms[figure]):.3f})")
            cells.append(f"{cpu:.0f} {unit[1]}")
        print(f"| {figure} | " + " | ".join(cells) + " |")
    if "bulk start" in figures:
        for tree in trees:
            ratios = [p / b for p, b in zip(tree.wall_ms["per-app start"], tree.wall_ms["bulk start"], strict=True)]
            cpu = [p / b for p, b in zip(tree.cpu_us["per-app start"], tree.cpu_us["bulk start"], strict=True)]
            print(
                f"{tree.label}: per-app / bulk wall {statistics.median(ratios):.2f}x "
                f"({', '.join(f'{r:.2f}' for r in ratios)}), host CPU {statistics.median(cpu):.2f}x"
            )


async def run(trees: list[Tree], work: Path, opts: argparse.Namespace) -> None:
    repo = write_local_repo(work, opts.n, "request-path")
    for index, tree in enumerate(trees):
        await launch(tree, work, repo, opts, opts.port_base + index * max(opts.n * 2, 100) + 10)
    for round_no in range(opts.rounds):
        order = trees if round_no % 2 == 0 else list(reversed(trees))
        for figure, path in (("full @live", FULL), ("light ?fields=", LIGHT)):
            for tree in order:
                wall, cpu, size = listing_round(tree, path, opts.calls)
                tree.add(figure, wall, cpu)
                print(f"  round {round_no} {tree.label} {figure}: {wall:.3f} ms, {cpu:.0f} us CPU, {size} B")
    for round_no in range(opts.start_rounds):
        for tree in trees if round_no % 2 == 0 else list(reversed(trees)):
            await start_round(tree, opts)
            print(
                f"  start round {round_no} {tree.label}: bulk {tree.wall_ms['bulk start'][-1]:.0f} ms, "
                f"per-app {tree.wall_ms['per-app start'][-1]:.0f} ms",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH", help="a source tree")
    parser.add_argument("--n", type=int, default=200, help="apps installed and started on each host")
    parser.add_argument("--rounds", type=int, default=5, help="listing rounds (each tree, alternating order)")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls per listing round")
    parser.add_argument("--start-rounds", type=int, default=0, help="bulk vs per-app start rounds")
    parser.add_argument("--concurrency", type=int, default=32, help="per-app start calls in flight")
    parser.add_argument("--plugins-off", action="store_true", help="the core host only")
    parser.add_argument("--port-base", type=int, default=15000, help="app ports from here")
    opts = parser.parse_args()
    trees = []
    for spec in opts.tree:
        label, _, path = spec.partition("=")
        trees.append(Tree(label, Path(path).resolve()))
    work = Path(tempfile.mkdtemp(prefix="bolt-request-path-"))
    os.chmod(work, 0o711)  # as root the host runs each app as its own uid: they must reach their code
    try:
        asyncio.run(run(trees, work, opts))
    finally:
        for tree in trees:
            end(tree)
    report(trees, opts)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
