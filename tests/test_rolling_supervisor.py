"""Rolling restarts at the supervisor: what a stop or a host crash in the middle of a switch
leaves (nothing: no orphan, no second copy).  A lease held on the old process's port stands
in for a request still in flight there, so the drain waits."""

from __future__ import annotations

import asyncio
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
