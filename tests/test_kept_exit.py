"""A failed app keeps how it ended (code or signal, reason, time, last log lines) until its next
start, shows as errored on its context, its app object and @live, and its log tells the story."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import wait_until
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
pytestmark = pytest.mark.timeout(120)
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[bolt-host\] ")


def _app(folder: Path, name: str, code: str, bolt: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(code)
    package = {"name": name, "version": "1.0.0", "keywords": ["bolt-app"], "bolt": {"main": "main.py", **bolt}}
    (folder / "package.json").write_text(json.dumps(package))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    repo = tmp_path / "repo"
    repo.mkdir()
    failer = "import sys\nprint('config file missing: /etc/failer.conf', flush=True)\nsys.exit(3)\n"
    _app(repo / "failer", "failer", failer, {"restart": "never"})
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    package = json.loads((repo / "echo" / "package.json").read_text())
    package["bolt"]["restart"] = "never"
    (repo / "echo" / "package.json").write_text(json.dumps(package))
    with live_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=5.0) as server:
        yield server


def _admin(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60)


def _log(admin: httpx.Client, name: str) -> str:
    return admin.get(f"/api/apps/{name}/logs").text


def test_an_app_failing_its_start_keeps_the_exit_until_the_next_start(live: LiveServer) -> None:
    with _admin(live) as admin:
        assert admin.post("/api/apps/local", json={"path": "failer"}).status_code == 201
        failed = admin.post("/api/apps/start", json={"name": "failer"}).json()
        assert "exited with code 3 during start" in failed["error"]["message"]

        app = admin.get("/api/apps/failer").json()["body"]
        assert app["errored"] is True
        last = app["lastExit"]
        assert last["code"] == 3 and last["signal"] is None
        assert last["reason"] == "exited with code 3 during start"
        assert last["log"] == ["config file missing: /etc/failer.conf"]
        assert last["at"].endswith("Z")
        listed = {a["name"]: a for a in admin.get("/api/apps").json()["body"]}
        assert listed["failer"]["lastExit"] == last

        live_list = {c["name"]: c for c in admin.get("/api/apps/@live").json()["body"]}
        assert live_list["failer"]["errored"] is True and live_list["failer"]["lastExit"] == last
        assert live_list["failer"]["exitCode"] == 3

        lines = _log(admin, "failer").splitlines()
        notes = [line for line in lines if "[bolt-host]" in line]
        assert all(STAMP.match(line) for line in notes), notes
        assert [STAMP.sub("", line) for line in notes] == ["starting", "start failed: exited with code 3 during start"]

        # the next start forgets it (and fails again, keeping the new one)
        again = admin.post("/api/apps/start", json={"name": "failer"}).json()
        assert again["code"] != 0
        second = admin.get("/api/apps/failer").json()["body"]["lastExit"]
        assert second["at"] >= last["at"]


def test_a_killed_app_is_errored_with_its_signal_and_a_stop_clears_it(live: LiveServer) -> None:
    with _admin(live) as admin:
        assert admin.post("/api/apps/local", json={"path": "echo"}).status_code == 201
        context = admin.post("/api/apps/start", json={"name": "echo"}).json()["body"]
        pid = context["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: admin.get("/api/apps/echo").json()["body"].get("errored") is True, timeout=30, what="errored"
            )
        finally:
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                os.kill(pid, signal.SIGKILL)
        last = admin.get("/api/apps/echo").json()["body"]["lastExit"]
        assert last["signal"] == "SIGKILL" and last["code"] is None and last["reason"] == "killed by SIGKILL"
        live_context = next(c for c in admin.get("/api/apps/@live").json()["body"] if c["name"] == "echo")
        assert live_context["errored"] is True

        restarted = admin.post("/api/apps/start", json={"name": "echo"}).json()["body"]
        assert restarted["status"] == "running" and restarted["lastExit"] is None and not restarted["errored"]
        assert "lastExit" not in admin.get("/api/apps/echo").json()["body"]
        stopped = admin.post("/api/apps/stop", json={"name": "echo"}).json()["body"]
        assert stopped["status"] == "stopped" and not stopped["errored"]

        notes = [STAMP.sub("", line) for line in _log(admin, "echo").splitlines() if "[bolt-host]" in line]
        assert notes[0] == "starting" and notes[1].startswith(f"started (pid {pid}, port ")
        assert notes[2] == "killed by SIGKILL"
        assert notes[3:6] == ["starting", notes[4], "stopping (by admin)"] and len(notes) == 7, notes
        assert notes[4].startswith("started (pid ")
        # how the app took SIGTERM is its own business: its handler exits 0, or the signal ends it first
        assert notes[6] in ("stopped (exited with code 0)", "stopped (killed by SIGTERM)"), notes


def test_the_cli_shows_the_errored_state_and_the_last_exit(live: LiveServer) -> None:
    from click.testing import CliRunner

    from bolt_host.cli import main
    from bolt_host.testing import ADMIN_PASSWORD

    with _admin(live) as admin:
        assert admin.post("/api/apps/local", json={"path": "failer"}).status_code == 201
        assert admin.post("/api/apps/start", json={"name": "failer"}).json()["code"] != 0
    env = {"BOLT_URL": live.url, "BOLT_USER": "admin", "BOLT_PASSWORD": ADMIN_PASSWORD}
    listed = CliRunner().invoke(main, ["apps", "list"], env=env)
    assert listed.exit_code == 0
    row = next(line.split("\t") for line in listed.stdout.splitlines() if line.startswith("failer"))
    assert row[2] == "errored"
    shown = CliRunner().invoke(main, ["apps", "show", "failer"], env=env)
    assert "errored" in shown.stdout
    assert "last exit    code 3 at " in shown.stdout and ": exited with code 3 during start" in shown.stdout
    assert "| config file missing: /etc/failer.conf" in shown.stdout


def test_the_last_exit_outlives_a_host_restart(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    failer = "import sys\nprint('exiting on purpose', flush=True)\nsys.exit(4)\n"
    _app(repo / "failer", "failer", failer, {"restart": "never"})
    with live_host(tmp_path / "data", local_repo=repo) as first, _admin(first) as admin:
        assert admin.post("/api/apps/local", json={"path": "failer"}).status_code == 201
        assert admin.post("/api/apps/start", json={"name": "failer"}).json()["code"] != 0
        before = admin.get("/api/apps/failer").json()["body"]["lastExit"]
    with live_host(tmp_path / "data", local_repo=repo) as second, _admin(second) as admin:  # autostart is off
        app = admin.get("/api/apps/failer").json()["body"]
        assert app["errored"] is True and app["lastExit"] == before
        assert before["code"] == 4 and before["log"] == ["exiting on purpose"]
