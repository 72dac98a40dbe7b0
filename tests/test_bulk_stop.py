"""A stop naming many apps (``POST /api/apps/stop`` with ``names``), with real processes: every
tree is gone and every stopped state is on disk when it answers, in one write for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bolt_host.services import sockdiag
from bolt_host.testing import ADMIN_PASSWORD, RunningHost, running_host
from tests.helpers import async_wait_until, free_port
from tests.test_isolation import log_of, needs_root, wait_for_line, write_app

SERVER = """
    import os, signal, socket
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(os.environ["PORT"])))
    server.listen()
    print("UP", flush=True)
    signal.pause()
"""

# Ends after its SIGTERM only once the test opens the FIFO it makes in its own folder (a slow
# graceful shutdown, as long as the test wants), and keeps a child in a session of its own, which
# only the app's cgroup (or its marker) ties to the app: no killpg of the app's group reaches it.
SLOW_WITH_ESCAPER = """
    import os, signal, sys
    gate = os.path.join(os.environ["HOME"], "gate")
    os.mkfifo(gate)
    child = os.fork()
    if child == 0:
        os.setsid()
        signal.pause()
        os._exit(0)
    def leave(*_):
        print("TERM", flush=True)
        with open(gate) as released:
            released.read()
        sys.exit(0)
    signal.signal(signal.SIGTERM, leave)
    print("FORKED", child, flush=True)
    while True:
        signal.pause()
"""

# Ends only when the test opens (and closes) the FIFO it makes in its own folder after its SIGTERM.
GATED = """
    import os, signal, sys
    gate = os.path.join(os.environ["HOME"], "gate")
    os.mkfifo(gate)
    def leave(*_):
        with open(gate) as released:
            released.read()
        sys.exit(0)
    signal.signal(signal.SIGTERM, leave)
    print("UP", flush=True)
    while True:
        signal.pause()
"""

NAMES = ["quick", "served", "slow"]


def _gone(pid: int) -> bool:
    """True when no process has ``pid`` (a zombie nobody reaped still has one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@needs_root
async def test_a_bulk_stop_ends_every_tree_then_writes_the_stopped_states_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "quick", "import signal\nprint('UP', flush=True)\nsignal.pause()\n")
    write_app(repo, "served", SERVER, server=True)
    write_app(repo, "slow", SLOW_WITH_ESCAPER)
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=10.0) as bolt:
        for name in NAMES:
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        started = (await bolt.admin.post("/api/apps/start", json={"names": NAMES})).json()["body"]
        assert started["failed"] == {}
        pids = {context["name"]: context["pid"] for context in started["started"]}
        port = next(context["port"] for context in started["started"] if context["name"] == "served")
        found = re.search(r"FORKED (\d+)", await wait_for_line(bolt, "slow", "FORKED"))
        assert found is not None
        escaper = int(found.group(1))
        state = bolt.host.runtime_state
        writes = state.writes
        told: list[str] = []
        bolt.host.events.subscribe(lambda event: told.append(event.body["name"]) if event.name == "app-stopped" else 0)

        async def fast_apps_gone(stopping: asyncio.Task[httpx.Response]) -> None:
            await async_wait_until(lambda: _gone(pids["quick"]) and _gone(pids["served"]), what="the fast apps gone")
            assert not stopping.done()

        # the slow app ends only after the others are gone
        answer = await _stop_opening_gate(bolt, NAMES, tmp_path / "data" / "home" / "slow" / "gate", fast_apps_gone)

        assert answer.status_code == 200, answer.text
        body = answer.json()["body"]
        assert body["failed"] == {}
        assert {context["name"]: context["pid"] for context in body["stopped"]} == pids
        assert all(context["status"] == "stopped" for context in body["stopped"])
        # the slow app ended after the others, yet the states went to disk in one write
        assert state.writes == writes + 1
        assert all(_gone(pid) for pid in [*pids.values(), escaper])  # reaped too, not left as zombies
        on_disk = json.loads((tmp_path / "data" / "runtime.json").read_text())["supervisor"]
        assert {name: on_disk[name]["desired"] for name in NAMES} == {name: "stopped" for name in NAMES}
        # the records without a pid, the notes and the events follow the answer
        await async_wait_until(lambda: sorted(told) == sorted(NAMES), what="app-stopped for every app")
        await state.commit()
        on_disk = json.loads((tmp_path / "data" / "runtime.json").read_text())["supervisor"]
        assert {name: (on_disk[name]["desired"], on_disk[name]["pid"]) for name in NAMES} == {
            name: ("stopped", None) for name in NAMES
        }
        assert port not in bolt.host.supervisor._spawner.ports.held
        assert port not in sockdiag.listening_ports(port, port)
        for name in NAMES:
            assert re.search(r"stopping \(by admin\)\n.*stopped", log_of(bolt, name), re.S), name
        assert "TERM" in log_of(bolt, "slow")  # a graceful stop: SIGTERM first


