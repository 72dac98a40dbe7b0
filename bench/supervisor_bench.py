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
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_model import Figures, Options, System, write_local_repo
from supbench_systems import BoltHost, PopenBaseline, Supervisord, ensure_supervisord, supervisord_version
from supbench_util import (
    Tracker,
    free_ports,
    sweep_run,
)

# Issue 4's targets.
TARGET_START_RATIO = 1.1  # start all, bolt-host / Popen
TARGET_RESTART_MS = 100.0  # kill -9 -> new process answers, median
TARGET_LIVE_MS = 5.0  # @live median at N=200
TARGET_IDLE_CPU = 0.5  # % of one core at N=200
TARGET_RSS_MB = 60.0  # host RSS at N=200
TARGET_N = 200

# one N ---------------------------------------------------------------------------
async def bench_n(n: int, systems: list[str], opts: Options, keep: bool) -> dict[str, Figures]:
    run_id = f"{os.getpid()}-{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"bolt-supbench-{n}-"))
    os.chmod(workdir, 0o711)  # as root the host runs each app as its own uid: they pass through to their code
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
        row("supervisor CPU during start all (s)", lambda f: f.start_cpu_s, 2, "", ""),
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
        f"N={ns}; systems={systems}; bolt-host start/stop: "
        f"{'one call naming all apps' if opts.bulk else f'one call per app, {opts.concurrency} in flight'}; "
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
    parser.add_argument(
        "--per-app-calls",
        action="store_true",
        help="bolt-host: one start/stop request per app (--concurrency in flight) instead of one naming all",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="with --per-app-calls: requests in flight")
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
        bulk=not args.per_app_calls,
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
