"""The rest of a stop once its app is ``stopping`` and its tree signalled: the wait for the tree,
the notes in the app's log, the ``app-stopping`` and ``app-stopped`` events, the record.

A single stop does all of it before it answers (:meth:`StopFinish.finish`).  A stop of many apps
answers each app it claimed (:mod:`stop_pass`) once what a client can observe holds
(:meth:`StopFinish.claimed`): the tree is gone and reaped, the app is ``stopped`` in memory (a
``GET`` after the answer shows it so), its port is free, its intent (desired ``stopped``) is on
disk (:mod:`stop_batch`), and its two events have their places in the bus's order (delivered
after the answer, as the call holds the bus).  What only the app's log and a host restart see
follows the answer (:meth:`StopBatch.follow`): the ``stopping`` and ``stopped`` notes and the
record without a pid (a host killed before it finds the app stopped and a pid that is gone,
which boot forgets).  They are written under the app's lock, which the stop keeps until then: a
start or another stop of the app waits for them, so this run's notes come before the next run's
output.

Why: while 200 apps exit, both cores are theirs, and each millisecond of the host's work inside
the call makes the call longer; the two notes (an ``open``, ``write``, ``close`` each) and the
record were a fifth of the host's CPU per stopped app (bench/README.md, "The stop call" subsections).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from bolt_host.services.app_runtime import SECTION, STOPPED, AppRuntime
from bolt_host.services.processes import describe_exit
from bolt_host.services.runlog import RunLog
from bolt_host.services.spawner import Spawner
from bolt_host.services.stop_batch import StopBatch
from bolt_host.statefile import StateFile

Context = dict[str, Any]


class Machine(Protocol):
    """What a stop's end uses of the supervisor."""

    async def persist(self, runtime: AppRuntime, batch: StopBatch | None = None) -> None: ...

    def event_context(self, runtime: AppRuntime, app: Context | None = None) -> Context: ...

    async def publish_context(self, event: str, runtime: AppRuntime, context: Context) -> None: ...


class StopFinish:
    def __init__(self, machine: Machine, runlog: RunLog, spawner: Spawner, state: StateFile) -> None:
        self._machine = machine
        self._runlog = runlog
        self._spawner = spawner
        self._state = state

    async def finish(self, runtime: AppRuntime, by: str | None, batch: StopBatch | None) -> Context:
        """All of the rest of the stop, then its answer."""
        self._runlog.note(runtime, _stopping(by))
        stopping = self._machine.event_context(runtime, None)
        await self._machine.publish_context("app-stopping", runtime, stopping)
        had_pid, had_port = (runtime.process.pid if runtime.process is not None else None), runtime.port
        exit_code = await self._end(runtime, batch)
        self._runlog.note(runtime, _stopped(exit_code))
        await self._machine.persist(runtime, batch)
        stopped = self._machine.event_context(runtime, stopping["app"])  # one copy of the app for all three
        await self._machine.publish_context("app-stopped", runtime, stopped)
        return _answer(stopped, had_pid, had_port)

    async def claimed(self, runtime: AppRuntime, by: str | None, batch: StopBatch) -> Context:
        """The answer for an app a stop of many claimed; its notes and record follow the call's
        answer (``batch`` writes them, and gives the app's lock back after them)."""
        stopping = self._machine.event_context(runtime, None)
        await self._machine.publish_context("app-stopping", runtime, stopping)
        had_pid, had_port = (runtime.process.pid if runtime.process is not None else None), runtime.port
        exit_code = await self._end(runtime, batch)
        stopped = self._machine.event_context(runtime, stopping["app"])
        await self._machine.publish_context("app-stopped", runtime, stopped)
        batch.follow(runtime, functools.partial(self._noted, runtime, by, exit_code))
        return _answer(stopped, had_pid, had_port)

    async def _end(self, runtime: AppRuntime, batch: StopBatch | None) -> int | None:
        """End the tree (:meth:`Spawner.cleanup`) and take the ``stopped`` state: the exit code."""
        exit_code = await self._spawner.cleanup(runtime, batch)  # sets a reason only if something survived
        runtime.status, runtime.exit_code, runtime.next_restart_at = STOPPED, exit_code, None
        runtime.crashes.reset()
        return exit_code

    def _noted(self, runtime: AppRuntime, by: str | None, exit_code: int | None) -> None:
        """What a claimed stop writes after the call's answer: its notes, its record without a pid."""
        self._runlog.note(runtime, _stopping(by))
        self._runlog.note(runtime, _stopped(exit_code))
        self._state.put(SECTION, runtime.key, runtime.record())  # written once the batch's stops have noted


def _answer(stopped: Context, had_pid: int | None, had_port: int | None) -> Context:
    """As Bolt answers a stop: the context the app ran with (that pid and port are gone now)."""
    context = dict(stopped)
    context["pid"] = had_pid
    if "port" in context:  # server apps only
        context["port"] = had_port
    return context


def _stopping(by: str | None) -> str:
    return f"stopping (by {by})" if by else "stopping"


def _stopped(exit_code: int | None) -> str:
    return "stopped" if exit_code is None else f"stopped ({describe_exit(exit_code)})"