async def test_a_bulk_stop_answers_420_for_an_app_that_is_not_running_and_stops_the_others(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "quick", "import signal\nsignal.pause()\n")
    write_app(repo, "idle", "import signal\nsignal.pause()\n")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        for name in ("quick", "idle"):
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        await bolt.admin.post("/api/apps/start", json={"name": "quick"})
        answer = await bolt.admin.post("/api/apps/stop", json={"names": ["quick", "idle"]})
        body = answer.json()["body"]
        assert [context["name"] for context in body["stopped"]] == ["quick"]
        assert body["failed"] == {"idle": {"code": 420, "message": "App 'idle' is not running"}}


async def test_a_bulk_stop_whose_state_write_fails_answers_no_app_as_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    for name in ("one", "two"):
        write_app(repo, name, "import signal\nsignal.pause()\n")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        for name in ("one", "two"):
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        started = (await bolt.admin.post("/api/apps/start", json={"names": ["one", "two"]})).json()["body"]
        pids = [context["pid"] for context in started["started"]]

        def disk_full(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
        answer = (await bolt.admin.post("/api/apps/stop", json={"names": ["one", "two"]})).json()["body"]
        monkeypatch.undo()
        assert answer["stopped"] == []
        assert {name: failure["code"] for name, failure in answer["failed"].items()} == {"one": 1000, "two": 1000}
        assert all(_gone(pid) for pid in pids)  # the trees are gone all the same
        await bolt.host.runtime_state.commit()  # the next write that succeeds saves the stopped states
        on_disk = json.loads((tmp_path / "data" / "runtime.json").read_text())["supervisor"]
        assert {name: on_disk[name]["desired"] for name in ("one", "two")} == {"one": "stopped", "two": "stopped"}


async def test_a_bulk_stops_events_reach_a_subscriber_in_order_and_a_start_after_it_comes_after(
    tmp_path: Path,
) -> None:
    names = ["one", "two", "three"]
    async with _three_running_and_heard(tmp_path, "import signal\nsignal.pause()\n") as (bolt, pids, heard):
        body = (await bolt.admin.post("/api/apps/stop", json={"names": names})).json()["body"]
        assert body["failed"] == {} and len(body["stopped"]) == len(names)
        again = (await bolt.admin.post("/api/apps/start", json={"name": "one"})).json()["body"]
        await bolt.host.events.drain()

        assert [event[0] for event in heard] == sorted(event[0] for event in heard)  # delivered in id order
        for name in names:
            told = [(what, status, pid) for _, what, app, status, pid in heard if app == name]
            assert told[:2] == [("app-stopping", "stopping", pids[name]), ("app-stopped", "stopped", None)], told
        assert [what for _, what, app, _, _ in heard if app == "one"][2:] == ["app-starting", "app-started"]
        assert heard[-1][4] == again["pid"]
        await bolt.admin.post("/api/apps/stop", json={"name": "one"})


@contextlib.asynccontextmanager
async def _three_running_and_heard(
    tmp_path: Path, code: str
) -> AsyncIterator[tuple[RunningHost, dict[str, int], list[tuple[int, str, str, str, int | None]]]]:
    """A host running apps ``one``, ``two`` and ``three`` (``code``), their pids, and the app
    events heard from here on."""
    repo = tmp_path / "repo"
    names = ["one", "two", "three"]
    for name in names:
        write_app(repo, name, code)
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        pids = await _installed_and_started(bolt, names)
        await bolt.host.events.drain()
        yield bolt, pids, _hear_app_events(bolt)


def _hear_app_events(bolt: RunningHost) -> list[tuple[int, str, str, str, int | None]]:
    """Every ``app-*`` event from now on, as it reaches a listener: (id, name, app, status, pid)."""
    heard: list[tuple[int, str, str, str, int | None]] = []
    bolt.host.events.subscribe(
        lambda event: heard.append((event.id, event.name, event.body["name"], event.body["status"], event.body["pid"]))
        if event.name.startswith("app-")
        else None
    )
    return heard


async def _installed_and_started(bolt: RunningHost, names: list[str]) -> dict[str, int]:
    """Install ``names`` from the host's local repository and start them in one call: their pids."""
    for name in names:
        assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
    started = (await bolt.admin.post("/api/apps/start", json={"names": names})).json()["body"]
    assert started["failed"] == {}
    return {context["name"]: context["pid"] for context in started["started"]}


def _release(gate: Path) -> bool:
    """Open the app's FIFO for writing and close it (its reader then ends); False while no one reads."""
    try:
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


@needs_root
async def test_a_bulk_stop_records_every_app_as_stopped_on_disk_while_the_trees_still_end(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "quick", "import signal\nsignal.pause()\n")
    write_app(repo, "gated", GATED)
    names = ["quick", "gated"]
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=60.0) as bolt:
        for name in names:
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        started = (await bolt.admin.post("/api/apps/start", json={"names": names})).json()["body"]
        gated = next(context["pid"] for context in started["started"] if context["name"] == "gated")
        await wait_for_line(bolt, "gated", "UP")
        runtime_json = tmp_path / "data" / "runtime.json"

        def stopped_on_disk() -> bool:
            records = json.loads(runtime_json.read_text())["supervisor"]
            return all(records[name]["desired"] == "stopped" for name in names)

        async def intents_on_disk(stopping: asyncio.Task[httpx.Response]) -> None:
            await async_wait_until(stopped_on_disk, timeout=30, what="the stop's intents on disk")
            assert not _gone(gated) and not stopping.done()  # its tree cannot end before the gate opens

        answer = await _stop_opening_gate(bolt, names, tmp_path / "data" / "home" / "gated" / "gate", intents_on_disk)
        body = answer.json()["body"]
        assert body["failed"] == {} and sorted(context["name"] for context in body["stopped"]) == sorted(names)
        assert _gone(gated)


