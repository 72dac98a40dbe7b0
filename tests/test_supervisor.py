"""Supervisor lifecycle with real processes: start, readiness, stop, trees, env, logs, stats."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bolt_host.errors import APP_NOT_RUNNING, APP_START_FAILED, BoltError
from bolt_host.services import applogs
from bolt_host.services.applogs import read_range
from bolt_host.services.ports import is_port_free
from bolt_host.services.proctable import data_dir_id
from bolt_host.services.stats import StatsSampler
from bolt_host.statefile import StateFile
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import (
    Harness,
    marked_pids,
    process_gone,
    read_pid_file,
    supervisor_harness,
    wait_file,
)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with supervisor_harness(tmp_path) as running:
        yield running


async def get_json(port: int, path: str) -> dict:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        response.raise_for_status()
        return response.json()


async def test_start_waits_for_health_then_stop_frees_the_port(harness: Harness) -> None:
    app = harness.app("web", "http_server.py", health="/health", env={"SECRET_SETTING": "s3cr3t"})
    supervisor = harness.supervisor()
    await supervisor.boot()

    context = await supervisor.start_app(app)

    assert context["status"] == "running"
    assert harness.port_range[0] <= context["port"] <= harness.port_range[1]
    assert (await get_json(context["port"], "/whoami"))["pid"] == context["pid"]
    assert context["startedAt"].endswith("Z") and context["host"] == "127.0.0.1"
    assert "env" not in context["app"] and "s3cr3t" not in json.dumps(context)
    assert "BOLT_APP_TOKEN" not in json.dumps(context)
    assert supervisor.is_active("web") and [c["name"] for c in supervisor.contexts()] == ["web"]

    final = await supervisor.stop_app("web")

    assert final["status"] == "stopped"
    assert (final["pid"], final["port"]) == (context["pid"], context["port"])  # the answer says what ran, as Bolt
    assert supervisor.context("web")["pid"] is None
    assert process_gone(context["pid"])
    assert is_port_free(context["port"])
    assert not supervisor.is_active("web") and supervisor.contexts() == []
    assert harness.event_names("web") == ["app-starting", "app-started", "app-stopping", "app-stopped"]
    on_disk = StateFile(harness.state.path)  # what a restarted host would read
    record = on_disk.get("supervisor", "web")
    assert record["desired"] == "stopped" and record["pid"] is None
    assert on_disk.get("app_tokens", "web") is None


async def test_concurrent_starts_make_exactly_one_process(harness: Harness) -> None:
    app = harness.app("twin", "http_server.py")
    supervisor = harness.supervisor()
    await supervisor.boot()

    contexts = await asyncio.gather(*(supervisor.start_app(app) for _ in range(5)))

    assert len({context["pid"] for context in contexts}) == 1
    assert marked_pids("twin") == [contexts[0]["pid"]]
    assert harness.event_names("twin").count("app-started") == 1


async def test_mixed_concurrent_commands_end_consistent(harness: Harness) -> None:
    app = harness.app("mixed", "http_server.py", health="/health")
    supervisor = harness.supervisor()
    await supervisor.boot()

    results = await asyncio.gather(
        supervisor.start_app(app),
        supervisor.restart_app(app),
        supervisor.stop_app("mixed"),
        supervisor.start_app(app),
        supervisor.restart_app(app),
        return_exceptions=True,
    )

    for result in results:
        assert isinstance(result, dict) or (isinstance(result, BoltError) and result.code == APP_START_FAILED)
    context = supervisor.context("mixed")
    assert context is not None and context["status"] == "running"
    assert marked_pids("mixed") == [context["pid"]]
    assert (await get_json(context["port"], "/whoami"))["pid"] == context["pid"]


async def test_stop_during_starting_cancels_the_start_and_kills(harness: Harness) -> None:
    app = harness.app("slow", "never_listens.py")
    supervisor = harness.supervisor(ready_timeout=60)
    await supervisor.boot()
    start = asyncio.create_task(supervisor.start_app(app))
    starting = await async_wait_until(
        lambda: (c := supervisor.context("slow")) and c["status"] == "starting" and c["pid"] and c,
        what="slow to be spawned",
    )

    final = await supervisor.stop_app("slow")

    assert final["status"] == "stopped"
    with pytest.raises(BoltError) as failure:
        await start
    assert failure.value.code == APP_START_FAILED
    assert process_gone(starting["pid"])
    assert is_port_free(starting["port"])


async def test_stop_right_after_start_leaves_nothing_behind(harness: Harness) -> None:
    app = harness.app("blink", "http_server.py")
    supervisor = harness.supervisor()
    await supervisor.boot()

    start, stop = await asyncio.gather(supervisor.start_app(app), supervisor.stop_app("blink"), return_exceptions=True)

    assert isinstance(start, BoltError) and start.code == APP_START_FAILED
    assert isinstance(stop, dict) and stop["status"] == "stopped"
    assert marked_pids("blink") == []


async def test_stop_of_an_app_that_is_not_running_is_420(harness: Harness) -> None:
    app = harness.app("idle", "http_server.py")
    supervisor = harness.supervisor()
    await supervisor.boot()

    with pytest.raises(BoltError) as never_started:
        await supervisor.stop_app("idle")
    await supervisor.start_app(app)
    await supervisor.stop_app("idle")
    with pytest.raises(BoltError) as already_stopped:
        await supervisor.stop_app("idle")

    assert never_started.value.code == APP_NOT_RUNNING
    assert already_stopped.value.code == APP_NOT_RUNNING


async def test_stop_kills_a_term_ignoring_tree_including_a_setsid_escaper(harness: Harness) -> None:
    pid_file = harness.tmp_path / "tree.pids"
    app = harness.app("tree", "term_ignoring_tree.py", str(pid_file), stopGraceSeconds=0.3)
    supervisor = harness.supervisor()
    await supervisor.boot()
    context = await supervisor.start_app(app)
    main, child, grandchild = read_pid_file(await wait_file(pid_file))
    harness.track(main, child, grandchild)
    assert main == context["pid"]
    assert os.getsid(grandchild) != os.getsid(main)  # it really left the session

    final = await supervisor.stop_app("tree")

    assert final["status"] == "stopped"
    assert all(process_gone(pid) for pid in (main, child, grandchild))
    assert is_port_free(context["port"])


async def test_app_exiting_at_once_fails_with_its_last_log_lines(harness: Harness) -> None:
    app = harness.app("quitter", "exit_code.py", "3")
    supervisor = harness.supervisor()
    await supervisor.boot()

    with pytest.raises(BoltError) as failure:
        await supervisor.start_app(app)

    assert failure.value.code == APP_START_FAILED
    assert "exited with code 3" in failure.value.message
    assert "fatal: cannot go on" in failure.value.message
    context = supervisor.context("quitter")
    assert context["status"] == "failed" and context["exitCode"] == 3
    assert "boot line 29" in context["reason"] and "boot line 5\n" not in context["reason"]
    assert "app-failed" in harness.event_names("quitter")
    assert context["port"] is None and not supervisor.is_active("quitter")
    with pytest.raises(BoltError) as stop_failed:
        await supervisor.stop_app("quitter")
    assert stop_failed.value.code == APP_NOT_RUNNING


async def test_app_never_ready_fails_and_its_tree_is_killed(harness: Harness) -> None:
    pid_file = harness.tmp_path / "tree.pids"
    app = harness.app("deaf", "term_ignoring_tree.py", str(pid_file), stopGraceSeconds=0.2, health="/health")
    supervisor = harness.supervisor(ready_timeout=1.0)
    await supervisor.boot()

    with pytest.raises(BoltError) as failure:
        await supervisor.start_app(app)

    assert "not ready within 1 s" in failure.value.message and "tree up" in failure.value.message
    pids = read_pid_file(pid_file)
    harness.track(*pids)
    assert all(process_gone(pid) for pid in pids)
    assert supervisor.context("deaf")["status"] == "failed"


async def test_environment_holds_only_what_is_allowed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOLT_ADMIN_PASSWORD", "host-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("HOME", "/root")
    dump = harness.tmp_path / "env.json"

    async def plugin_env(app: dict) -> dict[str, str]:
        return {"PLUGIN_VALUE": f"for-{app['name']}", "BOLT_APP_NAME": "spoofed"}

    app = harness.app("envy", "env_dump.py", str(dump), server=False, env={"APP_SETTING": "x", "HOST": "0.0.0.0"})
    supervisor = harness.supervisor(extra_env=plugin_env)
    await supervisor.boot()
    context = await supervisor.start_app(app)

    env = json.loads((await wait_file(dump)).read_text())

    assert set(env) == {
        "PATH", "LANG", "HOME", "TZ", "APP_SETTING", "PLUGIN_VALUE", "HOST",
        "BOLT_APP_NAME", "BOLT_APP_TOKEN", "BOLT_HOST_URL", "BOLT_SUPERVISOR_ID", "BOLT_CHILD_PROC",
    }  # fmt: skip
    assert env["HOST"] == "127.0.0.1" and env["BOLT_APP_NAME"] == "envy"
    assert env["PLUGIN_VALUE"] == "for-envy" and env["APP_SETTING"] == "x"
    assert env["BOLT_CHILD_PROC"] == "true"  # as Bolt marks its child apps
    assert env["BOLT_SUPERVISOR_ID"] == f"envy:1@{data_dir_id(harness.data_dir)}"  # the host's id: see app_marker
    assert env["BOLT_HOST_URL"] == "http://127.0.0.1:4000"
    assert harness.tokens.app_for(env["BOLT_APP_TOKEN"]) == "envy"
    assert "port" not in context
    await supervisor.stop_app("envy")
    assert harness.tokens.app_for(env["BOLT_APP_TOKEN"]) is None


async def test_stats_report_memory_of_the_running_tree(harness: Harness) -> None:
    app = harness.app("measured", "http_server.py")
    supervisor = harness.supervisor(stats_interval=0.05)
    await supervisor.boot()
    await supervisor.start_app(app)

    context = await async_wait_until(
        lambda: (c := supervisor.context("measured")) and c["memory"] > 0 and c, what="a stats sample"
    )

    assert context["memory"] > 1_000_000  # a Python interpreter's RSS
    assert isinstance(context["cpu"], float) and context["uptime"] > 0
    assert supervisor.contexts()[0]["memory"] > 0
    live = json.loads(supervisor.contexts_json())  # what GET /api/apps/@live sends
    expected = supervisor.contexts()
    for row in (*live, *expected):
        row.pop("uptime")
    assert live == expected


async def test_stats_come_from_one_pass_per_interval_and_rest_while_nobody_reads(harness: Harness) -> None:
    app = harness.app("watched", "http_server.py")
    supervisor = harness.supervisor(stats_interval=0.05)
    supervisor._stats.idle_interval = 3600.0
    await supervisor.boot()
    await supervisor.start_app(app)
    sampler = supervisor._stats
    await async_wait_until(lambda: supervisor.context("watched")["memory"] > 0, what="a first sample")

    first, began = sampler.passes, time.monotonic()
    for _ in range(400):  # reads are served from the cache ...
        supervisor.contexts_json()
        await asyncio.sleep(0.001)  # ok: paces the reads over a few intervals
    elapsed = time.monotonic() - began
    assert 1 <= sampler.passes - first <= elapsed / 0.05 + 2  # ... with at most one pass per interval

    resting = sampler.passes
    await asyncio.sleep(0.5)  # ok: ten intervals in which nobody reads the figures
    # At most the pass in flight when the reads stopped, and one more if a read landed after that
    # pass began (it cleared the flag before the read); then none until someone reads.
    assert sampler.passes - resting <= 2
    before_reading = sampler.passes
    supervisor.contexts()
    await async_wait_until(lambda: sampler.passes > before_reading, what="a pass once someone reads again")


async def _resting(sampler: StatsSampler, window: float = 0.25) -> int:
    """Poll (deadline 30 s) until the sampler made no pass for ``window`` seconds and none is
    running (on a loaded machine one pass can outlast the window); its count."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        before = sampler.passes
        await asyncio.sleep(window)  # ok: "no pass for a while" can only be seen by waiting
        if sampler.passes == before and not sampler.sampling:
            return before
    raise AssertionError("the stats sampler never rested")


