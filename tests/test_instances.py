"""Several instances of one app behind /x/<app>/ (issue 21): each its own supervised process,
requests balanced over the running ones, a killed one out of the rotation until it is back,
WebSockets sticking to theirs, rolling restarts one instance at a time, and scaling down that
drains.  Real host (uvicorn), real app processes, real clients."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from bolt_host import errors
from bolt_host.services import traffic as proxy_traffic
from bolt_host.services.instances import Balancer
from tests.helpers import async_wait_until, wait_until
from tests.rolling_support import BASIC, FIXTURE_APPS, Traffic, in_thread, instances, restart
from tests.servers import LiveServer, live_host_with_app

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host_with_app(tmp_path, FIXTURE_APPS / "rolling", max_instances=4) as server:
        yield server


def _scale(live: LiveServer, count: Any) -> httpx.Response:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=120) as admin:
        return admin.put("/api/apps/rolling", json={"instances": count})


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


Started = tuple[list[threading.Thread], list[dict[str, Any]], threading.Barrier]


def _long_answers(live: LiveServer, count: int) -> Started:
    """``count`` streaming answers open at once (each waits at the barrier once it began)."""
    began = threading.Barrier(count + 1, timeout=60)

    def one() -> list[str]:
        with (
            httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as client,
            client.stream("GET", "/x/rolling/stream", params={"chunks": 30, "interval": 0.1}) as answer,
        ):
            assert answer.status_code == 200
            lines = answer.iter_lines()
            first = [next(lines)]
            began.wait()
            return first + list(lines)

    started = [in_thread(one) for _ in range(count)]
    return [thread for thread, _ in started], [outcome for _, outcome in started], began


def test_instances_are_supervised_balanced_and_scaled_down_with_a_drain(live: LiveServer) -> None:
    answer = _scale(live, 3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["body"]["adminInstances"] == 3
    contexts = instances(live)
    assert [(c["instance"], c["status"]) for c in contexts] == [(0, "running"), (1, "running"), (2, "running")]
    pids = [c["pid"] for c in contexts]
    assert len(set(pids)) == 3 and len({c["port"] for c in contexts}) == 3
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        single = admin.post("/api/apps/start", json={"name": "rolling"}).json()["body"]
        assert (single["instance"], single["pid"]) == (0, pids[0]), "Bolt's one context: instance 0"
        seen = {admin.get("/x/rolling/version").json()["pid"] for _ in range(30)}
    assert seen == set(pids), "idle instances take turns"

    with connect("ws" + live.url.removeprefix("http") + "/x/rolling/ws", additional_headers=BASIC) as ws:
        echoes = []
        for index in range(6):
            ws.send(str(index))
            echoes.append(ws.recv(timeout=30).split()[1])
    assert len(set(echoes)) == 1, "a WebSocket sticks to its instance"

    os.kill(pids[1], signal.SIGKILL)  # that instance alone is restarted; the others serve on
    back = wait_until(
        lambda: (c := instances(live)[1]) and c["status"] == "running" and c["pid"] != pids[1] and c,
        timeout=60, what="instance 1 to be restarted",
    )
    assert back["restarts"] == 1 and [c["restarts"] for c in instances(live)] == [0, 1, 0]
    pids[1] = back["pid"]

    threads, outcomes, began = _long_answers(live, 3)  # one on each instance: least outstanding
    began.wait()
    with Traffic(live) as traffic:
        scaled = _scale(live, 1)  # returns once instances 1 and 2 drained and stopped
        for thread in threads:
            thread.join(timeout=60)
        traffic.more_answers(10)
    assert scaled.status_code == 200, scaled.text
    assert traffic.failures == []
    streamed = [outcome["result"] for outcome in outcomes]
    assert sorted(int(lines[0].split()[1]) for lines in streamed) == sorted(pids), "one answer per instance"
    for lines in streamed:
        version, pid, _ = lines[0].split()
        assert lines == [f"{version} {pid} {index}" for index in range(30)], "drained whole"
    assert [c["instance"] for c in instances(live)] == [0]
    assert _gone(pids[1]) and _gone(pids[2]) and not _gone(pids[0])
    assert {pid for _, pid in traffic.answers[-5:]} == {pids[0]}


def test_a_rolling_restart_goes_one_instance_at_a_time(live: LiveServer) -> None:
    assert _scale(live, 2).status_code == 200
    before = [c["pid"] for c in instances(live)]
    with Traffic(live) as traffic:
        answer = restart(live, mode="rolling")
        traffic.more_answers(10)
    assert answer.status_code == 200, answer.text
    assert traffic.failures == []
    after = [c["pid"] for c in instances(live)]
    assert len(after) == 2 and not set(after) & set(before)
    assert set(traffic.pids()) == set(before) | set(after)
    assert all(_gone(pid) for pid in before)


def test_an_instance_that_refuses_connections_is_taken_out_and_its_requests_go_elsewhere(live: LiveServer) -> None:
    assert _scale(live, 2).status_code == 200
    first, second = (c["pid"] for c in instances(live))
    with Traffic(live) as traffic:
        traffic.more_answers(10)
        os.kill(second, signal.SIGUSR1)  # it stops listening but lives on: still "running"
        seen = len(traffic.answers)
        traffic.more_answers(40)
    assert traffic.failures == [], "the request that found the port refusing went to the other instance"
    assert {pid for _, pid in traffic.answers[seen + 10 :]} == {first}
    assert [(c["status"], c["pid"]) for c in instances(live)] == [("running", first), ("running", second)]


def test_instance_counts_out_of_range_are_refused_and_change_nothing(live: LiveServer) -> None:
    for count in (0, 5, "2", True):
        answer = _scale(live, count)
        assert answer.status_code == 400 and answer.json()["code"] == errors.BAD_REQUEST, answer.text
        assert "'instances' must be a whole number from 1" in answer.json()["error"]["message"]
    assert [c["instance"] for c in instances(live)] == [0]
    assert _scale(live, None).status_code == 200  # null: back to the manifest's count (1)


async def test_a_refusing_port_is_left_out_until_it_accepts_again() -> None:
    balancer = Balancer(proxy_traffic.Traffic())
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    other = 1  # never connected to: only picked
    balancer.refused(port)
    assert {balancer.pick([port, other]) for _ in range(10)} == {other}
    assert balancer.pick([port]) == port, "a lone instance is tried anyway"
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", port)
    try:
        await async_wait_until(lambda: balancer.pick([port, other]) == port or None, timeout=30,
                               what="the port to be back in the rotation")
    finally:
        server.close()
        await server.wait_closed()
        await balancer.close()
