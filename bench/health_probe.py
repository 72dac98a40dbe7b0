"""What one health probe of an instance costs the host (issue 21), against one plain HTTP request
from a client library to the same app: CPU of the host's process per probe, in microseconds.

    python bench/health_probe.py                  # 500 of each
    python bench/health_probe.py --count 2000 --json bench/results/health_probe.json

The ``rolling`` test app (Starlette on uvicorn, ``GET /version``) runs as its own process on a
free loopback port, so its CPU is not counted; this process measures its own CPU time
(``time.process_time``) over ``--count`` sequential calls of each: the baseline (an
``httpx.AsyncClient`` GET on a fresh connection each time, as a proxy or a monitor would
make), the probe with a ``health`` path (a bare HTTP/1.0 GET over a plain socket) and the
probe without one (a connect).  The app's process is ended by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import free_port  # a sibling script  # noqa: E402

from bolt_host.services.health_probe import DEFAULT_INTERVAL, PROBE_TIMEOUT  # noqa: E402
from bolt_host.services.readiness import answers, wait_until_ready  # noqa: E402

APP = ROOT / "tests" / "fixtures" / "apps" / "rolling" / "server.py"


async def cpu_per_call(call: Any, count: int) -> float:
    """Microseconds of this process's CPU per ``await call()``."""
    began = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - began) / count * 1e6


async def measure(port: int, count: int) -> dict[str, float]:
    limits = httpx.Limits(max_keepalive_connections=0)  # a fresh connection each, as a probe makes
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def baseline() -> None:
            (await client.get("/version")).raise_for_status()

        async def health() -> None:
            assert await answers(port, "/version", PROBE_TIMEOUT)

        async def connect() -> None:
            assert await answers(port, None, PROBE_TIMEOUT)

        await cpu_per_call(baseline, 20)  # warm up imports and the app
        return {
            "httpx GET (baseline)": await cpu_per_call(baseline, count),
            "probe: health path": await cpu_per_call(health, count),
            "probe: connect": await cpu_per_call(connect, count),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    port = free_port()
    app = subprocess.Popen([sys.executable, str(APP)], env={**os.environ, "PORT": str(port)})
    try:
        async def run() -> dict[str, float]:
            exited = asyncio.get_running_loop().create_future()  # the app is watched by pid below
            await wait_until_ready(exited=exited, port=port, health="/version", timeout=60)
            return await measure(port, args.count)

        results = asyncio.run(run())
    finally:
        app.terminate()
        app.wait(timeout=30)
    base = results["httpx GET (baseline)"]
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.count} calls each")
    print("| call | host CPU per call, µs | ratio to baseline |")
    print("|---|---:|---:|")
    for label, micros in results.items():
        print(f"| {label} | {micros:.0f} | {micros / base:.2f} |")
    health = results["probe: health path"]
    print(f"\nAn app with 4 instances, probed every {DEFAULT_INTERVAL:g} s: "
          f"{health * 4 / DEFAULT_INTERVAL / 1e4:.4f} % of one core")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"count": args.count, "cpu_us": results}, indent=2))


if __name__ == "__main__":
    main()
