"""The supervisor's operations over more than one process of an app: its instances (start,
stop, scale, balance) and the rolling restart's hand-over from one process to the next.

A base class of :class:`~bolt_host.services.supervisor.Supervisor`, kept apart so that
``supervisor.py`` stays the state machine of one process: every method here drives that
machine (each instance's lock, its start task) and adds no state of its own beyond the
instance index.  The policies are in :mod:`instances` (counts, balancing) and
:mod:`rollover` (hand-over, drain).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bolt_host.errors import BoltError
from bolt_host.services.app_runtime import (
    BACKOFF,
    DESIRED_STOPPED,
    FAILED,
    RUNNING,
    SECTION,
    STARTING,
    AppRuntime,
)
from bolt_host.services.instances import wanted_instances
from bolt_host.services.rollover import Rollovers, why_not_rolling
from bolt_host.services.start_command import is_serverless
from bolt_host.services.traffic import Lease

if TYPE_CHECKING:
    from bolt_host.services.spawner import Spawner
    from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.supervisor")


class Scaling:
    # Provided by the Supervisor (its state machine and its parts):
    _apps: dict[str, AppRuntime]
    _extras: dict[str, dict[int, AppRuntime]]
    _max_instances: int
    _grace: float
    _rollovers: Rollovers
    _spawner: Spawner
    _state: StateFile

    if TYPE_CHECKING:
        def _runtime(self, name: str, app: dict[str, Any], instance: int = 0) -> AppRuntime: ...
        async def _start_one(self, runtime: AppRuntime, app: dict[str, Any]) -> dict[str, Any]: ...
        async def _stop_locked(
            self, runtime: AppRuntime, *, desired_after: str, by: str | None = None
        ) -> dict[str, Any]: ...
        async def _verify(self, app: dict[str, Any]) -> None: ...
        def _begin_start(
            self, runtime: AppRuntime, app: dict[str, Any], *, automatic: bool
        ) -> asyncio.Task[Any]: ...
        async def _join_start(self, task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]: ...
        def _note(self, runtime: AppRuntime, text: str) -> None: ...
        async def _persist(self, runtime: AppRuntime) -> None: ...
        async def _emit(self, event: str, runtime: AppRuntime) -> None: ...
        def _context(self, runtime: AppRuntime) -> dict[str, Any]: ...

    # instances -------------------------------------------------------------------
    def refused(self, port: int) -> None:
        """The proxy could not connect to ``port``: no requests to it until it accepts again."""
        self._rollovers.balancer.refused(port)

    def lease(self, name: str) -> Lease | None:
        """A hold on a port serving ``name`` (its least busy instance) for one proxied request;
        None: nothing serves."""
        first = self._apps.get(name)
        if first is None:
            return None
        extras = self._extras.get(name)
        return self._rollovers.lease([first, *extras.values()] if extras else [first])

    async def scale(self, app: dict[str, Any]) -> list[dict[str, Any]]:
        """Match a running app's instances to its wanted count: start the missing ones, drain and
        stop the ones over it (highest first).  The contexts of all its instances."""
        name = str(app["name"])
        first, wanted = self._apps.get(name), wanted_instances(app, self._max_instances)
        if first is not None and first.status in (RUNNING, STARTING) and not is_serverless(app):
            starts = [self._start_one(self._runtime(name, app, index), app) for index in range(1, wanted)]
            for failed in await asyncio.gather(*starts, return_exceptions=True):
                if isinstance(failed, BaseException) and not isinstance(failed, BoltError):
                    log.error("starting an instance of %s failed", name, exc_info=failed)
        else:
            wanted = 1
        for extra in sorted(self._extras.get(name, {}).values(), key=lambda rt: -rt.instance):
            if extra.instance >= wanted:
                await self._scale_away(extra)
        return [self._context(rt) for rt in [first, *self._extras.get(name, {}).values()] if rt is not None]

    async def _scale_away(self, runtime: AppRuntime) -> None:
        """No new requests to this instance; those in flight finish (at most the stop grace); stop it."""
        runtime.draining = True
        if runtime.port is not None:
            grace = runtime.app.get("stopGraceSeconds")
            await self._rollovers.traffic.wait_idle(runtime.port, self._grace if grace is None else float(grace))
        await self._stop_extra(runtime, "scaling down")
        extras = self._extras.get(runtime.name, {})
        extras.pop(runtime.instance, None)
        if not extras:
            self._extras.pop(runtime.name, None)
        self._apps.pop(runtime.key, None)
        self._state.delete(SECTION, runtime.key)
        self._state.commit_soon()

    async def _stop_extra(self, runtime: AppRuntime, by: str | None) -> None:
        async with runtime.lock:
            if runtime.process is not None or runtime.status in (STARTING, BACKOFF):
                await self._stop_locked(runtime, desired_after=DESIRED_STOPPED, by=by)

    def _group_in_use(self, runtime: AppRuntime) -> bool:
        """Whether another instance of ``runtime``'s app still has a process (in the app's cgroup)."""
        siblings = [self._apps.get(runtime.name), *self._extras.get(runtime.name, {}).values()]
        return any(rt is not None and rt is not runtime and (rt.process or rt.retiring) for rt in siblings)

    # rolling restarts ------------------------------------------------------------
    async def _roll(self, runtime: AppRuntime, app: dict[str, Any], by: str | None) -> dict[str, Any] | None:
        """A rolling restart; None when the app gets a plain one instead (not running, opted out)."""
        fixed_port = await self._spawner.fixed_port(app)
        async with runtime.lock:
            if why_not_rolling(runtime, fixed_port) is not None:
                return None
            await self._verify(app)
            retiring = self._rollovers.hand_over(runtime)
            runtime.restarts += 1
            self._note(runtime, f"rolling restart (by {by or 'the host'}): pid {retiring.process.pid} serves on")
            runtime.crashes.reset()
            task = self._begin_start(runtime, app, automatic=False)
        try:
            context = await self._join_start(task)
        except BoltError:
            async with runtime.lock:  # unless a stop or a new start came in between: the old one serves on
                if runtime.retiring is retiring and runtime.status == FAILED and self._rollovers.take_back(runtime):
                    self._note(runtime, f"the new process never became ready; pid {retiring.process.pid} serves on")
                    await self._persist(runtime)
                    await self._emit("app-started", runtime)
            raise
        await self._rollovers.drain(runtime, retiring)
        async with runtime.lock:
            if runtime.retiring is retiring:  # else a stop ended it already
                await self._end_retiring(runtime)
        return context

    async def _end_retiring(self, runtime: AppRuntime) -> None:
        ended = await self._rollovers.end(runtime)
        if ended is not None:
            self._note(runtime, f"pid {ended.process.pid} (replaced by a rolling restart) stopped")
            await self._persist(runtime)
