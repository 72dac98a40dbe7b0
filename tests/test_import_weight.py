"""A host with the four store backends loaded imports no heavy library it has not used yet.

Each check runs a real ``python -c`` (a fresh interpreter: this test process has imported
everything) that builds the app the way ``bolt-host serve`` does, starts the host, and
reports ``sys.modules``; then it uses each lazily imported feature once, so the check can
tell "never imported" from "imported late".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import end_process, free_port, wait_until

ROOT = Path(__file__).parent.parent

# What each heavy library is for; none is needed to serve until its feature is used.
# (python-multipart is imported by Starlette itself.)
HEAVY = {
    "httpx": "registry, proxy and hook clients; its package import also loads rich, pygments and click",
    "httpcore": "httpx's transport",
    "rich": "the CLI's tables and progress bars",
    "pygments": "rich's syntax highlighting",
    "joserfc": "market payment receipts, device access tokens",
    "cryptography": "joserfc's keys",
    "markdown_it": "README rendering",
    "nh3": "README sanitizing",
    "aiomqtt": "the device backend's MQTT client (manager or agent mode)",
    "paho": "aiomqtt's MQTT protocol",
    "amqtt": "the device manager's embedded broker",
    "transitions": "amqtt's state machines",
    "websockets": "uvicorn's WebSocket protocol: the server side of an upgraded connection",
    "websockets.asyncio.client": "the /x/ WebSocket proxy's client side",
    "psutil": "the dashboard's and the Market's machine figures, naming a foreign holder of a port",
    "tarfile": "unpacking and packing packages (installs, uploads)",
}

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path

    import bolt_host.cli  # what `python -m bolt_host serve` imports before it builds the app
    from bolt_host.app import create_app
    from bolt_host.config import settings_from_env

    HEAVY = json.loads(sys.argv[2])
    settings = settings_from_env(data_dir=Path(sys.argv[1]), admin_password="import-weight-test")
    app = create_app(settings)
    host = app.state.host

    async def main():
        await host.start()
        try:
            plugins = sorted(host.pm.bolt_info)
            at_start = sorted(name for name in HEAVY if name in sys.modules)
            from bolt_host.plugin import render_readme
            render_readme("# hello")
            host.proxy_client
            from bolt_market.receipts import check_jwks
            try:
                check_jwks({"keys": [{"kty": "EC", "kid": "k", "crv": "P-256", "x": "", "y": ""}]}, "jwks")
            except Exception:
                pass
            from bolt_host.web.dashboard import system_info
            system_info(host)
            import uvicorn
            from bolt_host.app import server_options
            config = uvicorn.Config(app, **server_options(settings))
            config.load()
            config.ws_protocol_class(config=config, server_state=uvicorn.server.ServerState(), app_state={})
            used = ("markdown_it", "nh3", "httpx", "joserfc", "psutil", "websockets")
            after_use = sorted(name for name in used if name in sys.modules)
        finally:
            await host.stop()
        print(json.dumps({"plugins": plugins, "at_start": at_start, "after_use": after_use}))

    asyncio.run(main())
    """
)


