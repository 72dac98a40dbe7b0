"""Where bolt-host's resident memory goes as apps are installed and started: RSS per stage.

Starts ``python -m bolt_host serve`` (as ``supervisor_bench.py`` does: fresh data dir, the
four store plugins unless ``--plugins-off``, N copies of ``bench/tinyapp.py`` in a local
repository), then: log in, install the N apps (8 calls in flight), start them with one call,
wait ``--settle`` seconds, read ``@live`` 200 times, stop them with one call. After each
stage the host's VmRSS and its number of loaded modules are read; with ``--trace FRAMES``
the host runs under tracemalloc and each stage also gives Python's live allocations, their
peak since the stage before (RSS follows the peaks: what a stage frees mostly stays in the
allocator's arenas) and the allocation sites that grew the most since the previous stage
(tracing slows the host several times and costs memory itself: take the RSS figures from a
run without it). Each stage also splits RSS into mapped files and anonymous memory, and the
anonymous part into what the two allocators hold: pymalloc's arenas (objects of up to 512 bytes:
blocks in use, and free blocks and empty pools kept for reuse) and glibc malloc's (larger blocks:
in use and free; not with ``--trace``), so a stage's growth reads as live data or as allocator slack.
``--mid-start SECONDS`` adds a stage that many seconds into the start call (its in-flight state).

    python bench/host_apps_memory.py --n 200
    python bench/host_apps_memory.py --n 200 --trace 1 --top 15

The host gets SIGUSR1 from this script to report a stage (a handler the wrapper below
installs; nothing in bolt_host is changed for it) and SIGTERM at the end, by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import linecache
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from supbench_model import app_names, write_local_repo  # noqa: E402
from supbench_util import free_port, login_when_up  # noqa: E402

REPO_ROOT = BENCH_DIR.parent
ARENA_MB = 1.0  # pymalloc's arena size on 64-bit Python 3.10+

# Runs in the host process: the stage handler, then bolt-host's own entry point.
WRAPPER = textwrap.dedent(
    """
    import gc, os, runpy, signal, sys, tracemalloc
    frames = int(os.environ["BOLT_MEMORY_TRACE"])
    if frames:
        tracemalloc.start(frames)
    stages = os.environ["BOLT_MEMORY_STAGES"]
    count = 0
    def report(signum, frame):
        global count
        gc.collect()
        path = f"{stages}/stage-{count}"
        count += 1
        live = peak = 0
        if tracemalloc.is_tracing():
            live, peak = tracemalloc.get_traced_memory()  # before the snapshot, which is traced too
            tracemalloc.take_snapshot().dump(path + ".snapshot")
            tracemalloc.reset_peak()  # the next stage's peak is its own
        allocators(path)
        with open(path + ".tmp", "w") as out:
            out.write(f"{len(sys.modules)} {live} {peak}")
        os.rename(path + ".tmp", path + ".done")
    def allocators(path):
        # pymalloc's statistics go to fd 2 only: point it at a file for the call
        fd = os.open(path + ".pymalloc", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        import ctypes
        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
        mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)  # glibc 2.33+
        with open(path + ".glibc", "w") as out:
            if mallinfo2 is not None:
                mallinfo2.restype = MallInfo2
                info = mallinfo2()
                out.write(f"{info.uordblks + info.hblkhd} {info.fordblks}")  # in use (heap + mmapped), free
    signal.signal(signal.SIGUSR1, report)
    sys.argv = ["bolt_host", *sys.argv[1:]]
    runpy.run_module("bolt_host", run_name="__main__", alter_sys=True)
    """
)


def _field_mb(path: str, name: str) -> float:
    """A ``Name:  N kB`` line of a /proc file, in MiB."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {name} in {path}")


def vm_rss_mb(pid: int) -> float:
    return _field_mb(f"/proc/{pid}/status", "VmRSS")


def anonymous_mb(pid: int) -> float:
    """The heap's share of RSS (the rest is mapped files: the interpreter, shared libraries)."""
    return _field_mb(f"/proc/{pid}/smaps_rollup", "Anonymous")


