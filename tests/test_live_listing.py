"""``GET /api/apps/@live`` from the supervisor's encoded contexts: every change shows at once,
and ``fields`` selects members."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bolt_host.errors import APP_START_FAILED, BoltError
from bolt_host.services.app_runtime import LIVE_STATUSES, AppRuntime, encode_json
from bolt_host.services.stats import TreeUsage
from bolt_host.services.supervisor import Supervisor
from bolt_host.web.envelope import OK_HEAD, OK_TAIL
from tests.helpers import async_wait_until
from tests.test_supervisor_harness import Harness, supervisor_harness

CHANGING = ("uptime",)  # read from the clock on each call, so two calls differ


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with supervisor_harness(tmp_path) as running:
        yield running


def listing(supervisor: Supervisor, fields: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(supervisor.contexts_json(fields))}


def assert_listing_is_current(supervisor: Supervisor) -> dict[str, dict[str, Any]]:
    """The encoded listing says what the supervisor's unencoded contexts say right now."""
    listed = listing(supervisor)
    for name, row in listed.items():
        current = supervisor.context(name)
        assert current is not None
        for key in CHANGING:
            row.pop(key), current.pop(key)
        assert row == current, name
    return listed


async def test_the_listing_shows_each_change_right_after_it_happens(harness: Harness) -> None:
    app = harness.app("svc", "http_server.py")
    failing = harness.app("broken", "exit_code.py", "3")
    supervisor = harness.supervisor()
    await supervisor.boot()
    started = await supervisor.start_app(app)
    first = assert_listing_is_current(supervisor)["svc"]
    assert first["status"] == "running" and first["pid"] == started["pid"] and first["restarts"] == 0

    os.kill(started["pid"], signal.SIGKILL)  # crash, restart: pid, status, restarts, lastExit change

    def restarted() -> bool:
        listed = assert_listing_is_current(supervisor)  # read between every step of the restart
        return listed["svc"]["status"] == "running" and listed["svc"]["pid"] != started["pid"]

    await async_wait_until(restarted, timeout=20, what="a new process listed after kill -9")
    again = assert_listing_is_current(supervisor)["svc"]
    assert again["restarts"] == 1 and again["port"] is not None
    harness.track(again["pid"])

    await supervisor.stop_app("svc")
    assert "svc" not in assert_listing_is_current(supervisor)  # stopped cleanly: no longer listed

    with pytest.raises(BoltError) as failed:
        await supervisor.start_app(failing)
    assert failed.value.code == APP_START_FAILED
    errored = assert_listing_is_current(supervisor)["broken"]
    assert errored["errored"] is True and errored["lastExit"]["code"] == 3 and errored["pid"] is None

    await supervisor.start_app(app)  # a fresh start after a stop is listed with its new pid
    fresh = assert_listing_is_current(supervisor)["svc"]
    harness.track(fresh["pid"])
    assert fresh["status"] == "running" and fresh["pid"] not in (None, started["pid"], again["pid"])


async def test_fields_select_the_members_of_each_context(harness: Harness) -> None:
    server = harness.app("web", "http_server.py")
    worker = harness.app("worker", "http_server.py", server=False)
    supervisor = harness.supervisor()
    await supervisor.boot()
    for app in (server, worker):
        harness.track((await supervisor.start_app(app))["pid"])
    full = assert_listing_is_current(supervisor)

    light = listing(supervisor, frozenset({"name", "status", "pid"}))
    assert light == {name: {key: row[key] for key in ("name", "status", "pid")} for name, row in full.items()}

    mixed = listing(supervisor, frozenset({"name", "memory", "port", "app"}))
    assert set(mixed["web"]) == {"name", "memory", "port", "app"}
    assert set(mixed["worker"]) == {"name", "memory", "app"}  # port: server apps only, as in full contexts
    assert mixed["web"]["app"] == full["web"]["app"] and mixed["web"]["port"] == full["web"]["port"]
    assert isinstance(mixed["web"]["memory"], int)

    await supervisor.stop_app("web")  # a selection is dropped with the change too
    assert set(listing(supervisor, frozenset({"name", "status", "pid"}))) == {"worker"}


async def test_each_context_copies_the_apps_containers_and_shares_its_strings(harness: Harness) -> None:
    """A context's ``app`` is the caller's to change, yet makes no new strings: decoding the kept
    JSON for every context (events, start answers) made about 70 objects each, 1.5-2 MB of heap
    after a bulk start of 200 apps."""
    app = harness.app("svc", "http_server.py")
    supervisor = harness.supervisor()
    await supervisor.boot()
    harness.track((await supervisor.start_app(app))["pid"])
    first, second = supervisor.context("svc"), supervisor.context("svc")
    assert first is not None and second is not None and first["app"] == second["app"]
    strings = [key for key, value in first["app"].items() if isinstance(value, str) and len(value) > 1]
    containers = [key for key, value in first["app"].items() if isinstance(value, dict | list)]
    assert "name" in strings and containers
    assert all(first["app"][key] is second["app"][key] for key in strings)
    assert all(first["app"][key] is not second["app"][key] for key in containers)

    for key in containers:  # what a listener or a caller might do with what it got
        value = first["app"][key]
        value.append("changed") if isinstance(value, list) else value.update(changed=True)
    first["app"]["name"] = "changed"
    third = supervisor.context("svc")
    assert third is not None and third["app"] == second["app"]
    assert json.loads(supervisor.contexts_json())[0]["app"] == second["app"]


