"""Rolling restarts at the supervisor: what a stop or a host crash in the middle of a switch
leaves (nothing: no orphan, no second copy).  A lease held on the old process's port stands
in for a request still in flight there, so the drain waits."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bolt_host.services.supervisor import SECTION
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import Harness, marked_pids, process_gone, supervisor_harness

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with supervisor_harness(tmp_path) as running:
        yield running


async def _switched(supervisor: object, name: str, old_pid: int) -> dict:
    return await async_wait_until(
        lambda: (c := supervisor.context(name)) and c["status"] == "running" and c["pid"] != old_pid and c,  # type: ignore[attr-defined]
        timeout=30,
        what="the new process to take over",
    )


async def test_a_stop_while_the_old_process_drains_ends_both(harness: Harness) -> None:
    app = harness.app("drains", "http_server.py", health="/health")
    supervisor = harness.supervisor()
    await supervisor.boot()
    before = await supervisor.start_app(app)
    lease = supervisor.lease("drains")
    assert lease is not None and lease.port == before["port"]
    rolling = asyncio.create_task(supervisor.restart_app(app, rolling=True))
    new = await _switched(supervisor, "drains", before["pid"])
    assert supervisor.lease("drains").port == new["port"], "new requests go to the new process"  # type: ignore[union-attr]
    assert not rolling.done(), "the restart waits for the request still on the old process"
    assert sorted(marked_pids("drains")) == sorted([before["pid"], new["pid"]])

    await supervisor.stop_app("drains")
    assert process_gone(before["pid"]) and process_gone(new["pid"])
    assert (await asyncio.wait_for(rolling, 30))["pid"] == new["pid"]
    assert marked_pids("drains") == []
    assert "retiring" not in harness.state.get(SECTION, "drains")
    lease.release()
    await supervisor.shutdown()


async def test_a_host_killed_mid_switch_ends_the_old_process_at_boot(harness: Harness) -> None:
    app = harness.app("midway", "http_server.py", health="/health")
    first = harness.supervisor()
    await first.boot()
    before = await first.start_app(app)
    lease = first.lease("midway")
    rolling = asyncio.create_task(first.restart_app(app, rolling=True))
    new = await _switched(first, "midway", before["pid"])
    assert harness.state.get(SECTION, "midway")["retiring"]["pid"] == before["pid"]
    await harness.state.commit()
    rolling.cancel()
    await asyncio.gather(rolling, return_exceptions=True)
    await first.detach()  # the host "crashed" while the old process drained
    assert lease is not None

    second = harness.supervisor()
    await second.boot()
    adopted = second.context("midway")
    assert adopted["status"] == "running" and adopted["pid"] == new["pid"]
    assert process_gone(before["pid"])
    assert marked_pids("midway") == [new["pid"]]
    assert "retiring" not in harness.state.get(SECTION, "midway")
    await second.shutdown()


async def test_after_a_host_restart_instances_are_adopted_and_a_dead_one_started_again(harness: Harness) -> None:
    app = harness.app("pair", "http_server.py", health="/health", instances=2)
    first = harness.supervisor()
    await first.boot()
    await first.start_app(app)
    before = {c["instance"]: c["pid"] for c in first.contexts() if c["name"] == "pair"}
    assert sorted(before) == [0, 1]
    await first.detach()  # the host "crashed"
    os.kill(before[1], signal.SIGKILL)  # and instance 1 died while it was down
    assert await async_wait_until(lambda: process_gone(before[1]), what="instance 1 to be gone")

    second = harness.supervisor()
    await second.boot()
    after = {c["instance"]: c for c in second.contexts() if c["name"] == "pair"}
    assert after[0]["pid"] == before[0] and after[0]["status"] == "running", "instance 0 adopted"
    assert after[1]["status"] == "running" and after[1]["pid"] != before[1], "instance 1 started again"
    assert sorted(marked_pids("pair") + marked_pids("pair#1")) == sorted([before[0], after[1]["pid"]])
    await second.shutdown()
    assert process_gone(before[0]) and process_gone(after[1]["pid"])