async def test_starts_and_the_hosts_own_events_do_not_wake_the_stats_sampler(harness: Harness) -> None:
    """Only readers keep passes coming: a start (its answer is the context of a pid never
    measured) and a crash restart publish events whose bodies are contexts, and while nobody
    reads the figures no pass follows (at 200 starts such passes over every running tree took
    the CPU the apps needed)."""
    app = harness.app("quiet", "http_server.py")
    supervisor = harness.supervisor(stats_interval=0.05)
    supervisor._stats.idle_interval = 3600.0
    await supervisor.boot()
    sampler = supervisor._stats
    booted = await _resting(sampler)
    first = (await supervisor.start_app(app))["pid"]
    resting = await _resting(sampler)
    assert resting == booted

    os.kill(first, signal.SIGKILL)
    await async_wait_until(
        lambda: any(name == "app-started" and body["pid"] not in (None, first) for name, body in harness.events),
        what="the restart's app-started event",
    )
    assert await _resting(sampler) == resting  # crash, restart and their events: no pass
    supervisor.contexts()
    await async_wait_until(lambda: sampler.passes > resting, what="a pass once someone reads")


async def test_a_1mb_output_burst_does_not_block_the_app(harness: Harness) -> None:
    done = harness.tmp_path / "done"
    app = harness.app("chatty", "chatty.py", str(1024 * 1024), str(done), server=False)
    supervisor = harness.supervisor()
    await supervisor.boot()
    await supervisor.start_app(app)

    await wait_file(done, timeout=30)

    log_path = supervisor.log_path("chatty")
    assert log_path.stat().st_size > 1024 * 1024
    text, more, total = read_range(log_path, 1024 * 1024, None)
    # the host's own "started" line may come after the output: a fast app can finish first
    output = "".join(line for line in text.splitlines(keepends=True) if "[bolt-host]" not in line)
    assert output.endswith("multibyte tail \u20ac\n") and more is False and total > 1024 * 1024
    assert supervisor.context("chatty")["status"] == "running"


