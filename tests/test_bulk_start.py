"""A start naming many apps (``POST /api/apps/start`` with ``names``) and the autostart at boot,
with real processes and ``BOLT_START_CONCURRENCY`` set: at most that many of them are starting
at any time (the host's memory peak of a bulk start does not grow with the number of apps), and
every app is started in the end."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from bolt_host.app import create_app
from bolt_host.testing import running_host, settings_for_tests
from tests.helpers import async_wait_until
from tests.test_isolation import write_app

AT_ONCE = 3

# Calls the test's gate, says its name, and listens on $PORT (is ready) only once the gate answers.
GATED = """
    import os, signal, socket
    gate = socket.create_connection(("127.0.0.1", {gate_port}))
    gate.sendall(os.environ["BOLT_APP_NAME"].encode() + b"\\n")
    gate.recv(1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(os.environ["PORT"])))
    server.listen()
    signal.pause()
"""


LISTENS = """
    import os, signal, socket
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(os.environ["PORT"])))
    server.listen()
    signal.pause()
"""


class Gate:
    """Holds every app that calls until :meth:`open_all`; counts the calls."""

    def __init__(self) -> None:
        self.callers: list[str] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._open = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.callers.append((await reader.readline()).decode().strip())
        self._writers.append(writer)
        if self._open:
            await self._let_through(writer)

    async def open_all(self) -> None:
        self._open = True
        for writer in list(self._writers):
            await self._let_through(writer)

    @staticmethod
    async def _let_through(writer: asyncio.StreamWriter) -> None:
        writer.write(b"g")
        await writer.drain()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


async def test_a_bulk_start_runs_a_bounded_number_of_starts_at_once(tmp_path: Path) -> None:
    gate = Gate()
    server = await asyncio.start_server(gate.handle, "127.0.0.1", 0)
    gate_port = server.sockets[0].getsockname()[1]
    names = [f"gated{i:02d}" for i in range(AT_ONCE + 3)]
    repo = tmp_path / "repo"
    for name in names:
        write_app(repo, name, GATED.format(gate_port=gate_port), server=True)
    try:
        settings = {"ready_timeout_seconds": 120.0, "start_concurrency": AT_ONCE}
        async with running_host(tmp_path / "data", local_repo=repo, **settings) as bolt:
            for name in names:
                assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
            call = asyncio.create_task(bolt.admin.post("/api/apps/start", json={"names": names}, timeout=300))

            await async_wait_until(lambda: len(gate.callers) >= AT_ONCE, timeout=120, what="first starts")
            # Every caller is held at the gate, so each of these is still starting: no more may be.
            live = (await bolt.admin.get("/api/apps/@live")).json()["body"]
            starting = [context["name"] for context in live if context["status"] == "starting"]
            assert sorted(starting) == sorted(gate.callers) and len(starting) == AT_ONCE
            assert not call.done()

            await gate.open_all()
            answer = await call
            assert answer.status_code == 200, answer.text
            body = answer.json()["body"]
            assert body["failed"] == {}
            assert sorted(context["name"] for context in body["started"]) == names
            assert sorted(gate.callers) == names  # the rest started as slots came free
            stopped = await bolt.admin.post("/api/apps/stop", json={"names": names})
            assert stopped.status_code == 200 and stopped.json()["body"]["failed"] == {}
    finally:
        gate.close()
        server.close()
        await server.wait_closed()


async def test_the_autostart_at_boot_runs_a_bounded_number_of_starts_at_once(tmp_path: Path) -> None:
    gates = [Gate()]
    await gates[0].open_all()  # the first host's starts go through
    server = await asyncio.start_server(lambda reader, writer: gates[-1].handle(reader, writer), "127.0.0.1", 0)
    gate_port = server.sockets[0].getsockname()[1]
    names = [f"gated{i:02d}" for i in range(AT_ONCE + 3)]
    repo, data = tmp_path / "repo", tmp_path / "data"
    for name in names:
        write_app(repo, name, GATED.format(gate_port=gate_port), server=True)
    settings = {"ready_timeout_seconds": 120.0, "start_concurrency": AT_ONCE, "autostart": True}
    try:
        async with running_host(data, local_repo=repo, **settings) as bolt:
            for name in names:
                assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
            started = await bolt.admin.post("/api/apps/start", json={"names": names}, timeout=300)
            assert started.status_code == 200 and started.json()["body"]["failed"] == {}
        # stopped by the host's shut-down, still meant to run: the next host starts them at boot
        gate = Gate()
        gates.append(gate)
        host = create_app(settings_for_tests(data, local_repo=repo, **settings)).state.host
        booting = asyncio.create_task(host.start())
        try:
            await async_wait_until(lambda: len(gate.callers) >= AT_ONCE, timeout=120, what="first autostarts")
            starting = [context["name"] for context in host.supervisor.contexts() if context["status"] == "starting"]
            assert sorted(starting) == sorted(gate.callers) and len(starting) == AT_ONCE
            assert not booting.done()

            await gate.open_all()
            await booting
            running = [context["name"] for context in host.supervisor.contexts() if context["status"] == "running"]
            assert sorted(running) == names
        finally:
            if not booting.done():
                await gate.open_all()
                await asyncio.gather(booting, return_exceptions=True)
            await host.stop()
    finally:
        for gate in gates:
            gate.close()
        server.close()
        await server.wait_closed()


async def test_the_event_loop_turns_between_the_launches_of_a_bulk_start(tmp_path: Path) -> None:
    """Each launch of a bulk start waits for a turn of the event loop (I/O, requests, the readiness
    sweep run between two launches): before, every launch ran in one turn, and nothing else ran
    until the last app had been spawned."""
    names = [f"turns{i}" for i in range(5)]
    repo = tmp_path / "repo"
    for name in names:
        write_app(repo, name, LISTENS, server=True)
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        for name in names:
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        supervisor = bolt.host.supervisor
        loop = asyncio.get_running_loop()
        seen: list[int] = []  # apps with a process, as an I/O callback saw it at each turn of the loop
        readable, writable = socket.socketpair()

        def on_readable() -> None:
            readable.recv(1)
            seen.append(sum(1 for name in names if (supervisor.context(name) or {}).get("pid")))
            writable.send(b"t")  # readable again at the next turn

        loop.add_reader(readable, on_readable)
        writable.send(b"t")
        try:
            started = await bolt.admin.post("/api/apps/start", json={"names": names}, timeout=120)
        finally:
            loop.remove_reader(readable)
            readable.close()
            writable.close()
        assert started.status_code == 200 and started.json()["body"]["failed"] == {}, started.text
        assert any(0 < launched < len(names) for launched in seen), seen
        stopped = await bolt.admin.post("/api/apps/stop", json={"names": names})
        assert stopped.status_code == 200 and stopped.json()["body"]["failed"] == {}