def pymalloc_mb(report: str) -> tuple[float, float, float]:
    """From ``sys._debugmallocstats`` output: pymalloc's arenas, the bytes in its blocks in use,
    and the bytes it keeps free (free blocks in used pools, empty pools), in MiB."""

    def value(line: str) -> int:
        return int(line.rpartition("=")[2].replace(",", ""))

    arenas = used = free = 0
    for line in report.splitlines():
        if line.startswith("# arenas allocated current"):
            arenas = value(line)
        elif line.startswith("# bytes in allocated blocks"):
            used = value(line)
        elif line.startswith("# bytes in available blocks") or " unused pools * " in line:
            free += value(line)
    return arenas * ARENA_MB, used / 2**20, free / 2**20


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts = opts
        self.work = work
        self.stages_dir = work / "stages"
        self.stages_dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.rows: list[tuple[str, float, int]] = []
        self.anonymous: list[float] = []
        # per stage: pymalloc's arenas, in use, free; glibc's in use, free (MiB)
        self.allocators: list[tuple[float, float, float, float, float]] = []
        self.start_cpu = self.start_wall = 0.0
        self.traced: list[tuple[float, float]] = []  # with --trace: Python's live and peak MB per stage

    async def stage(self, name: str) -> None:
        assert self.proc is not None
        index = len(self.rows)
        self.proc.send_signal(signal.SIGUSR1)
        done = self.stages_dir / f"stage-{index}.done"
        deadline = time.monotonic() + 600
        while not done.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the host did not report stage {name!r}")
            await asyncio.sleep(0.05)
        modules, live, peak = done.read_text().split()
        self.rows.append((name, vm_rss_mb(self.proc.pid), int(modules)))
        self.anonymous.append(anonymous_mb(self.proc.pid))
        glibc = (self.stages_dir / f"stage-{index}.glibc").read_text().split() or ["nan", "nan"]  # not glibc
        glibc_used, glibc_free = (float(part) / 2**20 for part in glibc)
        pymalloc = pymalloc_mb((self.stages_dir / f"stage-{index}.pymalloc").read_text())
        self.allocators.append((*pymalloc, glibc_used, glibc_free))
        self.traced.append((int(live) / 2**20, int(peak) / 2**20))
        print(f"  {name}: {self.rows[-1][1]:.1f} MB", flush=True)

    async def run(self) -> None:
        opts = self.opts
        names = app_names(opts.n)
        repo = write_local_repo(self.work, opts.n, "host-apps-memory")
        password = secrets.token_urlsafe(16)
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}
        env.update(
            {
                "BOLT_ADMIN_PASSWORD": password,
                "BOLT_PORT_RANGE": f"{opts.port_base}-{opts.port_base + max(opts.n * 2, 100)}",
                "BOLT_LOG_LEVEL": "warning",
                "BOLT_READY_TIMEOUT_SECONDS": str(opts.ready_timeout),
                "BOLT_MEMORY_TRACE": str(opts.trace),
                "BOLT_MEMORY_STAGES": str(self.stages_dir),
            }
        )
        if opts.plugins_off:
            env["BOLT_PLUGINS"] = ""
        if opts.start_concurrency:
            env["BOLT_START_CONCURRENCY"] = str(opts.start_concurrency)
        command = [sys.executable, "-c", WRAPPER, "serve", "--port", str(port), "--host", "127.0.0.1"]
        command += ["--data-dir", str(self.work / "data"), "--local-repo", str(repo)]
        log = (self.work / "host.log").open("wb")
        self.proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, trust_env=False) as client:
            token = await login_when_up(client, self.proc, password, str(self.work / "host.log"))
            client.headers["x-bolt-user-token"] = token
            await self.stage("booted, admin logged in")
            semaphore = asyncio.Semaphore(8)

            async def install(name: str) -> None:
                async with semaphore:
                    answer = await client.post("/api/apps/local", json={"path": name})
                    answer.raise_for_status()

            await asyncio.gather(*(install(name) for name in names))
            await self.stage(f"{opts.n} apps installed")
            cpu_before, began = cpu_seconds(self.proc.pid), time.monotonic()
            starting = asyncio.ensure_future(client.post("/api/apps/start", json={"names": names}))
            if opts.mid_start:
                await asyncio.sleep(opts.mid_start)
                await self.stage(f"{opts.mid_start:g} s into the start call")
            answer = await starting
            answer.raise_for_status()
            self.start_cpu, self.start_wall = cpu_seconds(self.proc.pid) - cpu_before, time.monotonic() - began
            if failed := answer.json()["body"]["failed"]:
                raise RuntimeError(f"{len(failed)} apps failed to start, e.g. {list(failed.items())[:3]}")
            await asyncio.sleep(opts.settle)
            await self.stage(f"{opts.n} apps running, {opts.settle:g} s later")
            for _ in range(200):
                (await client.get("/api/apps/@live")).raise_for_status()
            await self.stage("after 200 @live calls")
            (await client.post("/api/apps/stop", json={"names": names})).raise_for_status()
            await self.stage("all stopped")

    def end(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the host stops its apps
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def report(self) -> None:
        print(f"\nN={self.opts.n}, plugins {'off' if self.opts.plugins_off else 'on'}")
        print("| stage | RSS (MB) | added (MB) | of it anonymous (MB) | modules |\n|---|---|---|---|---|")
        previous = 0.0
        for (name, rss, modules), anonymous in zip(self.rows, self.anonymous, strict=True):
            print(f"| {name} | {rss:.1f} | {rss - previous:+.1f} | {anonymous:.1f} | {modules} |")
            previous = rss
        print(f"the start call: {self.start_wall:.2f} s, host CPU {self.start_cpu:.2f} s")
        if not self.opts.trace:  # tracemalloc's hooks hide pymalloc's statistics (and cost memory)
            self.report_allocators()
        if self.opts.trace:
            print("\nPython allocations (tracemalloc): live at each stage, the highest point since the one before")
            print("| stage | live (MB) | peak (MB) |\n|---|---|---|")
            for (name, _, _), (live, peak) in zip(self.rows, self.traced, strict=True):
                print(f"| {name} | {live:.2f} | {peak:.2f} |")
            self.report_growth()

    def report_allocators(self) -> None:
        print("\nThe anonymous part by allocator (MB): pymalloc (objects up to 512 bytes) in 1 MiB arenas,")
        print("glibc malloc (larger blocks, in the heap or mmapped); 'free' is what each keeps for reuse")
        print("| stage | pymalloc arenas | in use | free | glibc in use | free |\n|---|---|---|---|---|---|")
        for (name, _, _), (arenas, used, free, glibc_used, glibc_free) in zip(self.rows, self.allocators, strict=True):
            print(f"| {name} | {arenas:.0f} | {used:.1f} | {free:.1f} | {glibc_used:.1f} | {glibc_free:.1f} |")

    def report_growth(self) -> None:
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        snapshots = [
            tracemalloc.Snapshot.load(str(self.stages_dir / f"stage-{i}.snapshot")).filter_traces(ignore)
            for i in range(len(self.rows))
        ]
        for i in range(1, len(snapshots)):
            diff = snapshots[i].compare_to(snapshots[i - 1], "lineno")
            total = sum(stat.size_diff for stat in diff) / 2**20
            print(f"\n{self.rows[i][0]}: Python allocations {total:+.2f} MB; the sites that grew most:")
            for stat in diff[: self.opts.top]:
                frame = stat.traceback[0]
                where = frame.filename.split("site-packages/")[-1].replace(str(REPO_ROOT) + "/", "")
                code = linecache.getline(frame.filename, frame.lineno).strip()[:70]
                print(f"  {stat.size_diff / 1024:+8.0f} KB {stat.count_diff:+7d}  {where}:{frame.lineno}  {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="apps installed and started")
    parser.add_argument("--plugins-off", action="store_true", help="the core host only")
    parser.add_argument("--start-concurrency", type=int, default=0, help="BOLT_START_CONCURRENCY (0: all at once)")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES", help="tracemalloc frames (0: off)")
    parser.add_argument("--top", type=int, default=12, help="with --trace: sites listed per stage")
    parser.add_argument("--mid-start", type=float, default=0.0, help="a stage this far into the start call (s)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after start all")
    parser.add_argument("--port-base", type=int, default=14000, help="app ports from here")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="per start (tracing is slow)")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bolt-host-apps-memory-"))
    os.chmod(work, 0o711)  # as root the host runs each app as its own uid: they must reach their code
    probe = Probe(opts, work)
    try:
        asyncio.run(probe.run())
    finally:
        probe.end()
    probe.report()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