async def test_log_is_rotated_when_the_app_restarts(harness: Harness) -> None:
    done = harness.tmp_path / "done"
    app = harness.app("rotating", "chatty.py", "5000", str(done), server=False)
    supervisor = harness.supervisor(log_max_bytes=1000, log_keep=2)
    await supervisor.boot()
    await supervisor.start_app(app)
    await wait_file(done)
    done.unlink()

    await supervisor.restart_app(app)
    await wait_file(done)

    log_path = supervisor.log_path("rotating")
    rotated = log_path.with_name("rotating.log.1")
    assert rotated.stat().st_size > 5000
    assert log_path.stat().st_size > 5000
    assert not log_path.with_name("rotating.log.3").exists()
    assert supervisor.context("rotating")["restarts"] == 1
    await supervisor.stop_app("rotating")
    assert supervisor.rotate_logs() == ["rotating"]
    assert not log_path.exists() and log_path.with_name("rotating.log.2").exists()


async def test_a_running_apps_log_is_rotated_in_place_without_losing_a_line(harness: Harness) -> None:
    """The app keeps its stdout open: its log's head moves to .1 and is cut out of the file;
    every numbered line is in .1 or the log, once, in order, and the app writes on."""
    control = harness.tmp_path / "control"
    control.mkdir()
    app = harness.app("steady", "numbered.py", "6", "8000", str(control), server=False)
    supervisor = harness.supervisor(log_max_bytes=64 * 1024, log_keep=1)
    await supervisor.boot()
    await supervisor.start_app(app)
    log_path = supervisor.log_path("steady")
    followed: list[str] = []

    async def follow() -> None:  # a live log viewer, open across every cut
        async for text in applogs.follow(log_path, poll_interval=0.01):
            followed.append(text)

    viewer = asyncio.create_task(follow())
    cuts = 0
    try:
        for batch in range(6):
            await wait_file(control / f"batch-{batch}")
            last = f"line {(batch + 1) * 8000 - 1}\n"
            await async_wait_until(lambda last=last: last in "".join(followed[-3:]), what="the viewer to catch up")
            cuts += len(supervisor.rotate_logs())
            (control / f"go-{batch}").touch()
        await wait_file(control / "done")
        await async_wait_until(lambda: "line 47999\n" in "".join(followed[-3:]), what="the viewer at the end")
    finally:
        viewer.cancel()
        await asyncio.wait({viewer})

    assert cuts >= 3 and log_path.stat().st_size < 2 * 64 * 1024
    kept = log_path.with_name("steady.log.1").read_bytes() + log_path.read_bytes()
    app_lines = [line for line in kept.decode().splitlines() if " [bolt-host] " not in line]  # the host's notes
    numbers = [int(line.split()[1]) for line in app_lines[1:]]  # the first may be cut
    assert numbers == list(range(numbers[0], 48000)), "a line lost or doubled across a cut"
    followed_lines = [line for line in "".join(followed).splitlines() if " [bolt-host] " not in line]
    assert [int(line.split()[1]) for line in followed_lines] == list(range(48000))
    await supervisor.stop_app("steady")