async def _stop_opening_gate(
    bolt: RunningHost, names: list[str], gate: Path, before: Callable[[asyncio.Task[httpx.Response]], Awaitable[None]]
) -> httpx.Response:
    """Stop ``names`` in one call; once ``before(the call)`` has returned, open the gated app's
    ``gate`` (its FIFO: the app ends when it can read it); the call's answer."""
    stopping = asyncio.create_task(bolt.admin.post("/api/apps/stop", json={"names": names}))
    try:
        await before(stopping)
        await async_wait_until(lambda: _release(gate), timeout=30, what="the gated app reading its gate")
        return await stopping
    finally:
        if not stopping.done():
            stopping.cancel()
            with contextlib.suppress(BaseException):
                await stopping


@needs_root
async def test_a_bulk_stop_signals_every_app_before_it_records_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each SIGTERM'd app wakes and competes with the host for the CPU (its cgroup is the host's
    # sibling), so the host's bookkeeping must not sit between two signals of one call.
    repo = tmp_path / "repo"
    names = [f"app{i}" for i in range(4)]
    for name in names:
        write_app(repo, name, "import signal\nprint('UP', flush=True)\nsignal.pause()\n")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        groups = set((await _installed_and_started(bolt, names)).values())  # each main process leads its group
        seen: list[tuple[str, object]] = []
        killpg, state = os.killpg, bolt.host.runtime_state
        put = state.put

        def signalling(pgid: int, sig: int) -> None:
            if sig == signal.SIGTERM:
                seen.append(("SIGTERM", pgid))
            killpg(pgid, sig)

        def recording(section: str, key: str, row: dict[str, object]) -> bool:
            if section == "supervisor":
                seen.append(("record", key))
            return put(section, key, row)

        monkeypatch.setattr(os, "killpg", signalling)  # the real calls, in the order they are made
        monkeypatch.setattr(state, "put", recording)
        body = (await bolt.admin.post("/api/apps/stop", json={"names": names})).json()["body"]
        monkeypatch.undo()

        assert body["failed"] == {} and len(body["stopped"]) == len(names)
        assert {what for kind, what in seen if kind == "SIGTERM"} == groups
        signals = [at for at, (kind, _) in enumerate(seen) if kind == "SIGTERM"]
        records = [at for at, (kind, _) in enumerate(seen) if kind == "record"]
        assert {key for kind, key in seen if kind == "record"} == set(names)
        assert max(signals) < min(records), seen
        assert all(_gone(pid) for pid in groups)


