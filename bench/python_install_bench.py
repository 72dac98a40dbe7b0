"""A Python app with three requirements: bolt-host's dependency step vs ``uv`` alone.

Each round, in one process and interleaved so machine load hits both alike (who goes first
alternates between rounds):

- **uv alone, cold**: ``uv venv`` + ``uv pip install -r requirements.txt`` into an empty
  folder with an empty cache (the floor: what an admin doing it by hand would wait).
- **bolt-host, cold**: the install's dependency step (``DependencySteps.prepare``: venv and
  ``uv pip install`` in the staged folder) on a staged copy of the app, empty cache.
- **uv alone, warm** / **bolt-host, warm**: the same again with the cache the cold run filled
  (a reinstall or an upgrade with the same requirements; for bolt-host with the cold run's
  app record as the installed version, so its venv is reused when nothing changed).

Both use the same uv, the same index configuration (the machine's pip.conf translated) and
the same interpreter.  Prints the medians and the ratios; ``--json`` writes them too::

    python bench/python_install_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from install_report import report  # noqa: E402

from bolt_host.services.dependencies import DependencySteps  # noqa: E402
from bolt_host.services.python_env import find_uv, uv_run_environment  # noqa: E402

REQUIREMENTS = "flask\nrequests\npyyaml\n"


def make_app(folder: Path) -> dict:
    folder.mkdir(parents=True)
    manifest = {"name": "bench-app", "version": "1.0.0", "bolt": {"main": "app.py"}}
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    (folder / "app.py").write_text("import flask, requests, yaml\n")
    return manifest


def uv_alone(folder: Path, cache: Path) -> float:
    folder.mkdir(parents=True)
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    env = uv_run_environment(cache)
    uv = str(find_uv())
    venv = folder / ".venv"
    started = time.perf_counter()
    for argv in (
        [uv, "venv", "--no-project", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "-r", "requirements.txt"],
    ):
        subprocess.run(argv, cwd=folder, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def through_bolt_host(folder: Path, cache: Path, installed: dict) -> float:
    """The dependency step into ``folder``; ``installed`` holds the record of the previous run's
    install (empty at first) and is replaced by this one's."""
    manifest = make_app(folder)
    steps = DependencySteps(cache)
    started = time.perf_counter()
    prepare = steps.prepare(folder, manifest, registry=None, run_scripts=False, previous=installed or None)
    prepared = asyncio.run(prepare)
    took = time.perf_counter() - started
    installed.clear()
    installed.update({"folder": str(folder), "version": "1.0.0", **prepared.fields(folder, folder)})
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"uv_cold": [], "bolt_cold": [], "uv_warm": [], "bolt_warm": []}
    with tempfile.TemporaryDirectory(prefix="pybench-") as scratch:
        base = Path(scratch)
        for round_number in range(args.rounds):
            run = base / str(round_number)
            installed: dict = {}
            pair = [
                ("uv", functools.partial(uv_alone, cache=run / "uv-cache")),
                ("bolt", functools.partial(through_bolt_host, cache=run / "bolt-cache", installed=installed)),
            ]
            if round_number % 2:
                pair.reverse()  # whoever goes first may warm the network path for the other
            for phase in ("cold", "warm"):
                for name, install in pair:
                    figures[f"{name}_{phase}"].append(install(run / f"{name}-{phase}"))
            shutil.rmtree(run)
    report(f"requirements: {REQUIREMENTS.split()}, {args.rounds} rounds", figures, "uv", args.json)

if __name__ == "__main__":
    main()
