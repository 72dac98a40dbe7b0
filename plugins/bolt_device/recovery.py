"""What a crash left behind on an agent, told to the manager at the next start.

A ``kill -9`` or a power cut ends the agent with no goodbye: the host marks the
device's running Tasks failed at its next boot ("the host stopped while this
task was running ..."), but the manager's operations would stay RUNNING.  At
start the agent reads its recent device Tasks (their meta names the job, the
manager that asked and whether an install was to follow) and makes the last
word of each job from how its last step ended: that step FAILED with the
Task's error, or COMPLETED, or, for a download that finished while the install
never began, ``install`` FAILED.  The agent sends these after its BIRTH, like
every replayed notification (the manager drops the ones of operations that
already ended).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

TASK_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the host's task times, local
NEVER_INSTALLED = (
    "the device's host service stopped (crash or kill) after the download and before the install began"
)
FINAL_STEPS = ("install", "uninstall")


@dataclass(frozen=True)
class LastWord:
    job_id: str
    requester: str
    package: str
    resource: str
    metrics: dict[str, Any]


def _ended_at(task: dict[str, Any]) -> float | None:
    try:
        return time.mktime(time.strptime(str(task.get("end_time")), TASK_TIME_FORMAT))
    except (TypeError, ValueError, OverflowError):
        return None


def _metrics(job_id: str, package: str, resource: str, status: str, message: str = "") -> dict[str, Any]:
    prefix = f"dp.{resource}."
    metrics: dict[str, Any] = {
        "job.id": job_id,
        "dp.name": package,
        prefix + "status": status,
        prefix + "progress": 100 if status == "COMPLETED" else 0,
    }
    if message:
        metrics[prefix + "error.message"] = message
    return metrics


def _last_word(task: dict[str, Any], fallback_requester: str) -> LastWord | None:
    meta = task.get("meta") or {}
    job_id, kind, package = str(meta["deviceJob"]), task["kind"], str(task.get("module") or "")
    requester = str(meta.get("deviceRequester") or fallback_requester)
    if task["status"] in ("failed", "canceled"):
        reason = task.get("error") or f"the {kind} step was {task['status']}"
        return LastWord(job_id, requester, package, kind, _metrics(job_id, package, kind, "FAILED", reason))
    if task["status"] != "succeeded":
        return None  # still queued or running: not a crash's leftover
    if kind in FINAL_STEPS or (kind == "download" and not meta.get("deviceInstall", True)):
        return LastWord(job_id, requester, package, kind, _metrics(job_id, package, kind, "COMPLETED"))
    if kind == "download":
        return LastWord(job_id, requester, package, "install",
                        _metrics(job_id, package, "install", "FAILED", NEVER_INSTALLED))
    return None


def last_words(tasks: list[dict[str, Any]], known: set[str], window: float, fallback_requester: str) -> list[LastWord]:
    """The final notification of every device job of the last ``window`` seconds that the
    agent does not already follow (``known``), from the newest Task of each job."""
    newest: dict[str, dict[str, Any]] = {}
    oldest_kept = time.time() - window
    for task in sorted(tasks, key=lambda t: t["id"]):
        job_id = (task.get("meta") or {}).get("deviceJob")
        if not job_id or str(job_id) in known:
            continue
        ended = _ended_at(task)
        if ended is None or ended < oldest_kept:
            continue
        newest[str(job_id)] = task
    words = (_last_word(task, fallback_requester) for task in newest.values())
    return [word for word in words if word is not None]