async def test_a_bulk_stop_of_a_running_and_a_starting_app_stops_both_and_frees_their_locks(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "running", "import signal\nsignal.pause()\n")
    never_listens = "import signal\nprint('UP', flush=True)\nsignal.pause()\n"
    write_app(repo, "starting", never_listens, server=True)
    names = ["running", "starting"]
    async with running_host(tmp_path / "data", local_repo=repo, ready_timeout_seconds=60.0) as bolt:
        for name in names:
            assert (await bolt.admin.post("/api/apps/local", json={"path": name})).status_code == 201
        await bolt.admin.post("/api/apps/start", json={"name": "running"})
        starting = asyncio.create_task(bolt.admin.post("/api/apps/start", json={"name": "starting"}))
        try:
            await wait_for_line(bolt, "starting", "UP")
            supervisor = bolt.host.supervisor
            assert (supervisor.context("starting") or {}).get("status") == "starting"
            body = (await bolt.admin.post("/api/apps/stop", json={"names": names})).json()["body"]
            refused = (await starting).json()
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
        assert body["failed"] == {}
        assert {context["name"]: context["status"] for context in body["stopped"]} == dict.fromkeys(names, "stopped")
        assert refused["code"] != 0 and "cancelled by a stop" in refused["error"]["message"]
        assert all(_gone(context["pid"]) for context in body["stopped"])
        # each lock goes back once what follows the answer (the app's notes and events) is done
        await async_wait_until(
            lambda: [supervisor._apps[name].lock.locked() for name in names] == [False, False], what="both locks free"
        )
        again = (await bolt.admin.post("/api/apps/start", json={"name": "running"})).json()["body"]
        assert again["status"] == "running"
        await bolt.admin.post("/api/apps/stop", json={"name": "running"})


