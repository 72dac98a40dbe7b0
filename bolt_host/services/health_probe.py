"""The active health check of an app's instances: one that stops answering leaves the balancing.

The proxy notices by itself only an instance whose port refuses connections
(:meth:`~bolt_host.services.instances.Balancer.refused`).  One that hangs (its process
stopped, deadlocked, stuck in a loop) still accepts connections into its listen queue, and
every request sent to it waits for the proxy timeout.  So while an app has more than one
instance serving, each of them is probed every ``interval`` seconds (the host's
``health_interval_seconds``):

* with a ``health`` path in its manifest: ``GET <health>`` must answer 2xx/3xx within
  :data:`PROBE_TIMEOUT`;
* without one: a TCP connect must succeed within :data:`PROBE_TIMEOUT` (this tells a
  closed port, not a hang: apps that can hang declare ``health``).

:data:`FAILURES_TO_TAKE_OUT` failures in a row take the instance out of the balancing (a
single slow answer on a busy machine does not); its first answer puts it back.  Both are
noted in the app's log.  An instance whose process exits is out anyway (it is not running).

Cost: nothing while no app runs several instances (no task, no timer: :meth:`HealthProbe.wake`
starts the loop when an app is scaled up, and the loop ends once no app has several).  Then
one loopback connection per instance and interval, the probes of a round concurrently: a
non-blocking connect, or a bare HTTP/1.0 request over a plain socket (as the readiness
check's), microseconds of the host's CPU each.  A lone instance is never probed: taking it
out would leave its requests nowhere else to go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bolt_host.services.app_runtime import AppRuntime
from bolt_host.services.instances import Balancer
from bolt_host.services.readiness import answers

log = logging.getLogger("bolt_host.health")

DEFAULT_INTERVAL = 5.0
PROBE_TIMEOUT = 2.0
FAILURES_TO_TAKE_OUT = 2

Targets = Callable[[], list[list[AppRuntime]]]
Note = Callable[[AppRuntime, str], None]


@dataclass
class Watched:
    """What the probe knows of one instance's process (by its port)."""

    runtime: AppRuntime
    generation: int
    failures: int = 0
    out: bool = False


class HealthProbe:
    """Probes the serving instances of apps that run several; ``targets()`` gives, per app with
    several instances, its instances that run and take requests (an empty list: none has)."""

    def __init__(
        self,
        balancer: Balancer,
        targets: Targets,
        note: Note,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._balancer = balancer
        self._targets = targets
        self._note = note
        self._interval = interval
        self._timeout = timeout
        self._watched: dict[int, Watched] = {}  # port -> its instance's state
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """An app may have several instances now: probe while any app has (0 s interval: never)."""
        if self._interval > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="health probe")

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                groups = self._targets()
                if not groups:
                    return
                await self.check(groups)
        except Exception:  # a bug here must not end supervision; the next wake() starts it again
            log.exception("the health probe stopped")
        finally:
            self._forget({})

    async def check(self, groups: list[list[AppRuntime]]) -> None:
        """One round: probe every instance of every app with more than one serving."""
        probed = [(rt, rt.port, rt.generation) for group in groups if len(group) > 1 for rt in group if rt.port]
        results = await asyncio.gather(
            *(answers(port, rt.app.get("health"), self._timeout) for rt, port, _ in probed)
        )
        current: dict[int, Watched] = {}
        for (runtime, port, generation), answered in zip(probed, results, strict=True):
            if runtime.port != port or runtime.generation != generation:  # restarted meanwhile: next round
                continue
            watched = self._watched.get(port)
            if watched is None or watched.runtime is not runtime or watched.generation != generation:
                watched = Watched(runtime, generation)  # a new process on this port: _forget puts the port back
            current[port] = watched
            self._record(port, watched, answered)
        self._forget(current)

    def _record(self, port: int, watched: Watched, answered: bool) -> None:
        runtime = watched.runtime
        who = f"pid {runtime.process.pid} " if runtime.process is not None else ""
        if answered:
            watched.failures = 0
            if watched.out:
                watched.out = False
                self._balancer.put_back(port)
                self._note(runtime, f"{who}answers its health check again: back in the balancing")
            return
        watched.failures += 1
        if not watched.out and watched.failures >= FAILURES_TO_TAKE_OUT:
            watched.out = True
            self._balancer.take_out(port)
            health = runtime.app.get("health")
            what = f"GET {health} answering 2xx/3xx" if health else f"port {port} accepting a connection"
            self._note(
                runtime,
                f"{who}failed its health check {watched.failures} times in a row (waited "
                f"{self._timeout:g} s for {what}): out of the balancing until it answers",
            )

    def _forget(self, current: dict[int, Watched]) -> None:
        """Keep only ``current``: an instance no longer probed (stopped, scaled away, its app down
        to one) takes requests as the balancer decides without this probe."""
        for port, watched in self._watched.items():
            now = current.get(port)
            if watched.out and (now is None or not now.out):
                self._balancer.put_back(port)
        self._watched = current

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
