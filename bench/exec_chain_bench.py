"""CPU a spawn costs in the child before the app's first instruction: the exec helper against the chain.

As root, bolt-host confines each app in ``uid`` mode either through the static exec helper
(``bolt_host/launchers/bolt-exec``: one exec) or, as its fallback, through ``sh`` -> [``prlimit``]
-> ``setpriv`` (up to three).  This spawns one app's argv, built by the host's own
:class:`~bolt_host.services.sandbox.Isolation` (its uid, its cgroups, the host's default limits),
``--spawns`` times each way, interleaved with raw spawns of the bare command, and sums each
child's CPU (user + system, from ``os.wait4``'s rusage).  The command is ``/bin/true`` by default,
so what is left above the raw line is the confinement's own cost.  Also ``--no-cgroups``: the
rlimits then cover processes and memory (``prlimit`` in the chain).

Usage (as root, from the repo root)::

    .venv/bin/python bench/exec_chain_bench.py --spawns 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bolt_host.config import settings_from_env
from bolt_host.services import cgroups
from bolt_host.services.sandbox import UID, Isolation
from bolt_host.statefile import StateFile


def isolation(data_dir: Path, setting: str, no_cgroups: bool) -> Isolation:
    settings = settings_from_env()
    made = Isolation(
        data_dir=data_dir,
        state=StateFile(data_dir / "runtime.json"),
        uid_range=settings.app_uid_range,
        default_limits=settings.default_limits,
        exec_helper_setting=setting,
        support=cgroups.NO_CGROUPS if no_cgroups else None,
    )
    made.secure_data_dir()
    return made


async def confined_argvs(isolations: list[Isolation], app: dict[str, Any], command: str) -> list[list[str]]:
    """The argv each of ``isolations`` spawns ``app`` with (its uid assigned on an event loop, as a host does)."""
    argvs = []
    for confining in isolations:
        confining.assign(app)
        argvs.append(confining.confine(app, [command]).argv)
        await confining.state.commit()
    return argvs


def spawn_cpu(argv: list[str]) -> tuple[float, float]:
    """(child CPU seconds, wall seconds) of one spawn of ``argv`` until it is reaped."""
    began = time.perf_counter()
    child = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             env={"PATH": os.defpath})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv[0]} exited with {child.returncode}")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--command", default="/bin/true", help="the app's argv (one word)")
    parser.add_argument("--no-cgroups", action="store_true", help="rlimits only (processes, memory as rlimits)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the exec chain of uid mode needs it")
    with tempfile.TemporaryDirectory(prefix="exec-bench-") as temp:
        os.chmod(temp, 0o755)
        app = {"name": "bench", "folder": temp, "command": {"from": "bolt.start", "argv": [args.command]},
               "limits": {"memory": 512 * 1024 * 1024}}
        kept = [isolation(Path(temp) / f"data-{label}", setting, args.no_cgroups)
                for label, setting in (("chain", "off"), ("helper", "auto"))]
        if kept[0].mode != UID:
            raise SystemExit(f"not uid mode here ({kept[0].mode})")
        if kept[1].exec_helper is None:
            raise SystemExit("the exec helper is not built or not trusted (./scripts/setup)")
        chain, helper = asyncio.run(confined_argvs(kept, app, args.command))
        ways = {"chain": chain, "helper": helper, "raw": [args.command]}
        cpu: dict[str, list[float]] = {label: [] for label in ways}
        wall: dict[str, list[float]] = {label: [] for label in ways}
        for _ in range(args.spawns):
            for label, argv in ways.items():  # interleaved: the machine's load hits each way alike
                used, took = spawn_cpu(argv)
                cpu[label].append(used)
                wall[label].append(took)
        for confining in kept:
            confining.remove_empty_groups()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load {load}, {args.spawns} spawns each, "
          f"{'no cgroups' if args.no_cgroups else 'cgroups'}, command {args.command}")
    for label, argv in ways.items():
        programs = [Path(part).name for part in argv if part.startswith("/") and "cgroup" not in part]
        print(f"  {label:7} {' -> '.join(programs)}")
    print(f"  {'way':7} {'CPU/spawn ms':>13} {'above raw':>10} {'wall median ms':>15}")
    raw = statistics.fmean(cpu["raw"]) * 1e3
    for label in ways:
        mean = statistics.fmean(cpu[label]) * 1e3
        print(f"  {label:7} {mean:13.2f} {mean - raw:10.2f} {statistics.median(wall[label]) * 1e3:15.2f}")


if __name__ == "__main__":
    sys.exit(main())