def _probe(script: str, data: Path, modules: list[str]) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter with every plugin loaded; its last line's JSON."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}  # every plugin loads
    env["BOLT_LOG_LEVEL"] = "warning"
    result = subprocess.run(
        [sys.executable, "-c", script, str(data), json.dumps(modules)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_heavy_libraries_are_imported_at_first_use_not_at_host_start(tmp_path: Path) -> None:
    report = _probe(PROBE, tmp_path / "data", sorted(HEAVY))
    assert {"robot", "market", "device", "enterprise"} <= set(report["plugins"])
    loaded = {name: HEAVY[name] for name in report["at_start"]}
    assert loaded == {}, f"imported at host start although unused: {loaded}"
    assert report["after_use"] == ["httpx", "joserfc", "markdown_it", "nh3", "psutil", "websockets"]


# A backend's route modules (and what only they import) load at the first request for one of
# their routes; its route table names every path up front.
ROUTE_PROBE = textwrap.dedent(
    """
    import asyncio, base64, json, sys
    from pathlib import Path

    import httpx
    import bolt_host.cli
    from bolt_host.app import create_app
    from bolt_host.config import settings_from_env

    MODULES = json.loads(sys.argv[2])
    app = create_app(settings_from_env(data_dir=Path(sys.argv[1]), admin_password="import-weight-test"))
    host = app.state.host
    basic = "Basic " + base64.b64encode(b"admin:import-weight-test").decode()

    def loaded():
        return sorted(name for name in MODULES if name in sys.modules)

    async def main():
        await host.start()
        try:
            at_start = loaded()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                market = await client.get("/app-store/api/v2/market/hash", headers={"Authorization": basic})
                after_market = loaded()
                exists = await client.post("/store/apis/user/exists", json={"username": "admin"})
                after_enterprise = loaded()
                tasks = await client.get("/app_store/jobs/download/tasks", headers={"Authorization": basic})
                after_robot = loaded()
        finally:
            await host.stop()
        print(json.dumps({"at_start": at_start,
                          "market": [market.status_code, market.json()], "after_market": after_market,
                          "enterprise": [exists.status_code, exists.json()], "after_enterprise": after_enterprise,
                          "robot": [tasks.status_code, tasks.json()], "after_robot": after_robot}))

    asyncio.run(main())
    """
)


def test_the_backends_route_modules_load_at_their_first_request(tmp_path: Path) -> None:
    market = [
        "bolt_market.dashboard",
        "bolt_market.operations",
        "bolt_market.routes_market",
        "bolt_market.routes_ops",
        "bolt_market.routes_payment",
        "bolt_market.routes_settings",
    ]
    enterprise = [
        "bolt_enterprise.asset_routes",
        "bolt_enterprise.jaxrs_routes",
        "bolt_enterprise.mobile_routes",
        "bolt_enterprise.user_routes",
        "bolt_enterprise.webapp_routes",
    ]
    robot = ["bolt_robot.firmware", "bolt_robot.jobs", "bolt_robot.packages", "bolt_robot.routes", "bolt_robot.uploads"]
    report = _probe(ROUTE_PROBE, tmp_path / "data", market + enterprise + robot)
    assert report["at_start"] == []
    status, body = report["market"]
    assert status == 200 and body["success"] is True and len(body["data"]["hash"]) == 64, body
    # the answering module and what it imports, not the other route modules
    assert report["after_market"] == ["bolt_market.operations", "bolt_market.routes_market"]
    status, body = report["enterprise"]
    assert status == 200 and body["exists"] is True and body["error"] is False, body
    assert report["after_enterprise"] == sorted([*report["after_market"], "bolt_enterprise.user_routes"])
    status, body = report["robot"]
    assert (status, body) == (200, []), body  # no download task yet
    assert report["after_robot"] == sorted([*report["after_enterprise"], *robot])  # routes.py imports the rest


# The real `bolt-host serve`; SIGUSR1 (handled in its main thread) writes what it has imported,
# then reads one of uvicorn's top-level names, as any other user of `import uvicorn` would.
SERVE_PROBE = textwrap.dedent(
    """
    import json, os, runpy, signal, sys
    answer, watched = sys.argv[1], json.loads(sys.argv[2])
    def report(signum, frame):
        at_serve = sorted(name for name in watched if name in sys.modules)
        import uvicorn
        run = uvicorn.run  # uvicorn's own __init__ runs here
        after_use = sorted(name for name in watched if name in sys.modules)
        with open(answer + ".tmp", "w") as out:
            json.dump({"at_serve": at_serve, "after_use": after_use, "run": run.__module__}, out)
        os.rename(answer + ".tmp", answer)
    signal.signal(signal.SIGUSR1, report)
    sys.argv = ["bolt_host", *sys.argv[3:]]
    runpy.run_module("bolt_host", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.timeout(90)
def test_serve_leaves_uvicorns_command_line_unimported_until_its_package_is_used(tmp_path: Path) -> None:
    watched = ["multiprocessing", "uvicorn.main", "uvicorn.supervisors"]
    port = free_port()
    answer = tmp_path / "modules.json"
    command = [sys.executable, "-c", SERVE_PROBE, str(answer), json.dumps(watched)]
    command += ["serve", "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data")]
    env = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}  # every plugin loads
    env.update({"BOLT_ADMIN_PASSWORD": "import-weight-test", "BOLT_LOG_LEVEL": "warning"})
    log = tmp_path / "host.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/apps", auth=("admin", "import-weight-test")).is_success
            except httpx.HTTPError:
                return False

        wait_until(lambda: answers() or proc.poll() is not None, timeout=60, what="the host's answer")
        assert proc.poll() is None
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: answer.exists() or proc.poll() is not None, timeout=30, what="the host's modules")
        report = json.loads(answer.read_text())
    finally:
        end_process(proc)
    assert report["at_serve"] == [], log.read_text()[-2000:]
    assert report["after_use"] == watched
    assert report["run"] == "uvicorn.main"
