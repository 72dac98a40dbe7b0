"""A rolling restart's hand-over: the old process serves until its successor is ready.

The :class:`~bolt_host.services.supervisor.Supervisor` drives it as part of its state
machine (under the app's lock, the start task joined as any other start):

1. :func:`hand_over` moves the running process off the :class:`AppRuntime` into a
   :class:`Retiring` (its port, its token set aside so it stays valid, its generation);
2. an ordinary start brings up the new process on a new port, and while it gets ready
   :func:`serving_port` keeps sending the proxy's requests to the retiring one;
3. ready: the proxy goes to the new port at once; the retiring process is drained (no new
   request, those in flight finish, bounded by the stop grace) and its tree ended;
   never ready: :func:`take_back` makes the retiring process the app's process again, and
   it never stopped serving.

Both processes share the app's cgroup while they overlap (its limits cover the two): the
spawner empties that group only when no retiring process is left in it.

Apps that cannot run two copies at once (a file lock, a fixed port) set ``bolt.rolling``
to false; :func:`why_not_rolling` says so and the supervisor restarts them the plain way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bolt_host.errors import BoltError
from bolt_host.services.app_runtime import RUNNING, STOPPING, AppRuntime
from bolt_host.services.instances import Balancer
from bolt_host.services.processes import AppProcess
from bolt_host.services.tokens import AppTokens
from bolt_host.services.traffic import Lease, Traffic

if TYPE_CHECKING:
    from bolt_host.services.spawner import Spawner


@dataclass(eq=False)
class Retiring:
    """The process a rolling restart replaces, with what it held."""

    app: dict[str, Any]
    process: AppProcess
    port: int | None
    generation: int
    marker: str
    confinement: Any
    started_at: float | None
    started_monotonic: float | None
    log_offset: int
    token_key: str

    @property
    def alive(self) -> bool:
        return self.process.alive and not self.process.exited.done()

    def record(self) -> dict[str, Any]:
        """What boot needs to end it if the host dies mid-switch."""
        return {
            "pid": self.process.pid,
            "create_time": self.process.create_time,
            "generation": self.generation,
            "port": self.port,
            "tokenKey": self.token_key,
        }


class SwitchFailed(BoltError):
    """A restart of an app's instances (one at a time) stopped at instance ``failed``, which did
    not come up: ``switched`` are the instances already on the new app (they run it), those
    after it were not touched, and ``kept``: its old process serves on (else it is down)."""

    def __init__(self, failure: BoltError, switched: list[int], failed: int, kept: bool) -> None:
        super().__init__(
            failure.code,
            failure.message,
            user_title=failure.user_title,
            user_message=failure.user_message,
            details=failure.details,
        )
        self.switched = switched
        self.failed = failed
        self.kept = kept


class Rollovers:
    """The supervisor's hand for rolling restarts: hand-over, routing, drain, end."""

    def __init__(
        self, spawner: Spawner, tokens: AppTokens, grace_seconds: float, note: Callable[[AppRuntime, str], None]
    ) -> None:
        self._spawner = spawner
        self._tokens = tokens
        self._grace = grace_seconds
        self.note = note  # a line in the app's own log
        self.traffic = Traffic()  # requests in flight through the proxy, per app port
        self.balancer = Balancer(self.traffic)

    def hand_over(self, runtime: AppRuntime) -> Retiring:
        return hand_over(runtime, self._tokens)

    def take_back(self, runtime: AppRuntime) -> bool:
        return take_back(runtime, self._tokens)

    def lease(self, runtimes: list[AppRuntime]) -> Lease | None:
        """Pick the serving port among the app's instances and hold it in one step (no await
        between: a drain that begins after a switch sees every request routed before it)."""
        ports = [port for rt in runtimes if not rt.draining and (port := serving_port(rt)) is not None]
        port = self.balancer.pick(ports)
        return self.traffic.enter(port) if port is not None else None

    async def drain(self, runtime: AppRuntime, retiring: Retiring) -> None:
        """Wait until the requests in flight on ``retiring`` have finished, at most the stop grace."""
        if retiring.port is None:
            return
        grace = retiring.app.get("stopGraceSeconds")
        grace = self._grace if grace is None else float(grace)
        idle = asyncio.ensure_future(self.traffic.wait_idle(retiring.port, grace))
        try:  # or until the process is gone anyway (a stop ended it, it crashed)
            waits: set[asyncio.Future[Any]] = {idle, retiring.process.exited}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
        busy = self.traffic.outstanding(retiring.port)
        if busy and not retiring.process.exited.done():
            self.note(runtime, f"pid {retiring.process.pid}: {busy} requests still open after the stop grace")

    async def end(self, runtime: AppRuntime) -> Retiring | None:
        """End the app's retiring process now (its tree, port, token); the one ended, if any."""
        retiring: Retiring | None = runtime.retiring
        if retiring is None:
            return None
        await self._spawner.retire(runtime, retiring)
        runtime.retiring = None
        return retiring


