"""Rolling restarts through /x/<app>/: a real host (uvicorn), a real app (Starlette on uvicorn),
real clients in threads.  While the app is switched to a new process, a steady stream of
requests, one long streaming answer and one WebSocket all go on without a single failure, and
the process answering changes exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bolt_host import errors
from tests.helpers import wait_until
from tests.rolling_support import FIXTURE_APPS, Traffic, app_log, live_context, restart, through_a_switch
from tests.servers import LiveServer, live_host_with_app

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host_with_app(tmp_path, FIXTURE_APPS / "rolling") as server:
        yield server


def test_a_rolling_restart_drops_no_request_and_switches_once(live: LiveServer) -> None:
    switch = through_a_switch(live, lambda: restart(live, mode="rolling"))
    old_pid = switch.old_pid
    assert switch.streamed == [f"1.0.0 {old_pid} {index}" for index in range(30)], "the long answer finished whole"
    assert switch.answer.status_code == 200, switch.answer.text
    new_pid = switch.answer.json()["body"]["pid"]
    assert switch.traffic.failures == []
    assert switch.traffic.pids() == [old_pid, new_pid], "the answering process changed exactly once"
    wait_until(lambda: not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE,
               timeout=30, what="the old process to be gone")
    context = live_context(live)
    assert (context["status"], context["pid"], context["restarts"]) == ("running", new_pid, 1)
    assert "rolling restart" in app_log(live)


def test_a_new_process_that_never_gets_ready_leaves_the_old_one_serving(live: LiveServer) -> None:
    old_pid = live_context(live)["pid"]
    (live.host.settings.data_dir / "apps" / "rolling" / "never-ready").write_text("")
    with Traffic(live) as traffic:
        answer = restart(live, mode="rolling")
        traffic.more_answers(20)
    assert answer.status_code == 500 and answer.json()["code"] == errors.APP_START_FAILED, answer.text
    assert "never-ready: exiting" in answer.json()["error"]["message"]
    assert traffic.failures == []
    assert traffic.pids() == [old_pid]
    context = live_context(live)
    assert (context["status"], context["pid"]) == ("running", old_pid)
    assert "serves on" in app_log(live)

    (live.host.settings.data_dir / "apps" / "rolling" / "never-ready").unlink()
    again = restart(live, mode="rolling")  # the app is whole again: the next rolling restart goes through
    assert again.status_code == 200, again.text
    assert again.json()["body"]["pid"] != old_pid
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as client:
        assert client.get("/x/rolling/version").json()["pid"] == again.json()["body"]["pid"]


def test_an_unknown_restart_mode_is_refused_and_changes_nothing(live: LiveServer) -> None:
    old_pid = live_context(live)["pid"]
    answer = restart(live, mode="sideways")
    assert answer.status_code == 400 and answer.json()["code"] == errors.BAD_REQUEST
    assert "'mode' must be one of" in answer.json()["error"]["message"]
    assert live_context(live)["pid"] == old_pid
    with httpx.Client(base_url=live.url, timeout=30) as anyone:
        described = anyone.get("/openapi.json").json()["paths"]["/api/apps/restart"]["post"]["requestBody"]
    schema = described["content"]["application/json"]["schema"]
    assert schema["properties"]["mode"] == {"enum": ["stop-start", "rolling"]}


def test_an_app_that_opts_out_gets_a_plainrestart(tmp_path: Path) -> None:
    folder = tmp_path / "fixture" / "rolling"
    folder.mkdir(parents=True)
    for entry in (FIXTURE_APPS / "rolling").iterdir():
        (folder / entry.name).write_bytes(entry.read_bytes())
    manifest = (folder / "package.json").read_text()
    manifest = manifest.replace('"main": "server.py"', '"main": "server.py", "rolling": false')
    (folder / "package.json").write_text(manifest)
    with live_host_with_app(tmp_path / "host", folder) as live:
        old_pid = live_context(live)["pid"]
        answer = restart(live, mode="rolling")
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"]["pid"] != old_pid
        log = app_log(live)
    assert "stopping" in log and "rolling restart" not in log
