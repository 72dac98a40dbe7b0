"""Supervision benchmark: bolt-host beside raw ``subprocess.Popen``, supervisord, circus and PM2.

For each N (default 50, 200 and 1000; ``--n`` picks) copies of ``bench/tinyapp.py`` it
measures, on each system in turn, in one run:

* start all -> every app answers ``GET /health`` (seconds);
* the stop call returns, and stop all -> every app process has ended (seconds);
* ``kill -9`` of one app -> a NEW process of it answers ``/health`` (ms; K apps,
  one at a time, median and p90);
* list/status latency: bolt-host ``GET /api/apps/@live``, supervisord
  ``getAllProcessInfo``, circus ``status``, PM2 ``pm2.list()``, raw its own dict
  (ms; sequential calls, median and p99);
* the supervisor's own RSS/USS/threads and idle CPU over a window with N apps
  running (psutil on the supervisor's pid only, not its children).

and prints one table per N with bolt-host's ratio to raw Popen and to the best peer of
the same run.  bolt-host runs with its four store plugins unless ``--plugins-off``.
Two more systems split bolt-host's gap to raw (``supbench_confined.py``): ``popen-confined``
(raw Popen through the exec chain the host builds for each app: as root its uid, cgroups and
rlimits) with the ratio *bolt/confined raw*, and ``bolt-host-unconfined``
(``BOLT_ISOLATION=off``) with the ratio *unconfined bolt/raw*.
Usage (from the repo root, venv active)::

    python bench/supervisor_bench.py --n 200
    python bench/supervisor_bench.py --n 50 --n 200 --n 1000 --systems popen,pm2,bolt-host

Everything binds 127.0.0.1 only; each phase has a deadline; every process the
benchmark starts is ended by pid (pidfd) in ``finally`` blocks, on errors and
on Ctrl-C / SIGTERM too.  supervisord and circus are installed with pip into
``bench/.venv-supervisord`` and ``bench/.venv-circus``, PM2 with npm into ``bench/.pm2``,
on first use (all gitignored).
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
from supbench_confined import BoltHostUnconfined, PopenConfined
from supbench_model import Figures, Options, System, write_local_repo
from supbench_peers import PM2, Circus, ensure_circus, ensure_pm2, peer_versions
from supbench_systems import BoltHost, PopenBaseline, Supervisord, ensure_supervisord, supervisord_version
from supbench_util import (
    Tracker,
    free_ports,
    sweep_run,
)

# Issue 20's targets (at N=200, the four store plugins on).
TARGET_N = 200
LABELS = ("Popen", "Popen confined", "supervisord", "circus", "PM2", "bolt-host", "bolt-host unconfined")
SYSTEM_KEYS = ("popen", "popen-confined", "supervisord", "circus", "pm2", "bolt-host", "bolt-host-unconfined")
BASELINES = ("Popen", "Popen confined", "bolt-host", "bolt-host unconfined")  # not peers
# Extra ratio columns, shown when both systems ran: (heading, ours, baseline).
SPLITS = (
    ("bolt/confined raw", "bolt-host", "Popen confined"),  # the host's cost beside the same isolation
    ("unconfined bolt/raw", "bolt-host unconfined", "Popen"),  # the host's cost with isolation off
)


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
            "popen-confined": lambda *a: PopenConfined(*a, ports=baseline_ports),
            "supervisord": lambda *a: Supervisord(*a, ports=baseline_ports),
            "circus": lambda *a: Circus(*a, ports=baseline_ports),
            "pm2": lambda *a: PM2(*a, ports=baseline_ports),
            "bolt-host": BoltHost,
            "bolt-host-unconfined": BoltHostUnconfined,
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
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs <= 0:
        return "-"
    return f"{ours / theirs:.2f}x"


# (title, figure, digits, issue 20's target for bolt-host at N=200)
ROWS: list[tuple[str, Callable[[Figures], float | None], int, str]] = [
    ("start all until every app answers (s)", lambda f: f.start_all_s, 2, "<= 1.05x raw"),
    ("stop call returns (s)", lambda f: f.stop_call_s, 3, "<= 1.2x raw"),
    ("stop all until every pid is gone (s)", lambda f: f.stop_all_s, 3, ""),
    ("supervisor RSS (MB)", lambda f: f.rss_mb, 1, "<= 35 MB"),
    ("supervisor USS (MB)", lambda f: f.uss_mb, 1, ""),
    ("idle CPU (% of one core)", lambda f: f.idle_cpu_pct, 3, "<= 0.1 %"),
    ("kill -9 until a new pid answers, median (ms)", lambda f: f.restart_median, 0, "<= PM2's"),
    ("kill -9 until a new pid answers, p90 (ms)", lambda f: f.restart_p90, 0, ""),
    ("list/status call, median (ms)", lambda f: f.status_median, 2, "<= 1 ms"),
    ("list/status call, p99 (ms)", lambda f: f.status_p99, 2, ""),
    ("supervisor CPU during start all (s)", lambda f: f.start_cpu_s, 2, ""),
]


def report(n: int, results: dict[str, Figures]) -> str:
    """One table: every system's figure, then bolt-host's ratio to raw Popen and to the best peer
    (and, where their systems ran, the :data:`SPLITS`)."""
    present = [label for label in LABELS if label in results]
    peers = [label for label in present if label not in BASELINES]
    splits = [split for split in SPLITS if split[1] in results and split[2] in results]
    bolt, raw = results.get("bolt-host"), results.get("Popen")
    lines = [
        f"#### N = {n}",
        "",
        "| figure | "
        + " | ".join(present)
        + " | bolt/raw | bolt/best peer | "
        + "".join(f"{heading} | " for heading, _, _ in splits)
        + "target (N=200) |",
        "|---|" + "---|" * (len(present) + 3 + len(splits)),
    ]
    for title, get, digits, target in ROWS:
        values = {label: get(results[label]) for label in present}
        ours = values.get("bolt-host")
        measured = [(values[p], p) for p in peers if values[p] is not None]
        best_value, best_label = min(measured) if measured else (None, "")
        vs_best = _ratio(ours, best_value) + (f" ({best_label})" if best_label and ours is not None else "")
        cells = " | ".join(_fmt(values[label], digits) for label in present)
        split_cells = "".join(f"{_ratio(values[a], values[b])} | " for _, a, b in splits)
        lines.append(f"| {title} | {cells} | {_ratio(ours, values.get('Popen'))} | {vs_best} | {split_cells}{target} |")
    lines.append("")
    if raw is not None and raw.status_median is not None:
        lines.append("- raw's list is its own dict of Popen objects (name, pid, poll()): the floor of a listing.")
    if bolt is not None and "error" not in bolt.notes and bolt.rss_mb is not None and n >= TARGET_N:
        lines.append(f"- bolt-host RSS at N={n}: {bolt.rss_mb:.1f} MB (target <= 35 MB at N={TARGET_N}).")
    for fig in results.values():
        lines.append(f"- {fig.system}: " + ", ".join(f"{k}={v}" for k, v in fig.notes.items()))
    return "\n".join(lines) + "\n"


def header(opts: Options, ns: list[int], systems: list[str]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Supervision benchmark, {now}; {os.cpu_count()} CPUs, load average {load} at start, "
        f"{len(psutil.pids())} processes; Python {sys.version.split()[0]}; supervisor {supervisord_version()}; "
        f"{', '.join(f'{k} {v}' for k, v in peer_versions().items())}\n"
        f"N={ns}; systems={systems}; bolt-host start/stop: "
        f"{'one call naming all apps' if opts.bulk else f'one call per app, {opts.concurrency} in flight'}; "
        f"kills={opts.kills}; status calls={opts.status_calls}; idle window={opts.idle_seconds:g} s "
        f"after {opts.settle_seconds:g} s settle; supervisord startsecs={opts.startsecs}; "
        f"bolt-host plugins={'on' if opts.with_plugins else 'off'}, "
        f"ready timeout={opts.ready_timeout or 30:g} s\n"
    )


# main -----------------------------------------------------------------------------
def ephemeral_ports() -> tuple[int, int] | None:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return None
    return int(low), int(high)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="number of apps (repeatable; default 50, 200 and 1000)")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEM_KEYS),
        help="comma-separated subset of " + ",".join(SYSTEM_KEYS),
    )
    parser.add_argument(
        "--per-app-calls",
        action="store_true",
        help="bolt-host: one start/stop request per app (--concurrency in flight) instead of one naming all",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="with --per-app-calls: requests in flight")
    parser.add_argument("--kills", type=int, default=20, help="apps killed with SIGKILL, one at a time")
    parser.add_argument("--status-calls", type=int, default=200, help="sequential @live / getAllProcessInfo calls")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (host idle round: 30 s)")
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
    parser.add_argument(
        "--plugins-off", action="store_true", help="bolt-host without its store plugins (default: all four loaded)"
    )
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
        with_plugins=not args.plugins_off,
        startsecs=args.startsecs,
        ready_timeout=args.ready_timeout,
        py_spy=args.py_spy,
        bulk=not args.per_app_calls,
    )
    ephemeral = ephemeral_ports()
    if ephemeral and args.port_base + 3999 >= ephemeral[0] and args.port_base <= ephemeral[1]:
        # an outgoing connection may take such a port between the check and an app's bind
        raise SystemExit(f"--port-base {args.port_base}: its ports overlap the ephemeral range {ephemeral}")
    ns = args.n or [50, 200, 1000]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEM_KEYS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    if "supervisord" in systems:
        ensure_supervisord()
    if "circus" in systems:
        ensure_circus()
    if "pm2" in systems:
        ensure_pm2()
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
