"""Supervision of app processes: one state machine per app.

::

    stopped/failed/crashed --start--> starting --ready--> running --exit--> crashed
         ^                              |                   |                 |
         |                         exit/timeout           stop          restart policy
         |                              v                   v                 v
         +------------------------- failed   stopping --> stopped   backoff -> starting
                                                                     (or failed: crash loop)

Every command on an app (start, stop, restart, a crash being handled, a backoff timer firing) runs under that app's
lock, so they serialise.  A start reserves ``starting`` and creates its start task under the lock, then waits for it
outside the lock: a concurrent start joins the same task (one process, never two), a stop cancels it and kills what
it spawned.  Each start bumps the app's generation; an exit event of an older generation is ignored.

An app may run several processes ("instances", each an :class:`AppRuntime` with its own
machine, kept in :class:`Runtimes`); :class:`Scaling` starts, stops and restarts them and
hands an app over from one process to the next in a rolling restart, and :func:`recover`
adopts what a previous host left; both drive this machine only through :class:`Machine`.

Mechanics live next door: spawn and sweep in :mod:`spawner` (one launch per turn of the loop: :mod:`launch_turns`);
pidfd exit watch, tree kill, adoption checks in :mod:`processes`; restart arithmetic in :mod:`restarts`; readiness
in :mod:`readiness`; log notes in :mod:`runlog`; ports in :mod:`ports`; CPU/memory in :mod:`stats`.

Persistence: section ``supervisor`` of the host's :class:`StateFile` (``runtime.json``) holds per app ``{name, pid,
create_time, port, generation, desired, startedAt, restarts}``, written at start, exit and stop; concurrent starts
share writes (group commit) and the event loop never waits on fsync. ``boot()`` adopts a recorded process only when
its pid, start time and ``BOLT_SUPERVISOR_ID`` marker all match; otherwise it never signals that pid.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bolt_host.errors import APP_NAME_MISSING, APP_NOT_RUNNING, APP_START_FAILED, BoltError
from bolt_host.services import applogs
from bolt_host.services.app_runtime import (
    BACKOFF,
    CRASHED,
    DESIRED_RUNNING,
    DESIRED_STOPPED,
    FAILED,
    LIVE_STATUSES,
    RUNNING,
    SECTION,
    STARTING,
    STOPPED,
    STOPPING,
    AppRuntime,
)
from bolt_host.services.background import Background, retrieve_exception
from bolt_host.services.heap_freeze import frozen_heap
from bolt_host.services.instances import DEFAULT_MAX_INSTANCES
from bolt_host.services.live_listing import LiveListing
from bolt_host.services.ports import PortPool
from bolt_host.services.processes import AppProcess, OrphanReaper, describe_exit, enable_child_subreaper
from bolt_host.services.proctable import SharedSnapshots, data_dir_id
from bolt_host.services.readiness import ExitedDuringStart, NeverReady, wait_until_ready
from bolt_host.services.recovery import LoadApp, recover
from bolt_host.services.restarts import RestartPolicy, wants_restart
from bolt_host.services.rollover import Rollovers
from bolt_host.services.runlog import RunLog
from bolt_host.services.runtimes import Runtimes
from bolt_host.services.sandbox import Isolation
from bolt_host.services.scaling import Scaling
from bolt_host.services.spawner import ExtraEnv, RequestedPort, Spawner, out_of_memory
from bolt_host.services.start_batch import start_each
from bolt_host.services.start_command import is_serverless
from bolt_host.services.stats import StatsSampler, TreeUsage
from bolt_host.services.stop_batch import StopBatch
from bolt_host.services.stop_finish import StopFinish
from bolt_host.services.stop_pass import signal_first
from bolt_host.services.tokens import AppTokens
from bolt_host.services.traffic import Lease
from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.supervisor")

Publish = Callable[[str, dict[str, Any]], Awaitable[None]]
VerifyApp = Callable[[dict[str, Any]], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        *,
        state: StateFile,
        data_dir: Path,
        tokens: AppTokens,
        host_url: str,
        port_range: tuple[int, int] = (20000, 29999),
        grace_seconds: float = 10.0,
        ready_timeout: float = 30.0,
        stats_interval: float = 2.0,
        publish: Publish | None = None,
        extra_env: ExtraEnv | None = None,
        requested_port: RequestedPort | None = None,
        load_app: LoadApp | None = None,
        verify_app: VerifyApp | None = None,
        autostart: bool = True,
        restart_policy: RestartPolicy | None = None,
        log_max_bytes: int = applogs.DEFAULT_MAX_BYTES,
        log_keep: int = applogs.DEFAULT_KEEP,
        isolation: Isolation | None = None,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        health_interval: float | None = None,  # None: health_probe.DEFAULT_INTERVAL
    ) -> None:
        self._state = state
        self._runlog = RunLog(applogs.AppLogFiles(Path(data_dir) / "logs" / "apps", log_max_bytes, log_keep))
        self._grace = grace_seconds
        self._ready_timeout = ready_timeout
        self._publish = publish
        self._load_app = load_app
        self._verify_app = verify_app
        self._autostart = autostart
        self._policy = restart_policy or RestartPolicy()
        # by runtime.key: every instance of every app; the host's id goes into their markers
        self._apps = Runtimes(self._policy, data_dir_id(data_dir))
        self._reaper = OrphanReaper()
        self._snapshots = SharedSnapshots()  # concurrent stops share their passes over /proc
        self._spawner = Spawner(
            logs=self._runlog.files,
            tokens=tokens,
            host_url=host_url,
            ports=PortPool(port_range),
            grace_seconds=grace_seconds,
            snapshots=self._snapshots,
            extra_env=extra_env,
            requested_port=requested_port,
            isolation=isolation,
            group_in_use=self._apps.group_in_use,
        )
        self._stats = StatsSampler(
            stats_interval,
            self._apps.stat_roots,
            self._apps.stat_markers,
            self._reaper.watch_all,
            groups=self._apps.stat_groups,
        )
        self._listing = LiveListing(self._apps, self._stats)
        self._background = Background()
        self._closing = False
        self._finish = StopFinish(self, self._runlog, self._spawner, state)
        self._rollovers = Rollovers(self._spawner, tokens, grace_seconds, self._runlog.note)
        self._scaling = Scaling(
            self, self._apps, self._rollovers, self._spawner, state, max_instances, grace_seconds, health_interval
        )

    # public API ----------------------------------------------------------------
    async def boot(self, start_concurrency: int = 0) -> None:
        """Adopt recorded processes that are still ours; autostart apps meant to run (that many
        at once, 0: all, :mod:`start_batch`).  Returns once each is ready or has failed."""
        self._closing = False
        enable_child_subreaper()
        to_start = await recover(
            self._state.rows(SECTION),
            machine=self,
            runtimes=self._apps,
            spawner=self._spawner,
            load_app=self._load_app,
            autostart=self._autostart,
        )
        self._stats.start()
        self._background.run(self._runlog.rotate_periodically(self._apps.values))
        for app, result in zip(to_start, await start_each(to_start, self.start_app, start_concurrency), strict=True):
            if isinstance(result, BaseException):
                log.warning("autostart of %s failed: %s", app["name"], result)

    async def shutdown(self) -> None:
        """Stop every app gracefully; their desired state is kept for the next boot."""
        self._closing = True
        await self._stats.stop()

        async def stop_one(runtime: AppRuntime) -> None:
            async with runtime.lock:
                if runtime.process is not None or runtime.status in (STARTING, BACKOFF):
                    await self.stop_locked(runtime, desired_after=runtime.desired, by="host shutdown")

        await asyncio.gather(*(stop_one(rt) for rt in list(self._apps.values())), return_exceptions=True)
        await self._scaling.close()
        await self._background.cancel(rt.restart_task for rt in self._apps.values() if rt.restart_task is not None)
        self._reaper.close()

    async def detach(self) -> None:
        """Forget every process without stopping it or writing records (simulates a host crash)."""
        self._closing = True
        await self._stats.stop()
        await self._scaling.close()
        await self._background.cancel(t for rt in self._apps.values() for t in (rt.start_task, rt.restart_task) if t)
        for runtime in self._apps.values():
            if runtime.process is not None:
                runtime.process.detach()
            if runtime.retiring is not None:
                runtime.retiring.process.detach()
        self._apps.clear()
        self._reaper.close()

    async def start_app(self, app: dict[str, Any]) -> dict[str, Any]:
        """Start ``app`` and return its context once ready (idempotent)."""
        if self._closing:
            raise BoltError(APP_START_FAILED, "The host is shutting down; nothing new starts")
        runtime = self._apps.slot(_app_name(app), app)
        if is_serverless(app):
            await self.verify(app)  # as Bolt: the checks come before even a server-less app's context
            return await self._open_serverless(runtime, app)
        context = await self.start_one(runtime, app)
        await self.scale(app)
        return context

    async def start_one(self, runtime: AppRuntime, app: dict[str, Any]) -> dict[str, Any]:
        """Start one instance of ``app`` (idempotent); its context once ready."""
        async with runtime.lock:
            if runtime.status == RUNNING:
                return self.context_of(runtime)
            if runtime.status == STARTING and runtime.start_task is not None:
                task = runtime.start_task
            else:
                await self.verify(app)
                await self._discard_leftovers(runtime)
                runtime.crashes.reset()
                runtime.desired = DESIRED_RUNNING
                task = self.begin_start(runtime, app, automatic=False)
        return await self.join_start(task)

    async def stop_app(self, name: str, by: str | None = None, batch: StopBatch | None = None) -> dict[str, Any]:
        """Stop ``name``: its final context once its whole tree is gone.  ``by`` (who asked: a user
        or app name) goes into the app's log; ``batch``: see :meth:`stop_apps`."""
        runtime = self._apps.get(name)
        if runtime is None:
            raise BoltError(APP_NOT_RUNNING, f"App {name!r} is not running")
        await asyncio.gather(*(self._scaling.stop_extra(extra, by) for extra in self._apps.extras(name)))
        async with runtime.lock:
            return await self.stop_locked(runtime, desired_after=DESIRED_STOPPED, by=by, batch=batch)

    async def stop_apps(self, names: list[str], by: str | None = None) -> list[dict[str, Any] | BaseException]:
        """:meth:`stop_app` for each of ``names`` at once: a context or an error for each, once every
        tree is gone, with one check of their ports and one write of their states (:mod:`stop_batch`)."""
        batch = StopBatch(self._state, self._spawner.ports, self._background)
        with frozen_heap():
            return await batch.run(await signal_first(names, self, self._apps, self._spawner, batch, by))

    async def restart_app(
        self, app: dict[str, Any], by: str | None = None, rolling: bool = False, only: list[int] | None = None
    ) -> dict[str, Any]:
        """Restart ``app`` (``only``: those instances): stop, then start; or ``rolling``: the running
        process serves until its successor is ready (see :mod:`scaling`, :mod:`rollover`)."""
        _app_name(app)
        return await self._scaling.restart(app, by, rolling, only)

    async def restart_one(self, runtime: AppRuntime, app: dict[str, Any], by: str | None) -> dict[str, Any]:
        """Stop one instance of ``app`` (if it runs), then start it; its context once ready."""
        if is_serverless(app):
            await self.verify(app)
            async with runtime.lock:
                if runtime.process is not None or runtime.status in (STARTING, BACKOFF):
                    await self.stop_locked(runtime, desired_after=DESIRED_RUNNING)
            return await self._open_serverless(runtime, app)
        async with runtime.lock:
            if runtime.status == STARTING and runtime.start_task is not None:
                task = runtime.start_task  # a start in flight is already a fresh process
            else:
                await self.verify(app)
                was_live = runtime.process is not None or runtime.status in (STARTING, BACKOFF)
                if was_live:
                    await self.stop_locked(runtime, desired_after=DESIRED_RUNNING, by=by)
                    runtime.restarts += 1
                runtime.crashes.reset()
                runtime.desired = DESIRED_RUNNING
                task = self.begin_start(runtime, app, automatic=False)
        return await self.join_start(task)

    async def verify(self, app: dict[str, Any]) -> None:
        """The host's checks an app must pass before a start (its ``bolt.checks`` files unchanged);
        a refusal raises before anything changes."""
        if self._verify_app is not None:
            await self._verify_app(app)

    def refused(self, port: int) -> None:
        """The proxy could not connect to ``port``: no requests to it until it accepts again."""
        self._scaling.refused(port)

    def lease(self, name: str) -> Lease | None:
        """A hold on a port serving ``name`` (its least busy instance) for one proxied request;
        None: nothing serves."""
        return self._scaling.lease(name)

    async def scale(self, app: dict[str, Any]) -> None:
        """Match a running app's instances to its wanted count."""
        await self._scaling.scale(app)

    def context(self, name: str) -> dict[str, Any] | None:
        runtime = self._apps.get(name)
        return self.context_of(runtime) if runtime is not None else None

    def contexts(self) -> list[dict[str, Any]]:
        """Contexts of apps that are running or about to."""
        return [self.context_of(rt) for rt in self._apps.values() if rt.status in LIVE_STATUSES]

    def contexts_json(self, fields: frozenset[str] | None = None, head: bytes = b"", tail: bytes = b"") -> bytes:
        """:meth:`contexts` and the errored apps as a JSON array (for ``GET /api/apps/@live``) between
        ``head`` and ``tail``, each with only ``fields`` when given (see :mod:`live_listing`)."""
        return self._listing.encode(fields, head, tail)

    def log_path(self, name: str) -> Path:
        return self._runlog.path(name)

    def is_active(self, name: str) -> bool:
        runtime = self._apps.get(name)
        return runtime is not None and runtime.status in LIVE_STATUSES

    def rotate_logs(self) -> list[str]:
        """Rotate over-size app logs (in place under running apps); the names rotated."""
        return self._runlog.rotate(self._apps.values())

    # starting ------------------------------------------------------------------
    async def _open_serverless(self, runtime: AppRuntime, app: dict[str, Any]) -> dict[str, Any]:
        """A server-less app has no process: it is "running" once opened, and its start answers
        Bolt's bare context ``{name, path, app}``."""
        async with runtime.lock:
            runtime.app = dict(app)
            if runtime.status != RUNNING:
                runtime.status, runtime.desired = RUNNING, DESIRED_RUNNING
                runtime.exit_code = runtime.reason = None
                runtime.started_at, runtime.started_monotonic = time.time(), time.monotonic()
                await self.persist(runtime)
                await self.emit("app-started", runtime)
            context = self.context_of(runtime)
        return {key: context[key] for key in ("name", "path", "app")}

    def begin_start(self, runtime: AppRuntime, app: dict[str, Any], *, automatic: bool) -> asyncio.Task[Any]:
        """Reserve ``starting`` and create the start task; call with the app's lock held."""
        runtime.app = dict(app)
        runtime.generation += 1
        runtime.status = STARTING
        runtime.exit_code = runtime.reason = runtime.next_restart_at = None
        if automatic:
            runtime.restarts += 1
        else:
            runtime.last_exit = None  # kept until the next start asked for
        self._runlog.note(runtime, f"restarting (restart {runtime.restarts})" if automatic else "starting")
        task = asyncio.create_task(self._run_start(runtime, automatic), name=f"start {runtime.name}")
        task.add_done_callback(retrieve_exception)  # an automatic restart's start nobody awaits
        task.add_done_callback(functools.partial(_forget_start, runtime))
        runtime.start_task = task
        return task

    async def join_start(self, task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise BoltError(APP_START_FAILED, "The start was cancelled by a stop") from None
            raise

    async def _run_start(self, runtime: AppRuntime, automatic: bool) -> dict[str, Any]:
        await self.emit("app-starting", runtime)
        try:
            if automatic:  # a crash restart passes the checks a caller's start passes
                await self.verify(runtime.app)
            process = await self._spawn(runtime)
            recorded = self._state.version  # with the pid's record
            await wait_until_ready(
                exited=process.exited,
                pid=process.pid,
                port=runtime.port if runtime.is_server else None,
                health=runtime.app.get("health") if runtime.is_server else None,
                timeout=self._ready_timeout,
            )
            if process.exited.done():  # seen dying while the last probe was answering
                raise ExitedDuringStart(process.exited.result())
        except asyncio.CancelledError:
            raise  # a stop cancelled us; it kills what we spawned
        except Exception as exc:
            return await self._start_failed(runtime, exc, automatic)
        # No await since the check above: any later exit finds RUNNING and goes through _on_exit.
        runtime.status = RUNNING
        try:
            await self._state.commit(recorded)  # the pid, written while the app got ready: on disk before we answer
        except OSError as exc:
            log.error("%s is running, but its record could not be saved yet: %s", runtime.name, exc)
        port = f", port {runtime.port}" if runtime.port is not None else ""
        self._runlog.note(runtime, f"started (pid {process.pid}{port})")
        # as a stop answers: the event's context, its "app" shared (a new pid has no figures: not a read)
        return dict(await self.emit("app-started", runtime))

    async def _spawn(self, runtime: AppRuntime) -> AppProcess:
        # The generation is recorded before its process exists: a host killed between the
        # spawn and the write after it leaves a process that boot() still finds by its marker.
        process = await self._spawner.spawn(runtime, before_launch=functools.partial(self.persist, runtime))
        process.exited.add_done_callback(functools.partial(self._on_exit, runtime, runtime.generation))
        self._state.put(SECTION, runtime.key, runtime.record())  # written while the app gets ready, by the last
        if not self._spawner.launches_queued:  # launch of a bulk start (a write per launch: ~0.7 ms of CPU each)
            self._state.commit_soon()
        return process

    async def _start_failed(self, runtime: AppRuntime, exc: Exception, automatic: bool) -> dict[str, Any]:
        exit_code = exc.exit_code if isinstance(exc, ExitedDuringStart) else None
        if isinstance(exc, ExitedDuringStart):
            summary = f"{out_of_memory(runtime) or describe_exit(exit_code)} during start"
        elif isinstance(exc, NeverReady | BoltError):
            summary = exc.message if isinstance(exc, BoltError) else str(exc)
        else:
            log.exception("unexpected error starting %s", runtime.name)
            summary = f"{type(exc).__name__}: {exc}"
        tail = self._runlog.tail(runtime)
        reason = self._runlog.with_tail(runtime, summary, tail)
        runtime.keep_exit(exit_code, summary, tail)
        self._runlog.note(runtime, f"start failed: {summary}")
        await self._spawner.cleanup(runtime)
        if automatic:
            await self._after_exit(runtime, exit_code, reason, uptime=0.0)
        else:
            runtime.status, runtime.exit_code, runtime.reason = FAILED, exit_code, reason
            self.persist_soon(runtime)
            await self.emit("app-failed", runtime)
        raise BoltError(APP_START_FAILED, reason)

    # exits, crashes and restarts -------------------------------------------------
    def _on_exit(self, runtime: AppRuntime, generation: int, exited: asyncio.Future[int | None]) -> None:
        """pidfd callback: only an unexpected exit of the current, running process matters."""
        if exited.cancelled() or self._closing:
            return
        if generation != runtime.generation or runtime.status != RUNNING:
            return  # a stale event, or a start/stop that is already waiting for this exit
        adopted = runtime.process is not None and runtime.process.adopted
        runtime.status = CRASHED
        runtime.exit_code = exited.result()
        exited_how = "exited (adopted)" if adopted else describe_exit(runtime.exit_code)
        runtime.reason = out_of_memory(runtime) or exited_how
        log.info("%s (pid %s) %s", runtime.name, runtime.process.pid if runtime.process else None, runtime.reason)
        self._background.run(self._handle_crash(runtime, generation))

    async def _handle_crash(self, runtime: AppRuntime, generation: int) -> None:
        async with runtime.lock:
            if generation != runtime.generation or runtime.status != CRASHED or runtime.process is None:
                return
            uptime = time.monotonic() - (runtime.started_monotonic or time.monotonic())
            runtime.keep_exit(runtime.exit_code, runtime.reason or "", self._runlog.tail(runtime))
            self._runlog.note(runtime, runtime.reason or "exited")
            await self._spawner.cleanup(runtime)
            await self._after_exit(runtime, runtime.exit_code, runtime.reason or "", uptime)

    async def _after_exit(self, runtime: AppRuntime, exit_code: int | None, reason: str, uptime: float) -> None:
        """The process is gone (tree swept): stop, restart later, or give up."""
        runtime.exit_code, runtime.reason = exit_code, reason
        restart = wants_restart(runtime.app.get("restart"), exit_code)
        if exit_code == 0 and not restart:
            runtime.status = STOPPED
            self.persist_soon(runtime)
            await self.emit("app-stopped", runtime)
            return
        runtime.status = CRASHED
        self._state.put(SECTION, runtime.key, runtime.record())  # written below, or with the restart's record
        await self.emit("app-crashed", runtime)
        if not restart:
            self._state.commit_soon()
            return
        runtime.crashes.record(time.monotonic(), uptime)
        if runtime.crashes.over_limit:
            policy = self._policy
            runtime.status = FAILED
            runtime.reason = self._runlog.with_tail(
                runtime,
                f"crash loop: {len(runtime.crashes.recent)} crashes within {policy.window_seconds:g} s, "
                f"not restarted again (last: {reason})",
            )
            self._runlog.note(runtime, f"crash loop: {len(runtime.crashes.recent)} crashes, not restarted again")
            self.persist_soon(runtime)
            await self.emit("app-failed", runtime)
            return
        delay = runtime.crashes.next_delay()
        runtime.status = BACKOFF
        runtime.next_restart_at = time.time() + delay
        if delay > 0:
            self.persist_soon(runtime)
        else:  # the spawn at once writes this with its generation: one write before it, not two
            self._state.put(SECTION, runtime.key, runtime.record())
        self._runlog.note(runtime, f"restart in {delay:.1f} s")
        await self.emit("app-backoff", runtime)
        runtime.restart_task = asyncio.create_task(
            self._restart_later(runtime, runtime.generation, delay), name=f"restart {runtime.name}"
        )

    async def _restart_later(self, runtime: AppRuntime, generation: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with runtime.lock:
            if generation != runtime.generation or runtime.status != BACKOFF or self._closing:
                return
            runtime.restart_task = None
            self.begin_start(runtime, runtime.app, automatic=True)

    # stopping ------------------------------------------------------------------
    async def stop_locked(
        self, runtime: AppRuntime, *, desired_after: str, by: str | None = None, batch: StopBatch | None = None
    ) -> dict[str, Any]:
        was_pending = runtime.status in (STARTING, BACKOFF)
        start_task = runtime.start_task
        if start_task is not None and not start_task.done():
            start_task.cancel()
            await asyncio.wait({start_task})
        await self._scaling.end_retiring(runtime)  # no drain: a stop ends every process of the app
        runtime.cancel_restart()
        runtime.desired = desired_after
        serverless_open = runtime.status == RUNNING and runtime.process is None
        if runtime.process is None and runtime.port is None and not was_pending and not serverless_open:
            await self.persist(runtime)
            raise BoltError(APP_NOT_RUNNING, f"App {runtime.name!r} is not running")
        runtime.status, runtime.reason, runtime.last_exit = STOPPING, None, None
        self._spawner.interrupt(runtime, batch)
        await asyncio.sleep(0)  # every app of a bulk stop gets its SIGTERM before any goes on
        return await self.finish_stop(runtime, by, batch)

    async def finish_stop(self, runtime: AppRuntime, by: str | None, batch: StopBatch | None) -> dict[str, Any]:
        """The rest of a stop once ``runtime`` is ``stopping`` and its tree signalled where that needs no wait."""
        return await self._finish.finish(runtime, by, batch)

    async def finish_claimed(self, runtime: AppRuntime, by: str | None, batch: StopBatch) -> dict[str, Any]:
        """:meth:`finish_stop` for an app a stop of many claimed: answered before its log notes (:mod:`stop_finish`)."""
        return await self._finish.claimed(runtime, by, batch)

    async def _discard_leftovers(self, runtime: AppRuntime) -> None:
        """Before a new start: cancel a pending restart, sweep a crashed tree not yet swept."""
        runtime.cancel_restart()
        if runtime.process is not None or runtime.port is not None:
            await self._spawner.cleanup(runtime)

    # adoption ------------------------------------------------------------------
    async def adopt(self, runtime: AppRuntime, process: AppProcess, record: dict[str, Any]) -> None:
        runtime.adopt(process, record)
        self._spawner.take_over(runtime, process)
        process.exited.add_done_callback(functools.partial(self._on_exit, runtime, runtime.generation))
        self.persist_soon(runtime)
        log.info("adopted %s (pid %s) after a host restart", runtime.name, process.pid)
        self._runlog.note(runtime, f"adopted after a host restart (pid {process.pid})")
        await self.emit("app-started", runtime)

    # helpers -------------------------------------------------------------------
    def context_of(self, runtime: AppRuntime) -> dict[str, Any]:
        return runtime.context(self._usage(runtime))

    def _usage(self, runtime: AppRuntime, reading: bool = True) -> TreeUsage | None:
        process = runtime.process
        return self._stats.latest(runtime.key, process.pid, reading=reading) if process is not None else None

    async def persist(self, runtime: AppRuntime, batch: StopBatch | None = None, *, durable: bool = True) -> None:
        """Record the app's row; wait until it is on disk (with any token change made so far; with a
        ``batch``, its one write before its call answers), or unless ``durable``, until a host started
        after this one is killed would read it (enough for a spawn's generation and token: see spawner).
        For what must hold before it is acknowledged or acted on: a spawn's record, a stop's desired state."""
        self._state.put(SECTION, runtime.key, runtime.record())
        if batch is None:
            await (self._state.commit() if durable else self._state.commit_visible())

    def persist_soon(self, runtime: AppRuntime) -> None:
        """Record the app's row and let it reach the disk without waiting.  For what boot can
        rebuild if the host dies first: a crash, a backoff, a pid (a process whose pid never
        reached the disk is found by its marker and ended)."""
        self._state.put(SECTION, runtime.key, runtime.record())
        self._state.commit_soon()

    async def emit(self, event: str, runtime: AppRuntime, app: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish ``event`` with the app's context (``app``: an earlier event's copy of the app, else copied
        now); that context (the listeners have it: copy it to change it)."""
        context = self.event_context(runtime, app)
        await self.publish_context(event, runtime, context)
        return context

    def event_context(self, runtime: AppRuntime, app: dict[str, Any] | None = None) -> dict[str, Any]:
        return runtime.context(self._usage(runtime, reading=False), app)  # the host's own: not a read of the stats

    async def publish_context(self, event: str, runtime: AppRuntime, context: dict[str, Any]) -> None:
        if self._publish is not None:
            try:
                await self._publish(event, context)
            except Exception:  # a broken listener must not break supervision
                log.exception("publishing %s for %s failed", event, runtime.name)


def _app_name(app: dict[str, Any]) -> str:
    name = app.get("name")
    if not isinstance(name, str) or not name:
        raise BoltError(APP_NAME_MISSING, "The app has no name")
    return name


def _forget_start(runtime: AppRuntime, task: asyncio.Task[Any]) -> None:
    # A finished start task holds its context (and any traceback): 0.9 MB at 200 running apps.
    if runtime.start_task is task:
        runtime.start_task = None
