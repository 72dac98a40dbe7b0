"""How an agent's next start reads the device Tasks a crash left (bolt_device.recovery): the last
word of each job, for downloads, installs and uninstalls, from task records as the host keeps them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bolt_device.recovery import NEVER_INSTALLED, last_words

pytestmark = pytest.mark.timeout(10)
CRASH = "the host stopped while this task was running (crash or kill); marked failed at boot"
MANAGER = "bolt-manager"


def _task(task_id: int, kind: str, status: str, job: str, error: str | None = None, ago: float = 5.0,
          **meta: Any) -> dict[str, Any]:
    return {"id": task_id, "kind": kind, "status": status, "module": f"app-{job}", "error": error,
            "end_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - ago)),
            "meta": {"deviceJob": job, "deviceRequester": "mgr-2", **meta}}


def _said(words: list[Any]) -> dict[str, tuple[str, str, str]]:
    return {w.job_id: (w.resource, w.metrics[f"dp.{w.resource}.status"],
                       w.metrics.get(f"dp.{w.resource}.error.message", "")) for w in words}


def test_each_job_gets_the_last_word_of_its_newest_step() -> None:
    tasks = [
        _task(1, "uninstall", "failed", "u-cut", CRASH),
        _task(2, "download", "succeeded", "d-then-cut", deviceInstall=True),
        _task(3, "install", "failed", "d-then-cut", CRASH),
        _task(4, "download", "succeeded", "d-before-install", deviceInstall=True),
        _task(5, "download", "succeeded", "d-only", deviceInstall=False),
        _task(6, "uninstall", "succeeded", "u-done"),
        _task(7, "download", "failed", "d-cut", CRASH, deviceInstall=True),
    ]
    said = _said(last_words(tasks, set(), 900, MANAGER))
    assert said == {
        "u-cut": ("uninstall", "FAILED", CRASH),
        "d-then-cut": ("install", "FAILED", CRASH),
        "d-before-install": ("install", "FAILED", NEVER_INSTALLED),
        "d-only": ("download", "COMPLETED", ""),
        "u-done": ("uninstall", "COMPLETED", ""),
        "d-cut": ("download", "FAILED", CRASH),
    }


def test_known_old_foreign_and_unfinished_tasks_say_nothing() -> None:
    tasks = [
        _task(1, "download", "failed", "followed", CRASH),
        _task(2, "uninstall", "failed", "long-ago", CRASH, ago=3600),
        {**_task(3, "install", "failed", "x", CRASH), "meta": {}},  # an admin's own install
        {**_task(4, "download", "running", "live"), "end_time": None},
    ]
    assert last_words(tasks, {"followed"}, 900, MANAGER) == []


def test_the_requester_comes_from_the_task_or_the_configured_manager() -> None:
    recorded, older = _task(1, "uninstall", "failed", "a", CRASH), _task(2, "uninstall", "failed", "b", CRASH)
    del older["meta"]["deviceRequester"]  # a task from before the requester was recorded
    words = {w.job_id: w for w in last_words([recorded, older], set(), 900, MANAGER)}
    assert (words["a"].requester, words["b"].requester) == ("mgr-2", MANAGER)
    assert words["a"].metrics["job.id"] == "a" and words["a"].package == "app-a"
