"""Shared by the rolling restart and upgrade tests: steady traffic through /x/rolling/ in a
thread, and small admin calls against a live host serving the ``rolling`` fixture app."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import wait_until
from tests.servers import LiveServer

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()}


@dataclass
class Traffic:
    """Requests to /x/rolling/version, one after another in a thread, until stopped."""

    live: LiveServer
    answers: list[tuple[str, int]] = field(default_factory=list)  # (version, pid), in order
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.answers, timeout=30, what="a first answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.live.url, auth=self.live.admin_auth, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    answer = client.get("/x/rolling/version")
                    if answer.status_code != 200:
                        self.failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                        continue
                    seen = answer.json()
                    self.answers.append((seen["version"], seen["pid"]))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def pids(self) -> list[int]:
        """The pids that answered, each run of equal pids once."""
        runs: list[int] = []
        for _, pid in list(self.answers):
            if not runs or runs[-1] != pid:
                runs.append(pid)
        return runs

    def more_answers(self, count: int) -> None:
        seen = len(self.answers)
        wait_until(lambda: len(self.answers) >= seen + count, timeout=30, what=f"{count} more answers")


def in_thread(run: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``run()`` in a thread; its result or exception lands in the dict."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def restart(live: LiveServer, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=120) as admin:
        return admin.post("/api/apps/restart", json={"name": "rolling", **body})


def live_context(live: LiveServer) -> dict[str, Any]:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        return next(c for c in admin.get("/api/apps/@live").json()["body"] if c["name"] == "rolling")


def instances(live: LiveServer) -> list[dict[str, Any]]:
    """The contexts of the ``rolling`` app's instances, by instance index."""
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        found = [c for c in admin.get("/api/apps/@live").json()["body"] if c["name"] == "rolling"]
    return sorted(found, key=lambda context: context["instance"])


def app_log(live: LiveServer) -> str:
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        return admin.get("/api/apps/rolling/logs").text


@dataclass
class Switch:
    """What the clients saw while ``trigger`` switched the app to a new process."""

    old_pid: int
    traffic: Traffic
    streamed: list[str]  # the long answer that began before the switch
    answer: httpx.Response  # the trigger's


def through_a_switch(live: LiveServer, trigger: Any) -> Switch:
    """Run ``trigger()`` (a rolling restart, an upgrade) while steady requests, one long streaming
    answer and one WebSocket go through /x/rolling/.  The socket and the long answer began on the
    old process and must finish there, whole, after the new one took over."""
    from websockets.sync.client import connect

    old_pid, old_version = live_context(live)["pid"], live_context(live)["app"]["version"]
    ws_url = "ws" + live.url.removeprefix("http") + "/x/rolling/ws"
    started = threading.Event()

    def long_answer() -> list[str]:
        params = {"chunks": 30, "interval": 0.1}
        with (
            httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60) as client,
            client.stream("GET", "/x/rolling/stream", params=params) as answer,
        ):
            assert answer.status_code == 200
            started.set()
            return list(answer.iter_lines())

    with Traffic(live) as traffic, connect(ws_url, additional_headers=BASIC, open_timeout=30) as ws:
        ws.send("before")
        assert ws.recv(timeout=30) == f"{old_version} {old_pid} before"
        streaming, streamed = in_thread(long_answer)
        assert started.wait(30), "the streaming answer began"
        switching, switched = in_thread(trigger)
        wait_until(lambda: len(traffic.pids()) > 1 or not switching.is_alive(), timeout=90, what="a switch")
        ws.send("after the switch")  # the socket sticks to the process it was opened with
        assert ws.recv(timeout=30) == f"{old_version} {old_pid} after the switch"
        streaming.join(timeout=60)
        ws.close()
        switching.join(timeout=120)
        traffic.more_answers(20)
    assert "error" not in streamed and "error" not in switched, (streamed, switched)
    return Switch(old_pid, traffic, streamed["result"], switched["result"])