SELECTIONS = (
    None,
    frozenset({"name", "status", "pid"}),
    frozenset({"name", "uptime"}),
    frozenset({"memory", "app", "port"}),
)


def fresh_encoding(supervisor: Supervisor, fields: frozenset[str] | None, now: float) -> bytes:
    """What ``GET /api/apps/@live`` says at monotonic time ``now``, every context encoded anew."""
    rows = []
    for runtime in supervisor._apps.values():
        if runtime.status not in LIVE_STATUSES and not runtime.errored:
            continue
        context = runtime.context(supervisor._usage(runtime))
        uptime = runtime.uptime_at(now)
        context["uptime"] = round(uptime, 3) if uptime is not None else 0.0
        rows.append({key: value for key, value in context.items() if fields is None or key in fields})
    return encode_json(rows)


def assert_kept_listing_is_fresh(supervisor: Supervisor) -> None:
    """Byte for byte, for several field selections, twice (the second from what the first kept)."""
    for _ in range(2):
        for fields in SELECTIONS:
            now = time.monotonic()
            assert supervisor._listing.encode(fields, now=now) == fresh_encoding(supervisor, fields, now), fields


async def test_the_kept_listing_is_byte_for_byte_a_fresh_encoding(harness: Harness) -> None:
    web = harness.app("web", "http_server.py")
    worker = harness.app("worker", "http_server.py", server=False)
    broken = harness.app("broken", "exit_code.py", "3")
    supervisor = harness.supervisor(stats_interval=0.05)  # figures change under the listing
    await supervisor.boot()
    assert_kept_listing_is_fresh(supervisor)  # nothing listed: []
    started = await supervisor.start_app(web)
    harness.track(started["pid"])
    assert_kept_listing_is_fresh(supervisor)
    harness.track((await supervisor.start_app(worker))["pid"])
    with pytest.raises(BoltError):
        await supervisor.start_app(broken)  # listed as errored
    await async_wait_until(lambda: (c := supervisor.context("web")) and c["memory"] > 0, what="a stats pass")
    assert_kept_listing_is_fresh(supervisor)

    os.kill(started["pid"], signal.SIGKILL)

    def replaced() -> bool:
        assert_kept_listing_is_fresh(supervisor)  # between every step of the restart
        context = supervisor.context("web")
        return context is not None and context["status"] == "running" and context["pid"] != started["pid"]

    await async_wait_until(replaced, timeout=20, what="web restarted")
    harness.track(supervisor.context("web")["pid"])
    await supervisor.stop_app("worker")
    assert_kept_listing_is_fresh(supervisor)
    assert json.loads(supervisor.contexts_json(head=b'{"body":', tail=b"}"))["body"][0]["name"] == "web"


def counting_encodes(runtime: AppRuntime) -> list[int]:
    """Count the runtime's encodings of its context (the encoder itself still runs)."""
    calls: list[int] = []
    encode: Callable[..., Any] = runtime._encode

    def counted(*args: Any) -> Any:
        calls.append(1)
        return encode(*args)

    runtime._encode = counted  # type: ignore[method-assign]
    return calls


async def test_a_stats_pass_that_measures_the_same_figures_re_encodes_nothing(harness: Harness) -> None:
    """While someone polls ``@live`` a pass runs every 2 s; each one used to hand new figures for
    every app, so the next call re-encoded every context (200 apps: tens of ms under load)."""
    apps = [harness.app(name, "http_server.py") for name in ("one", "two")]
    supervisor = harness.supervisor(stats_interval=3600.0)  # passes only when the test asks
    await supervisor.boot()
    for app in apps:
        harness.track((await supervisor.start_app(app))["pid"])
    sampler = supervisor._stats
    runtimes = [supervisor._apps[app["name"]] for app in apps]

    def figures() -> dict[str, TreeUsage | None]:
        return {rt.name: sampler.latest(rt.name, rt.process.pid if rt.process else None) for rt in runtimes}

    async def a_pass_that_changes_no_figure() -> bool:
        await sampler.refresh()
        assert_kept_listing_is_fresh(supervisor)  # each selection encoded with these figures
        shown, version = figures(), sampler.version
        encodes = {rt.name: counting_encodes(rt) for rt in runtimes}
        await sampler.refresh()
        now = figures()
        if now != shown or None in now.values():
            return False  # the apps were still settling (a figure moved): try again
        assert all(now[name] is shown[name] for name in now)  # the same objects ...
        assert sampler.version == version
        assert_kept_listing_is_fresh(supervisor)
        assert {name: len(calls) for name, calls in encodes.items()} == {"one": 0, "two": 0}  # ... kept encoded
        return True

    await async_wait_until(a_pass_that_changes_no_figure, timeout=30, what="a pass measuring the same figures")
    encodes = counting_encodes(runtimes[0])

    await supervisor.stop_app("two")  # a change: only what changed is encoded again
    assert_kept_listing_is_fresh(supervisor)
    assert encodes == []


