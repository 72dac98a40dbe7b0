"""``http-server`` installed through bolt-host vs ``npm install http-server`` alone.

Each round, in one process and interleaved so machine load hits both alike (who goes first
alternates between rounds):

- **npm alone, cold**: ``npm install http-server@VERSION`` into an empty folder with an
  empty npm cache (the floor: what an admin doing it by hand would wait).
- **bolt-host, cold**: ``POST /api/apps {"name": "http-server"}`` on a fresh host (fresh data
  dir, so npm's cache under it is empty): packument, tarball download and integrity check,
  safe extraction, ``npm install --omit=dev --ignore-scripts`` in staging, the swap.
- **npm alone, warm** / **bolt-host, warm**: the same again with the cache the cold run
  filled (for bolt-host: a reinstall, ``upgrade: true``, on the same host).

Both talk to the same registry (``--registry``, default the machine's ``npm config get
registry``) with the same npm.  Prints the medians and the ratios; ``--json`` writes them::

    python bench/install_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from bolt_host.testing import running_host  # noqa: E402

PACKAGE, VERSION = "http-server", "14.1.1"
NPM = shutil.which("npm") or "npm"


def npm_alone(folder: Path, cache: Path, registry: str) -> float:
    folder.mkdir(parents=True)
    argv = [NPM, "install", f"{PACKAGE}@{VERSION}", "--cache", str(cache), "--registry", registry,
            "--no-audit", "--no-fund", "--no-update-notifier"]
    started = time.perf_counter()
    subprocess.run(argv, cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


async def through_bolt_host(data_dir: Path, registry: str, upgrade: bool) -> float:
    async with running_host(data_dir, registry=registry) as bolt:
        started = time.perf_counter()
        answer = await bolt.admin.post("/api/apps", json={"name": PACKAGE, "version": VERSION, "upgrade": upgrade})
        took = time.perf_counter() - started
    if answer.status_code != 201:
        raise SystemExit(f"bolt-host install failed: {answer.text}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--registry", help="registry URL (default: npm config get registry)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    registry = args.registry or subprocess.run(
        [NPM, "config", "get", "registry"], capture_output=True, text=True, check=True
    ).stdout.strip()
    figures: dict[str, list[float]] = {"npm_cold": [], "bolt_cold": [], "npm_warm": [], "bolt_warm": []}
    with tempfile.TemporaryDirectory(prefix="npmbench-") as scratch:
        os.chmod(scratch, 0o711)  # a root host installs as each app's own uid, which must pass through
        for round_number in range(args.rounds):
            run = Path(scratch) / str(round_number)
            order = ["bolt", "npm"] if round_number % 2 else ["npm", "bolt"]
            for phase in ("cold", "warm"):
                for name in order:
                    if name == "npm":
                        took = npm_alone(run / f"npm-{phase}", run / "npm-cache", registry)
                    else:
                        took = asyncio.run(through_bolt_host(run / "bolt-data", registry, upgrade=phase == "warm"))
                    figures[f"{name}_{phase}"].append(took)
            shutil.rmtree(run)
    report(f"{PACKAGE}@{VERSION} from {registry}, {args.rounds} rounds", figures, "npm", args.json)

if __name__ == "__main__":
    main()
