"""The active health check of an app's instances (issue 21): one that hangs (SIGSTOP: its port
still accepts connections, so the proxy alone never notices) is taken out of the balancing once
its ``health`` path stops answering, with a note in the app's log, and is back once it answers
again.  Real host (uvicorn), real app processes, real signals, requests through /x/."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bolt_host.services import traffic as proxy_traffic
from bolt_host.services.app_runtime import AppRuntime
from bolt_host.services.health_probe import HealthProbe
from bolt_host.services.instances import Balancer
from bolt_host.services.restarts import CrashHistory, RestartPolicy
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


class _Instance:
    """A real HTTP server on a loopback port standing for one instance; ``hang`` makes it accept
    connections and read requests without ever answering."""

    def __init__(self) -> None:
        self.hang = False
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Instance:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.hang:
                await reader.read()  # until the prober gives up and closes
            else:
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()


def _runtime(index: int, port: int, health: str | None) -> AppRuntime:
    app = {"name": "probed", **({"health": health} if health else {})}
    runtime = AppRuntime(name="probed", app=app, crashes=CrashHistory(RestartPolicy()), instance=index)
    runtime.status, runtime.port = "running", port
    return runtime


async def test_probe_rounds_take_a_hanging_instance_out_and_put_it_back() -> None:
    balancer = Balancer(proxy_traffic.Traffic())
    notes: list[str] = []
    probe = HealthProbe(balancer, list, lambda rt, text: notes.append(f"{rt.instance}: {text}"), timeout=0.3)
    async with _Instance() as first, _Instance() as second:
        runtimes = [_runtime(0, first.port, "/health"), _runtime(1, second.port, "/health")]
        await probe.check([runtimes[:1]])
        assert first.requests == 0, "a lone instance is never probed"
        second.hang = True
        await probe.check([runtimes])
        assert {balancer.pick([first.port, second.port]) for _ in range(4)} == {first.port, second.port}, "one miss"
        await probe.check([runtimes])
        assert {balancer.pick([first.port, second.port]) for _ in range(4)} == {first.port}
        assert notes == ["1: failed its health check 2 times in a row (waited 0.3 s for GET /health "
                         "answering 2xx/3xx): out of the balancing until it answers"]
        second.hang = False
        await probe.check([runtimes])
        assert {balancer.pick([first.port, second.port]) for _ in range(4)} == {first.port, second.port}
        assert notes[1:] == ["1: answers its health check again: back in the balancing"]
        assert (first.requests, second.requests) == (3, 3)
    await balancer.close()


async def test_without_a_health_path_a_closed_port_is_what_the_probe_tells() -> None:
    balancer = Balancer(proxy_traffic.Traffic())
    probe = HealthProbe(balancer, list, lambda rt, text: None, timeout=0.3)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        gone = closed.getsockname()[1]
    async with _Instance() as alive:
        runtimes = [_runtime(0, alive.port, None), _runtime(1, gone, None)]
        for _ in range(2):
            await probe.check([runtimes])
        assert {balancer.pick([alive.port, gone]) for _ in range(4)} == {alive.port}
        assert alive.requests == 0, "a connect only: no request reaches the app"
        runtimes.pop()  # that instance stopped: the probe forgets it, the balancer decides alone
        await probe.check([runtimes])
        assert gone in {balancer.pick([alive.port, gone]) for _ in range(4)}
    await balancer.close()
