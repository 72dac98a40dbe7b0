"""The active health check of an app's instances (issue 21): one that hangs (SIGSTOP: its port
still accepts connections, so the proxy alone never notices) is taken out of the balancing once
its ``health`` path stops answering, with a note in the app's log, and is back once it answers
again.  Real host (uvicorn), real app processes, real signals, requests through /x/."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.rolling_support import FIXTURE_APPS, app_log, instances
from tests.servers import LiveServer, live_host_with_app

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    folder = tmp_path / "fixture" / "rolling"
    shutil.copytree(FIXTURE_APPS / "rolling", folder)
    manifest = json.loads((folder / "package.json").read_text())
    manifest["bolt"]["health"] = "/version"
    (folder / "package.json").write_text(json.dumps(manifest))
    with live_host_with_app(tmp_path, folder, health_interval_seconds=0.5) as server:
        yield server


def _answering_pids(client: httpx.Client, count: int) -> list[int]:
    answers = [client.get("/x/rolling/version") for _ in range(count)]
    assert [answer.status_code for answer in answers] == [200] * count, [a.text[:200] for a in answers]
    return [answer.json()["pid"] for answer in answers]


def test_a_hanging_instance_leaves_the_balancing_until_it_answers_again(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=20) as admin:
        assert admin.put("/api/apps/rolling", json={"instances": 2}).status_code == 200
        first, second = (c["pid"] for c in instances(live))
        assert set(_answering_pids(admin, 10)) == {first, second}, "both take requests"
        os.kill(second, signal.SIGSTOP)  # it hangs; the kernel still accepts connections on its port
        try:
            wait_until(lambda: "out of the balancing" in app_log(live), timeout=60, what="the probe to notice")
            assert set(_answering_pids(admin, 20)) == {first}, "no request waits on the hung instance"
        finally:
            os.kill(second, signal.SIGCONT)
        wait_until(lambda: "back in the balancing" in app_log(live), timeout=60, what="the instance to answer again")
        assert set(_answering_pids(admin, 20)) == {first, second}
        assert [(c["status"], c["pid"]) for c in instances(live)] == [("running", first), ("running", second)]
    notes = [line for line in app_log(live).splitlines() if "balancing" in line]
    assert len(notes) == 2 and all("[instance 1]" in line and f"pid {second}" in line for line in notes), notes
    assert "failed its health check 2 times in a row" in notes[0] and "GET /version" in notes[0]