async def test_a_bulk_stop_answers_before_its_notes_yet_a_read_and_a_start_right_after_see_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a client can observe (the trees gone, the apps stopped, their intents on disk, the
    # events' places in the bus's order) comes before the answer; the log notes and pid-less
    # records follow it, under each app's lock, so a start right after the answer waits for them.
    names = ["one", "two", "three"]
    code = "import signal\nprint('UP', flush=True)\nsignal.pause()\n"
    async with _three_running_and_heard(tmp_path, code) as (bolt, pids, heard):
        supervisor = bolt.host.supervisor
        seen: list[tuple[str, str]] = []
        stop_apps, runlog = supervisor.stop_apps, supervisor._runlog
        note = runlog.note

        async def stopping_apps(names: list[str], by: str | None = None) -> list[object]:
            results = await stop_apps(names, by=by)
            seen.append(("", "answered"))  # the handler encodes the answer from these, without a wait
            return list(results)

        def noting(runtime: object, text: str) -> None:
            seen.append((getattr(runtime, "name", ""), text))
            note(runtime, text)  # type: ignore[arg-type]

        monkeypatch.setattr(supervisor, "stop_apps", stopping_apps)  # the real calls, in the order made
        monkeypatch.setattr(runlog, "note", noting)
        body = (await bolt.admin.post("/api/apps/stop", json={"names": names})).json()["body"]
        live = (await bolt.admin.get("/api/apps/@live")).json()["body"]
        again = (await bolt.admin.post("/api/apps/start", json={"name": "one"})).json()["body"]
        await async_wait_until(
            lambda: {name for name, text in seen if text.startswith("stopped")} == set(names), what="the stopped notes"
        )
        await bolt.host.events.drain()
        monkeypatch.undo()

        assert body["failed"] == {}
        assert {c["name"]: (c["status"], c["pid"]) for c in body["stopped"]} == {n: ("stopped", pids[n]) for n in names}
        assert not {context["name"] for context in live} & set(names)  # stopped, not "stopping", right after
        assert again["status"] == "running" and again["pid"] != pids["one"]
        answered = seen.index(("", "answered"))
        assert all(seen.index((name, "stopping (by admin)")) > answered for name in names), seen
        noted = [text for name, text in seen if name == "one"]
        assert [text.split(" ")[0] for text in noted] == ["stopping", "stopped", "starting", "started"], noted
        assert re.search(r"stopping \(by admin\)\n.*stopped.*\n.*starting\n", log_of(bolt, "one"), re.S)
        for name in names:  # each event once, as before: stopping (with the pid), stopped, then the start's
            told = [(what, status, pid) for _, what, app, status, pid in heard if app == name]
            assert told[:2] == [("app-stopping", "stopping", pids[name]), ("app-stopped", "stopped", None)], told
            assert [what for what, *_ in told[2:]] == (["app-starting", "app-started"] if name == "one" else [])
        await bolt.admin.post("/api/apps/stop", json={"name": "one"})


@needs_root
async def test_a_host_killed_right_after_a_bulk_stops_answer_boots_with_the_apps_stopped(tmp_path: Path) -> None:
    # The answer comes before the stop's notes and pid-less records: a host killed right after it
    # must still find every app meant to be stopped (its intent was on disk before the answer).
    repo, data = tmp_path / "repo", tmp_path / "data"
    names = ["one", "two", "three"]
    for name in names:
        write_app(repo, name, "import signal\nprint('UP', flush=True)\nsignal.pause()\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(data, repo, port, tmp_path / "first.log")
    try:
        async with httpx.AsyncClient(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
            await _answering(admin, first)
            for name in names:
                assert (await admin.post("/api/apps/local", json={"path": name})).status_code == 201
            started = (await admin.post("/api/apps/start", json={"names": names})).json()["body"]
            pids = [context["pid"] for context in started["started"]]
            assert started["failed"] == {} and len(pids) == len(names)
            answer = await admin.post("/api/apps/stop", json={"names": names})
            first.kill()  # right after the answer: what follows it may not have run
            assert answer.json()["body"]["failed"] == {}
        first.wait(timeout=30)
        assert all(_gone(pid) for pid in pids)
        records = json.loads((data / "runtime.json").read_text())["supervisor"]
        assert {name: records[name]["desired"] for name in names} == dict.fromkeys(names, "stopped")

        second = _serve(data, repo, port, tmp_path / "second.log")  # autostart on: starts what is meant to run
        try:
            async with httpx.AsyncClient(base_url=url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
                await _answering(admin, second)
                assert (await admin.get("/api/apps/@live")).json()["body"] == []
                again = (await admin.post("/api/apps/start", json={"name": "one"})).json()["body"]
                assert again["status"] == "running" and again["pid"] not in pids
                assert (await admin.post("/api/apps/stop", json={"name": "one"})).status_code == 200
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn ends by its signal once shut down
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)


def _serve(data: Path, repo: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``python -m bolt_host serve`` on ``data`` in a session of its own, its output in ``log``."""
    argv = [sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir", str(data)]
    env = {**os.environ, "BOLT_ADMIN_PASSWORD": ADMIN_PASSWORD, "BOLT_DEVICE_MODE": "off"}
    with log.open("ab") as output:
        return subprocess.Popen(
            [*argv, "--local-repo", str(repo), "--log-level", "warning"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )


async def _answering(admin: httpx.AsyncClient, host: subprocess.Popen[bytes]) -> None:
    async def up() -> bool:
        assert host.poll() is None, f"the host exited with {host.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            return (await admin.get("/-/health")).status_code == 200
        return False

    await async_wait_until(up, timeout=60, what="the host answering")
