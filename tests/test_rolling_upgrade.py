"""Upgrading a running app is a rolling restart onto the new version: through /x/<app>/, steady
requests, a long streaming answer and a WebSocket see no failure, and the version answering
changes exactly once; a new version that never gets ready is rolled back while the old
process serves on (no gap, same pid).  Real host (uvicorn), real app, local source."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bolt_host import errors
from tests.rolling_support import FIXTURE_APPS, Traffic, app_log, instances, live_context, through_a_switch
from tests.servers import LiveServer, live_host_with_app

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host_with_app(tmp_path, FIXTURE_APPS / "rolling") as server:
        yield server


def _new_version(
    live: LiveServer, version: str, never_ready: bool = False, ready_once: bool = False, rolling: bool = True
) -> None:
    """Put ``version`` of the app in the host's local repository (where it was installed from);
    ``ready_once``: only its first process gets ready (see the fixture)."""
    folder = live.host.settings.local_repo / "rolling"
    manifest = json.loads((folder / "package.json").read_text())
    bolt = {**manifest["bolt"], **({} if rolling else {"rolling": False})}
    (folder / "package.json").write_text(json.dumps({**manifest, "version": version, "bolt": bolt}))
    if never_ready:
        (folder / "never-ready").write_text("")
    if ready_once:
        (folder / "ready-once").write_text("")


def _upgrade_under_traffic(live: LiveServer) -> tuple[httpx.Response, Traffic]:
    """Upgrade while a steady stream of requests goes through /x/, and 20 more after it answered."""
    with Traffic(live) as traffic:
        answer = _upgrade(live)
        traffic.more_answers(20)
    return answer, traffic


def _scale(live: LiveServer, count: int) -> None:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=120) as admin:
        assert admin.put("/api/apps/rolling", json={"instances": count}).status_code == 200

def _upgrade(live: LiveServer) -> httpx.Response:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=120) as admin:
        return admin.post("/api/apps/local", json={"path": "rolling", "upgrade": True})


def test_an_upgrade_of_a_running_app_drops_no_request(live: LiveServer) -> None:
    _new_version(live, "2.0.0")
    switch = through_a_switch(live, lambda: _upgrade(live))
    assert switch.answer.status_code == 201, switch.answer.text
    assert switch.streamed == [f"1.0.0 {switch.old_pid} {index}" for index in range(30)]
    assert switch.traffic.failures == []
    versions = [version for version, _ in switch.traffic.answers]
    assert versions[0] == "1.0.0" and versions[-1] == "2.0.0"
    assert sum(1 for a, b in itertools.pairwise(versions) if a != b) == 1, "one switch, no way back"
    assert len(switch.traffic.pids()) == 2
    context = live_context(live)
    assert context["status"] == "running" and context["app"]["version"] == "2.0.0"
    apps_dir = live.host.settings.data_dir / "apps"
    assert sorted(p.name for p in apps_dir.iterdir()) == ["rolling"], "the old version's folder is gone"


def test_a_new_version_that_never_gets_ready_is_rolled_back_without_a_gap(live: LiveServer) -> None:
    old_pid = live_context(live)["pid"]
    _new_version(live, "2.0.0", never_ready=True)
    answer, traffic = _upgrade_under_traffic(live)
    assert answer.status_code == 500 and answer.json()["code"] == errors.APP_START_FAILED, answer.text
    message = answer.json()["error"]["message"]
    assert "upgrade of rolling to 2.0.0 did not start" in message and "never-ready: exiting" in message
    assert "rolled back to 1.0.0, which kept serving" in message
    assert traffic.failures == []
    assert traffic.pids() == [old_pid] and {version for version, _ in traffic.answers} == {"1.0.0"}
    context = live_context(live)
    assert (context["status"], context["pid"], context["app"]["version"]) == ("running", old_pid, "1.0.0")
    folder = live.host.settings.data_dir / "apps" / "rolling"
    assert json.loads((folder / "package.json").read_text())["version"] == "1.0.0"
    assert not (folder / "never-ready").exists()


def test_an_upgrade_switches_every_instance_one_at_a_time(live: LiveServer) -> None:
    _scale(live, 2)
    _new_version(live, "2.0.0")
    answer, traffic = _upgrade_under_traffic(live)
    assert answer.status_code == 201, answer.text
    assert traffic.failures == []
    assert {version for version, _ in traffic.answers[-10:]} == {"2.0.0"}
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        instances = [c for c in admin.get("/api/apps/@live").json()["body"] if c["name"] == "rolling"]
    assert sorted((c["instance"], c["status"], c["app"]["version"]) for c in instances) == [
        (0, "running", "2.0.0"), (1, "running", "2.0.0"),
    ]
    assert answer.json()["body"]["adminInstances"] == 2, "the admin's count is kept across the upgrade"


def test_an_upgrade_failing_on_a_later_instance_moves_the_switched_ones_back_without_a_gap(live: LiveServer) -> None:
    _scale(live, 3)
    before = [c["pid"] for c in instances(live)]
    _new_version(live, "2.0.0", ready_once=True)  # instance 0 switches to it, instance 1 fails to
    answer, traffic = _upgrade_under_traffic(live)
    assert answer.status_code == 500 and answer.json()["code"] == errors.APP_START_FAILED, answer.text
    message = answer.json()["error"]["message"]
    assert "upgrade of rolling to 2.0.0 did not start" in message and "2.0.0 already started once" in message
    assert "rolled back to 1.0.0, which kept serving; instance 0 went back to it" in message
    assert traffic.failures == [], "the app never stopped serving"
    assert "2.0.0" in {version for version, _ in traffic.answers}, "instance 0 served the new version for a while"
    assert {version for version, _ in traffic.answers[-10:]} == {"1.0.0"}
    after = instances(live)
    assert [(c["status"], c["app"]["version"]) for c in after] == [("running", "1.0.0")] * 3, "one version everywhere"
    assert [c["pid"] for c in after][1:] == before[1:], "the failing instance and the one after it served on"
    assert after[0]["pid"] != before[0]
    assert after[0]["pid"] in {pid for version, pid in traffic.answers if version == "1.0.0"}
    log = app_log(live)
    assert "[instance 1] the new process never became ready" in log
    folder = live.host.settings.data_dir / "apps" / "rolling"
    assert json.loads((folder / "package.json").read_text())["version"] == "1.0.0"


def test_a_failed_upgrade_of_an_app_that_cannot_roll_starts_the_previous_version_again(live: LiveServer) -> None:
    _new_version(live, "1.5.0", rolling=False)
    assert _upgrade(live).status_code == 201  # the running 1.0.0 could roll; 1.5.0 cannot
    old_pid = live_context(live)["pid"]
    _new_version(live, "2.0.0", never_ready=True, rolling=False)  # 1.5.0 is stopped first: a gap
    answer = _upgrade(live)
    assert answer.status_code == 500 and answer.json()["code"] == errors.APP_START_FAILED, answer.text
    assert "rolled back to 1.5.0, which is running again" in answer.json()["error"]["message"]
    context = live_context(live)
    assert (context["status"], context["app"]["version"]) == ("running", "1.5.0") and context["pid"] != old_pid