async def test_missing_command_or_folder_fails_cleanly(harness: Harness) -> None:
    supervisor = harness.supervisor()
    await supervisor.boot()
    no_binary = harness.app("nobin", "http_server.py", start=["/nonexistent/binary"])

    with pytest.raises(BoltError) as failure:
        await supervisor.start_app(no_binary)
    assert failure.value.code == APP_START_FAILED
    assert supervisor.context("nobin")["status"] == "failed"
    assert supervisor.context("nobin")["port"] is None


async def test_an_app_with_nothing_to_run_is_serverless(harness: Harness) -> None:
    """Neither start nor main (issue 13): Bolt's bare context, no process, stoppable, startable again."""
    supervisor = harness.supervisor()
    await supervisor.boot()
    app = harness.app("nocmd", "http_server.py", start=None, main=None)

    context = await supervisor.start_app(app)
    assert set(context) == {"name", "path", "app"} and context["name"] == "nocmd"
    assert supervisor.is_active("nocmd") and supervisor.context("nocmd")["pid"] is None
    assert await supervisor.start_app(app) == context  # idempotent
    stopped = await supervisor.stop_app("nocmd")
    assert stopped["status"] == "stopped" and not supervisor.is_active("nocmd")
    await supervisor.start_app(app)
    assert supervisor.context("nocmd")["status"] == "running"


async def test_the_stats_sampler_stops_even_when_a_read_lands_with_the_stop() -> None:
    """A read sets the sampler's wake-up event; a stop cancelling it at that moment must still end it."""
    for _ in range(50):
        sampler = StatsSampler(0.001, lambda: {}, lambda: {}, idle_interval=60.0)
        sampler.start()
        await async_wait_until(lambda s=sampler: s.latest("x", None) is None and s.passes >= 2, what="passes")
        sampler.latest("nothing", None)  # a read, then at once a stop
        async with asyncio.timeout(5):
            await sampler.stop()