async def test_field_selections_kept_are_bounded(harness: Harness) -> None:
    """A client cycling through field sets cannot grow what the listing keeps."""
    app = harness.app("svc", "http_server.py")
    supervisor = harness.supervisor()
    await supervisor.boot()
    harness.track((await supervisor.start_app(app))["pid"])
    members = ("name", "pid", "status", "port", "restarts", "path", "host", "protocol")
    for count in range(1, len(members) + 1):
        fields = frozenset(members[:count])
        now = time.monotonic()
        assert supervisor._listing.encode(fields, now=now) == fresh_encoding(supervisor, fields, now)
    assert len(supervisor._listing._kept) <= 4


LIGHT = frozenset({"name", "status", "pid", "port", "restarts"})  # no uptime: one body per state
FIGURES = frozenset({"name", "pid", "memory", "cpu"})


def assert_light_answer_is_fresh(supervisor: Supervisor, fields: frozenset[str]) -> bytes:
    """The enveloped listing without uptimes: a fresh encoding's bytes, and the very same object
    on the next call while nothing changed in between."""
    answer = supervisor.contexts_json(fields, OK_HEAD, OK_TAIL)
    assert answer == OK_HEAD + fresh_encoding(supervisor, fields, time.monotonic()) + OK_TAIL
    assert supervisor.contexts_json(fields, OK_HEAD, OK_TAIL) is answer  # joined once, kept
    assert supervisor.contexts_json(fields) == fresh_encoding(supervisor, fields, time.monotonic())
    return answer


async def test_a_listing_without_uptimes_is_kept_whole_until_a_start_stop_crash_port_or_figure_changes(
    harness: Harness,
) -> None:
    web = harness.app("web", "http_server.py")
    supervisor = harness.supervisor(stats_interval=0.05)
    await supervisor.boot()
    empty = assert_light_answer_is_fresh(supervisor, LIGHT)
    assert json.loads(empty)["body"] == []

    started = await supervisor.start_app(web)  # start
    harness.track(started["pid"])
    shown = assert_light_answer_is_fresh(supervisor, LIGHT)
    assert json.loads(shown)["body"] == [{key: started[key] for key in sorted(LIGHT, key=list(started).index)}]

    os.kill(started["pid"], signal.SIGKILL)  # crash: status, pid and restarts change

    def replaced() -> bool:
        listed = json.loads(assert_light_answer_is_fresh(supervisor, LIGHT))["body"]
        return listed[0]["status"] == "running" and listed[0]["pid"] != started["pid"]

    await async_wait_until(replaced, timeout=20, what="web restarted after kill -9")
    after_crash = json.loads(assert_light_answer_is_fresh(supervisor, LIGHT))["body"][0]
    harness.track(after_crash["pid"])
    assert after_crash["restarts"] == 1

    await supervisor.stop_app("web")  # stop
    assert json.loads(assert_light_answer_is_fresh(supervisor, LIGHT))["body"] == []

    with socket.socket() as holder:  # its last port taken: the next start gets another one
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", after_crash["port"]))
        holder.listen()
        again = await supervisor.start_app(web)
        harness.track(again["pid"])
        moved = json.loads(assert_light_answer_is_fresh(supervisor, LIGHT))["body"][0]
    assert moved["port"] == again["port"] != after_crash["port"] and moved["pid"] == again["pid"]

    figures = assert_light_answer_is_fresh(supervisor, FIGURES)  # stats: a pass with new figures
    version = supervisor._stats.version

    def figures_moved() -> bool:
        with contextlib.suppress(OSError):  # work for the app, so its cpu time moves
            urllib.request.urlopen(f"http://127.0.0.1:{again['port']}/whoami", timeout=5).read()
        assert_light_answer_is_fresh(supervisor, FIGURES)  # a reader of the figures keeps the sampler going
        return supervisor._stats.version != version

    await async_wait_until(figures_moved, timeout=20, what="a stats pass with new figures")
    assert_light_answer_is_fresh(supervisor, FIGURES)
    assert supervisor.contexts_json(FIGURES, OK_HEAD, OK_TAIL) is not figures
