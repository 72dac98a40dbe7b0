"""A stop of many apps in one call sends every SIGTERM it can in one tight pass, before any
app's notes, events or records.

Why: an app's cgroup is a sibling of the host's own process (:mod:`cgroups`), so an app that
gets its SIGTERM wakes with the weight of one process, as a raw child does, and preempts the
host on its way out.  When the host did each app's bookkeeping between two signals (its task's
first step, its state, its tree, the record of its intent), the SIGTERMs of 200 apps went out
over 100-480 ms under load, while a raw parent sends 200 ``kill()`` calls in a few ms.

So, with no wait between its steps, the pass

1. claims each app whose stop needs no wait before its signal (running, a process of its own,
   no start in flight, no restart pending, no rolling hand-over, no other instances): it takes
   the app's lock (free: taken at once), its desired state and its ``stopping`` state, and
   reads the app's tree where that needs no wait (its sealed cgroup: a member read before the
   signal is reaped by the stop even if it dies of it at once);
2. signals every claimed tree, and nothing else;
3. records each claimed app as meant to be stopped (:meth:`StopBatch.intend`).

From the claim on, an exit of a claimed app finds ``stopping``: it is the stop's, never read
as a crash, and a start or a crash handler waits for the lock.  The rest of each claimed stop
(:meth:`StopFinish.claimed`: its events, the wait for the tree, the ``stopped`` state) runs as a
task that holds that lock; its log notes and pid-less record follow the call's answer
(:meth:`StopBatch.follow`), and the lock goes back after them, or when the task fails or is
cancelled.  Apps not claimed take the single stop's way (``stop_app``) in the same call.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any, Protocol

from bolt_host.services.app_runtime import DESIRED_STOPPED, RUNNING, STOPPING, AppRuntime
from bolt_host.services.runtimes import Runtimes
from bolt_host.services.spawner import Spawner
from bolt_host.services.stop_batch import StopBatch
from bolt_host.services.tree_stop import TreeStop

Context = dict[str, Any]


class Stops(Protocol):
    """The supervisor's two ways to stop an app, as the pass uses them."""

    async def stop_app(self, name: str, by: str | None = None, batch: StopBatch | None = None) -> Context: ...

    async def finish_claimed(self, runtime: AppRuntime, by: str | None, batch: StopBatch) -> Context: ...


async def signal_first(
    names: list[str], stops: Stops, runtimes: Runtimes, spawner: Spawner, batch: StopBatch, by: str | None
) -> list[Awaitable[Context]]:
    """Claim and signal what can be signalled at once of ``names`` (see the module); then the
    stop of each name, in their order, for :meth:`StopBatch.run` to wait for."""
    claimed: dict[str, AppRuntime] = {}
    endings: list[TreeStop | None] = []
    for name in names:
        runtime = runtimes.get(name)
        if runtime is None or runtime.lock.locked() or not _claimable(runtime, runtimes):
            continue
        await runtime.lock.acquire()  # free: returns without a wait
        if not _claimable(runtime, runtimes):  # changed only if it did wait after all
            runtime.lock.release()
            continue
        runtime.desired = DESIRED_STOPPED
        runtime.status, runtime.reason, runtime.last_exit = STOPPING, None, None
        claimed[name] = runtime
        endings.append(spawner.ending(runtime))
    for ending in endings:
        if ending is not None:
            ending.begin()
    for runtime in claimed.values():
        batch.intend(runtime)
    finishing = {name: _holding_lock(rt, stops.finish_claimed(rt, by, batch)) for name, rt in claimed.items()}
    return [finishing.pop(name) if name in finishing else stops.stop_app(name, by, batch) for name in names]


def _claimable(runtime: AppRuntime, runtimes: Runtimes) -> bool:
    """A stop of ``runtime`` could signal it now: a running process of its own and nothing to
    cancel or hand over first (those wait, and take :meth:`Supervisor.stop_locked`'s way)."""
    return (
        runtime.status == RUNNING
        and runtime.process is not None
        and (runtime.start_task is None or runtime.start_task.done())
        and runtime.restart_task is None
        and runtime.retiring is None
        and not runtimes.has_extras(runtime.name)
    )


def _holding_lock(runtime: AppRuntime, finish: Awaitable[Context]) -> asyncio.Future[Context]:
    """Run ``finish`` as a task holding ``runtime``'s lock: one that answers hands the lock to its
    batch (:meth:`StopBatch.follow`); one that fails gives it back when it ends (also when it is
    cancelled before its first step, where a ``finally`` inside it would never run)."""
    task = asyncio.ensure_future(finish)
    task.add_done_callback(functools.partial(_release_unless_answered, runtime))
    return task


def _release_unless_answered(runtime: AppRuntime, task: asyncio.Future[Context]) -> None:
    if task.cancelled() or task.exception() is not None:
        runtime.lock.release()
