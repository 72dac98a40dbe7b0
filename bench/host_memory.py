"""What each MB of bolt-host's resident memory is: layers imported one after the other.

Each variant runs in a fresh interpreter (``python -c``) that imports, in order, the
interpreter's own start, asyncio (which loads ssl and OpenSSL), uvicorn (with click,
logging.config, multiprocessing), Starlette (with python-multipart), the other core
dependencies, then builds the app exactly as ``bolt-host serve`` does and starts the
host, and prints the RSS after each layer; the last layer also lists the heaviest
allocation sites (tracemalloc, by file) and how many modules are loaded.
Usage (from the repo root, venv active)::

    python bench/host_memory.py            # plugins on and off
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import json, sys
    def rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    layers = [("python interpreter", rss())]
    import tracemalloc
    if sys.argv[2] == "trace":  # tracing costs memory itself: the layers come from an untraced run
        tracemalloc.start()
    import asyncio
    layers.append(("asyncio (ssl, OpenSSL)", rss()))
    import uvicorn
    layers.append(("uvicorn (click, logging.config, multiprocessing)", rss()))
    import starlette.applications, starlette.routing
    layers.append(("starlette (python-multipart, http.client)", rss()))
    import pluggy, tinydb, importlib.metadata, nodesemver
    layers.append(("pluggy, tinydb, entry points, semver", rss()))
    from pathlib import Path
    import bolt_host.cli
    from bolt_host.app import create_app
    from bolt_host.config import settings_from_env
    app = create_app(settings_from_env(data_dir=Path(sys.argv[1]), admin_password="host-memory-probe"))
    layers.append(("bolt_host code and plugins imported, app built", rss()))
    async def main():
        host = app.state.host
        await host.start()
        layers.append(("host started (services, db, state)", rss()))
        snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        await host.stop()
        return snapshot
    snapshot = asyncio.run(main())
    def where(path):
        return path.split("site-packages/")[-1] if "site-packages/" in path else path.rsplit("/", 1)[-1]
    top = [(where(s.traceback[0].filename), s.size) for s in snapshot.statistics("filename")[:8]] if snapshot else []
    print(json.dumps({"layers": layers, "modules": len(sys.modules), "top": top,
                      "plugins": sorted(app.state.host.pm.bolt_info)}))
    """
)


def measure(plugins_off: bool, trace: bool = False) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}
    env["BOLT_LOG_LEVEL"] = "warning"
    if plugins_off:
        env["BOLT_PLUGINS"] = ""
    with tempfile.TemporaryDirectory(prefix="bolt-host-memory-") as data:
        command = [sys.executable, "-c", PROBE, data, "trace" if trace else "-"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    for plugins_off in (False, True):
        report = measure(plugins_off)
        report["top"] = measure(plugins_off, trace=True)["top"]
        print(f"\nplugins: {', '.join(report['plugins']) or 'none'}; {report['modules']} modules loaded")
        print("| layer | RSS (MB) | added (MB) |\n|---|---|---|")
        previous = 0.0
        for name, rss in report["layers"]:
            print(f"| {name} | {rss:.1f} | {rss - previous:+.1f} |")
            previous = rss
        print("heaviest allocation sites (tracemalloc, MB): " + ", ".join(
            f"{name} {size / 2**20:.1f}" for name, size in report["top"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
