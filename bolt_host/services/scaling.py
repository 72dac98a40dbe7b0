"""The supervisor's operations over more than one process of an app: its instances (start,
stop, scale, balance) and the rolling restart's hand-over from one process to the next.

:class:`Scaling` is a collaborator of the :class:`~bolt_host.services.supervisor.Supervisor`:
it drives the supervisor's one-process state machine only through
:class:`~bolt_host.services.machine.Machine` (each
instance's lock, its start task, its records) and adds no state of its own beyond the
instances it asked the :class:`Runtimes` for.  The policies are in :mod:`instances` (counts,
balancing) and :mod:`rollover` (hand-over, drain).
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
from bolt_host.services.health_probe import DEFAULT_INTERVAL, HealthProbe
from bolt_host.services.instances import wanted_instances
from bolt_host.services.rollover import Rollovers, SwitchFailed, why_not_rolling
from bolt_host.services.start_command import is_serverless
from bolt_host.services.traffic import Lease

if TYPE_CHECKING:
    from bolt_host.services.machine import Machine
    from bolt_host.services.runtimes import Runtimes
    from bolt_host.services.spawner import Spawner
    from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.supervisor")


class Scaling:
    def __init__(
        self,
        machine: Machine,
        runtimes: Runtimes,
        rollovers: Rollovers,
        spawner: Spawner,
        state: StateFile,
        max_instances: int,
        grace_seconds: float,
        health_interval: float | None = None,
    ) -> None:
        self._machine = machine
        self._apps = runtimes
        self._rollovers = rollovers
        self._spawner = spawner
        self._state = state
        self._max_instances = max_instances
        self._grace = grace_seconds
        interval = DEFAULT_INTERVAL if health_interval is None else health_interval
        self._health = HealthProbe(rollovers.balancer, self._probed, rollovers.note, interval)

    def _note(self, runtime: AppRuntime, text: str) -> None:
        self._rollovers.note(runtime, text)

    # instances -------------------------------------------------------------------
    def refused(self, port: int) -> None:
        """The proxy could not connect to ``port``: no requests to it until it accepts again."""
        self._rollovers.balancer.refused(port)

    def lease(self, name: str) -> Lease | None:
        """A hold on a port serving ``name`` (its least busy instance) for one proxied request;
        None: nothing serves."""
        if self._apps.get(name) is None:
            return None
        return self._rollovers.lease(self._apps.of_app(name))

    async def scale(self, app: dict[str, Any]) -> None:
        """Match a running app's instances to its wanted count: start the missing ones, drain and
        stop the ones over it (highest first).  (It answers nothing: every caller, each start
        among them, reads the contexts it needs itself.)"""
        name = str(app["name"])
        first, wanted = self._apps.get(name), wanted_instances(app, self._max_instances)
        if first is not None and first.status in (RUNNING, STARTING) and not is_serverless(app):
            starts = [self._machine.start_one(self._apps.slot(name, app, index), app) for index in range(1, wanted)]
            for failed in await asyncio.gather(*starts, return_exceptions=True):
                if isinstance(failed, BaseException) and not isinstance(failed, BoltError):
                    log.error("starting an instance of %s failed", name, exc_info=failed)
        else:
            wanted = 1
        for runtime in self._apps.of_app(name):
            runtime.wanted_instances = wanted
        if self._apps.has_extras(name):
            self._health.wake()
        for extra in sorted(self._apps.extras(name), key=lambda rt: -rt.instance):
            if extra.instance >= wanted:
                await self._scale_away(extra)

    def _probed(self) -> list[list[AppRuntime]]:
        """For the health probe: per app with several instances, those running and taking requests."""
        return [
            [rt for rt in self._apps.of_app(name) if rt.status == RUNNING and rt.port and not rt.draining]
            for name in self._apps.scaled()
        ]

    async def close(self) -> None:
        await self._health.close()
        await self._rollovers.balancer.close()

    async def _scale_away(self, runtime: AppRuntime) -> None:
        """No new requests to this instance; those in flight finish (at most the stop grace); stop it."""
        runtime.draining = True
        if runtime.port is not None:
            grace = runtime.app.get("stopGraceSeconds")
            await self._rollovers.traffic.wait_idle(runtime.port, self._grace if grace is None else float(grace))
        await self.stop_extra(runtime, "scaling down")
        self._apps.forget(runtime)
        self._state.delete(SECTION, runtime.key)
        self._state.commit_soon()

    async def restart(
        self, app: dict[str, Any], by: str | None, rolling: bool, only: list[int] | None = None
    ) -> dict[str, Any]:
        """Restart every instance of ``app`` (``only``: those), one at a time, the others serving
        meanwhile; then start any it misses.  Instance 0's context.  ``rolling``: each process
        serves until its successor is ready.  An instance that does not come up ends the round
        with :class:`SwitchFailed`: the ones before it run ``app``, the ones after it are untouched."""
        name = str(app["name"])
        first = self._apps.slot(name, app)
        wanted = wanted_instances(app, self._max_instances)
        chosen = [rt for rt in [first, *self._apps.extras(name)] if rt.instance < wanted]
        if only is not None:
            chosen = [rt for rt in chosen if rt.instance in only]
        switched: list[int] = []
        context = None
        for runtime in sorted(chosen, key=lambda rt: rt.instance):
            try:
                answer = await self._restart_instance(runtime, app, by, rolling)
            except BoltError as exc:  # running: a rolling switch that failed left the old process serving
                raise SwitchFailed(exc, switched, runtime.instance, kept=runtime.status == RUNNING) from exc
            switched.append(runtime.instance)
            context = answer if runtime is first else context
        await self.scale(app)
        return context if context is not None else self._machine.context_of(first)

    async def _restart_instance(
        self, runtime: AppRuntime, app: dict[str, Any], by: str | None, rolling: bool
    ) -> dict[str, Any]:
        if rolling and not is_serverless(app):
            context = await self.roll(runtime, app, by)
            if context is not None:
                return context
        return await self._machine.restart_one(runtime, app, by)

    async def stop_extra(self, runtime: AppRuntime, by: str | None) -> None:
        async with runtime.lock:
            if runtime.process is not None or runtime.status in (STARTING, BACKOFF):
                await self._machine.stop_locked(runtime, desired_after=DESIRED_STOPPED, by=by)

    # rolling restarts ------------------------------------------------------------
    async def roll(self, runtime: AppRuntime, app: dict[str, Any], by: str | None) -> dict[str, Any] | None:
        """A rolling restart; None when the app gets a plain one instead (not running, opted out)."""
        fixed_port = await self._spawner.fixed_port(app)
        async with runtime.lock:
            if why_not_rolling(runtime, fixed_port) is not None:
                return None
            await self._machine.verify(app)
            retiring = self._rollovers.hand_over(runtime)
            runtime.restarts += 1
            self._note(runtime, f"rolling restart (by {by or 'the host'}): pid {retiring.process.pid} serves on")
            runtime.crashes.reset()
            task = self._machine.begin_start(runtime, app, automatic=False)
        try:
            context = await self._machine.join_start(task)
        except BoltError:
            async with runtime.lock:  # unless a stop or a new start came in between: the old one serves on
                if runtime.retiring is retiring and runtime.status == FAILED and self._rollovers.take_back(runtime):
                    self._note(runtime, f"the new process never became ready; pid {retiring.process.pid} serves on")
                    await self._machine.persist(runtime)
                    await self._machine.emit("app-started", runtime)
            raise
        await self._rollovers.drain(runtime, retiring)
        async with runtime.lock:
            if runtime.retiring is retiring:  # else a stop ended it already
                await self.end_retiring(runtime)
        return context

    async def end_retiring(self, runtime: AppRuntime) -> None:
        ended = await self._rollovers.end(runtime)
        if ended is not None:
            self._note(runtime, f"pid {ended.process.pid} (replaced by a rolling restart) stopped")
            await self._machine.persist(runtime)