def why_not_rolling(runtime: AppRuntime, fixed_port: int | None) -> str | None:
    """Why ``runtime`` gets a plain restart instead, or None when a rolling one can go."""
    if not runtime.is_server:
        return "it has no server"
    if runtime.app.get("rolling") is False:
        return "bolt.rolling is false"
    if fixed_port is not None:
        return f"it must listen on port {fixed_port}"
    if runtime.status != RUNNING or runtime.process is None or runtime.retiring is not None:
        return "it is not running (or already switching)"
    return None


def hand_over(runtime: AppRuntime, tokens: AppTokens) -> Retiring:
    """Move the running process off ``runtime``: a new start gets a new port and token."""
    assert runtime.process is not None
    token_key = f"{runtime.key}#retiring"
    tokens.set_aside(runtime.key, token_key)
    retiring = Retiring(
        app=runtime.app,
        process=runtime.process,
        port=runtime.port,
        generation=runtime.generation,
        marker=runtime.marker,
        confinement=runtime.confinement,
        started_at=runtime.started_at,
        started_monotonic=runtime.started_monotonic,
        log_offset=runtime.log_offset,
        token_key=token_key,
    )
    runtime.process = runtime.port = runtime.confinement = None
    runtime.retiring = retiring
    return retiring


def take_back(runtime: AppRuntime, tokens: AppTokens) -> bool:
    """The new process never became ready: the retiring one is the app's process again
    (with its app version, generation, port and token).  False when it is gone too."""
    retiring, runtime.retiring = runtime.retiring, None
    if retiring is None or not retiring.alive:
        if retiring is not None:
            tokens.revoke(retiring.token_key)
        return False
    runtime.app, runtime.process, runtime.port = retiring.app, retiring.process, retiring.port
    runtime.generation, runtime.confinement = retiring.generation, retiring.confinement
    runtime.started_at, runtime.started_monotonic = retiring.started_at, retiring.started_monotonic
    runtime.log_offset = retiring.log_offset
    runtime.status, runtime.exit_code, runtime.reason = RUNNING, None, None
    tokens.put_back(runtime.key, retiring.token_key)
    return True


def serving_port(runtime: AppRuntime) -> int | None:
    """The port the proxy sends ``runtime``'s requests to: the running process's, or, while its
    successor gets ready, the retiring one's."""
    if runtime.status == RUNNING and runtime.port is not None:
        return runtime.port
    retiring: Retiring | None = runtime.retiring
    if retiring is not None and retiring.port is not None and runtime.status != STOPPING and retiring.alive:
        return retiring.port
    return None


def recorded_retiring(runtime: AppRuntime, record: dict[str, Any]) -> Retiring | None:
    """The retiring process a host killed mid-switch left in ``record``, if it still runs;
    boot ends it (the successor, if it got so far, is the one recorded as the app's)."""
    found = record.get("retiring")
    if not isinstance(found, dict) or not found.get("pid") or not found.get("create_time"):
        return None
    marker = runtime.marker_of(int(found.get("generation") or 0))
    process = AppProcess.adopt(int(found["pid"]), float(found["create_time"]), marker)
    if process is None:
        return None
    return Retiring(
        app=runtime.app,
        process=process,
        port=None,  # never held by this host's port pool
        generation=int(found.get("generation") or 0),
        marker=marker,
        confinement=None,
        started_at=None,
        started_monotonic=None,
        log_offset=0,
        token_key=str(found.get("tokenKey") or f"{runtime.key}#retiring"),
    )
