"""Bringing one app's process into being, and sweeping away everything it leaves.

The :class:`~bolt_host.services.supervisor.Supervisor` decides *when* (its state
machine); this module does *how*: the port, the environment and token, the
confinement (uid, cgroup, sandbox), the log file, the launch; and after an exit
or a stop, the tree kill, the cgroup, the port and the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from bolt_host.errors import APP_START_FAILED, BoltError
from bolt_host.services import applogs
from bolt_host.services.app_runtime import AppRuntime
from bolt_host.services.launch_turns import LaunchTurns
from bolt_host.services.limits import out_of_memory_reason
from bolt_host.services.ports import PORT_FREE_TIMEOUT, PortPool, wait_port_free
from bolt_host.services.processes import (
    AppProcess,
    Launched,
    app_environment,
    build_command,
    launch,
)
from bolt_host.services.proctable import MARKER_VARIABLE, SharedSnapshots, processes_by_marker, read_environ_value
from bolt_host.services.rollover import Retiring
from bolt_host.services.sandbox import UID, Confinement, Isolation
from bolt_host.services.stop_batch import StopBatch
from bolt_host.services.tokens import AppTokens
from bolt_host.services.tree_stop import TreeStop, end_strays

log = logging.getLogger("bolt_host.supervisor")

ExtraEnv = Callable[[dict[str, Any]], Awaitable[dict[str, str]]]
RequestedPort = Callable[[dict[str, Any]], Awaitable[int | None]]


class RecordGeneration(Protocol):
    """Writes the app's record of the generation about to be spawned; returns once it is on
    disk, or unless ``durable``, once a host started after this one is killed would read it."""

    def __call__(self, *, durable: bool) -> Awaitable[None]: ...


class Spawner:
    def __init__(
        self,
        *,
        logs: applogs.AppLogFiles,
        tokens: AppTokens,
        host_url: str,
        ports: PortPool,
        grace_seconds: float,
        snapshots: SharedSnapshots,
        extra_env: ExtraEnv | None = None,
        requested_port: RequestedPort | None = None,
        isolation: Isolation | None = None,
        group_in_use: Callable[[AppRuntime], bool] = lambda runtime: False,
    ) -> None:
        self._group_in_use = group_in_use  # another instance of the app still runs in its cgroup
        self._logs = logs
        self._tokens = tokens
        self._host_url = host_url
        self._ports = ports
        self._grace = grace_seconds
        self._snapshots = snapshots
        self._extra_env = extra_env
        self._requested_port = requested_port
        self._isolation = isolation
        self._turns = LaunchTurns()  # one launch per turn of the event loop

    async def end_unrecorded(self, runtimes: list[AppRuntime]) -> None:
        """End what was spawned for ``runtimes`` but never recorded (the host was killed between a
        spawn and its write): found by marker, ended only when it holds that app's own token."""
        if not runtimes:
            return
        found = await asyncio.to_thread(processes_by_marker, self._host_url)
        for runtime in runtimes:
            await end_strays(
                runtime.name,
                runtime.marker,
                found.get(runtime.marker, []),
                belongs=functools.partial(self._tokens.belongs_to, runtime.name),
                grace=self._grace,
                snapshots=self._snapshots,
            )

    async def spawn(self, runtime: AppRuntime, before_launch: RecordGeneration) -> AppProcess:
        """Start the app's process; ``before_launch`` runs once everything is ready but the
        process does not exist yet (the supervisor records the generation there)."""
        app, name = runtime.app, runtime.name
        argv = build_command(app)
        folder = app.get("folder")
        if not folder or not Path(folder).is_dir():
            raise removed(name)
        if runtime.is_server:
            runtime.port = self._ports.acquire(name, await self.fixed_port(app))
        extra = await self._extra_env(app) if self._extra_env is not None else {}
        new_uid = self._isolation is not None and self._assign(runtime)
        token = self._tokens.issue(name, runtime.key)
        # The record (generation, token) must be there for a host started after a kill -9 of
        # this one: it adopts the process, or finds it by marker and token and ends it.  A
        # machine crash ends the process too, so visible is enough and no fsync sits between
        # a crash and its restart.  A new uid is durable before anything runs as it: files the
        # app keeps must never belong to a number the host forgot and may give to another app.
        # The write runs while the confinement is prepared (in a worker thread, the first time).
        recorded = asyncio.ensure_future(before_launch(durable=new_uid))
        try:
            if self._isolation is not None:
                runtime.confinement = await self._confine(runtime, argv)
                argv = runtime.confinement.argv
                extra = {**extra, **runtime.confinement.env}
        finally:
            await recorded
        env = app_environment(app, extra, name=name, port=runtime.port, token=token, host_url=self._host_url)
        env[MARKER_VARIABLE] = runtime.marker
        async with self._turns.turn():  # no await from the launch to runtime.process: a stop finds it
            try:
                launched, runtime.log_offset = self._launch(runtime, argv, folder, env)
            except OSError as exc:
                if not Path(folder).is_dir():  # a delete won the race since the check above
                    raise removed(name) from exc
                program = Path(argv[0]).name
                raise BoltError(APP_START_FAILED, f"Could not run {program!r}: {exc.strerror or exc}") from exc
            process = runtime.process = AppProcess.watch(launched)
            runtime.started_at, runtime.started_monotonic = time.time(), time.monotonic()
        return process

    @property
    def launches_queued(self) -> int:
        """Launches waiting for their turn (:mod:`launch_turns`)."""
        return self._turns.queued

    async def fixed_port(self, app: dict[str, Any]) -> int | None:
        """The one port the app must listen on (a plugin's ``requested_port``), or None."""
        return await self._requested_port(app) if self._requested_port is not None else None

    def _assign(self, runtime: AppRuntime) -> bool:
        """Give the app its uid (in uid mode); True when the number is new, allocated now."""
        assert self._isolation is not None
        try:
            known = self._isolation.identities.known(runtime.name)
            return self._isolation.assign(runtime.app) not in (None, known)
        except (OSError, RuntimeError) as exc:
            raise confine_failed(runtime.name, exc) from exc

    async def _confine(self, runtime: AppRuntime, argv: list[str]) -> Confinement:
        assert self._isolation is not None
        try:
            again = self._isolation.confine_again(runtime.app, argv)  # nothing to do since the last start
            if again is not None:
                return again
            # in a thread: the first start after an install hands the whole code tree to the app's gid
            return await asyncio.to_thread(self._isolation.confine, runtime.app, argv)
        except (OSError, RuntimeError) as exc:
            raise confine_failed(runtime.name, exc) from exc

    def _launch(self, runtime: AppRuntime, argv: list[str], folder: str, env: dict[str, str]) -> tuple[Launched, int]:
        """Open the app's log and start its process.

        On the event loop, not in a worker thread: measured on 200 starts, threads cost the
        host 40 % more CPU (GIL hand-offs) for no gain in the time until all answered."""
        log_fd, log_offset = self._logs.open_for_spawn(runtime.name)
        try:
            return launch(argv, cwd=folder, env=env, log_fd=log_fd), log_offset
        finally:
            os.close(log_fd)

    def take_over(self, runtime: AppRuntime, process: AppProcess) -> None:
        """Claim what an adopted process holds: its cgroup, its port, its token."""
        if self._isolation is not None:
            runtime.confinement = self._isolation.reattach(runtime.app)
        if runtime.port is not None:
            self._ports.hold(runtime.port, runtime.name)
        token = read_environ_value(process.pid, "BOLT_APP_TOKEN")
        if token and runtime.instance == 0:  # lets the host sign the events it sends to the adopted app
            self._tokens.remember(runtime.name, token)

    @property
    def ports(self) -> PortPool:
        return self._ports

    def interrupt(self, runtime: AppRuntime, batch: StopBatch | None = None) -> None:
        """Send the app's tree its SIGTERM now when that needs no wait (the tree is its sealed
        cgroup); :meth:`cleanup` ends it.  A stop calls this before its notes and events, so a
        stop of many apps has signalled every one of them before it writes anything (and
        with a ``batch``, recorded that each is meant to be stopped)."""
        stop = self.ending(runtime)
        if stop is not None:
            stop.begin()
        if batch is not None:
            batch.intend(runtime)

    def ending(self, runtime: AppRuntime) -> TreeStop | None:
        """The end of the app's tree (one per process; None without one), its members read now when
        that needs no wait: :meth:`TreeStop.begin` then sends its SIGTERM at once (:mod:`stop_pass`)."""
        process = runtime.process
        if process is None:
            return None
        if process.ending is None:
            process.ending = self._stop_of(runtime, process, self._shares_group(runtime))
            process.ending.look()
        return process.ending

    async def cleanup(self, runtime: AppRuntime, batch: StopBatch | None = None) -> int | None:
        """Kill what is left of the app's tree, reap it, free its port (``batch``: checked and
        freed with the other ports of its call), revoke its token."""
        exit_code = None
        process = runtime.process
        shared, group_empty = self._shares_group(runtime), False
        if process is not None:
            stop = process.ending or self._stop_of(runtime, process, shared)
            survivors = await self._end_tree(runtime.name, process, stop)
            group_empty = stop.group_empty  # its last look, after every exit: no need to look again
            if survivors:
                runtime.reason = f"processes {survivors} survived SIGKILL (stuck in the kernel?)"
            if process.exited.done() and not process.exited.cancelled() and not process.adopted:
                exit_code = process.exited.result()
            process.reap()
            process.close()
            runtime.process = None
        if runtime.confinement is not None and (group_empty or shared):
            runtime.confinement = None  # nothing left in it, or the app's group holds a process that serves on
        elif runtime.confinement is not None:
            await self._empty_cgroup(runtime)
        if runtime.port is not None and batch is not None:
            batch.free_later(runtime.port, runtime.name)
            runtime.port = None
        elif runtime.port is not None:
            if not await wait_port_free(runtime.port, PORT_FREE_TIMEOUT):
                log.warning("%s: port %s still busy after its tree is gone", runtime.name, runtime.port)
            self._ports.release(runtime.port)
            runtime.port = None
        self._tokens.revoke(runtime.key)
        return exit_code

    async def retire(self, runtime: AppRuntime, retiring: Retiring) -> None:
        """End the process a rolling restart replaced: its tree, its port, its token.  Its cgroup
        is the app's and stays with the successor (emptied here only when there is none)."""
        process = retiring.process
        await self._end_tree(runtime.name, process, self._tree_stop(retiring.app, process, retiring.marker))
        process.reap()
        process.close()
        if retiring.confinement is not None and runtime.process is None and not self._group_in_use(runtime):
            runtime.confinement, retiring.confinement = retiring.confinement, None
            await self._empty_cgroup(runtime)
        if retiring.port is not None:
            if not await wait_port_free(retiring.port, PORT_FREE_TIMEOUT):
                log.warning("%s: port %s still busy after its tree is gone", runtime.name, retiring.port)
            self._ports.release(retiring.port)
        self._tokens.revoke(retiring.token_key)

    def _shares_group(self, runtime: AppRuntime) -> bool:
        """The app's cgroup holds other processes of it (a retiring one, another instance)."""
        return runtime.retiring is not None or self._group_in_use(runtime)

    def _stop_of(self, runtime: AppRuntime, process: AppProcess, shared: bool) -> TreeStop:
        """The end of the app's tree, read from its sealed cgroup's member list when that holds
        this process's tree alone (not ``shared``), else from the process table."""
        group = None if process.adopted or shared else _sealed_group_members(runtime)
        return self._tree_stop(runtime.app, process, runtime.marker, group)

    def _tree_stop(
        self, app: dict[str, Any], process: AppProcess, marker: str, group_members: Callable[[], set[int]] | None = None
    ) -> TreeStop:
        """SIGTERM, the app's stop grace, SIGKILL; the tree read from ``group_members`` (the app's
        sealed cgroup) when given, else from the process table (by process group and marker)."""
        grace = app.get("stopGraceSeconds")
        return TreeStop(
            process,
            marker=marker,
            since=process.create_time,
            grace=self._grace if grace is None else float(grace),
            snapshots=self._snapshots,
            group_members=group_members,
        )

    async def _end_tree(self, name: str, process: AppProcess, stop: TreeStop) -> list[int]:
        """End the tree ``stop`` describes: the pids that survived even SIGKILL."""
        survivors = await stop.finish()
        if survivors:
            log.warning("%s: processes %s survived SIGKILL (stuck in the kernel?)", name, survivors)
        process.check_exited()
        return survivors

    async def _empty_cgroup(self, runtime: AppRuntime) -> None:
        """Kill whatever is still in the app's cgroup (an escaper that dropped the marker and
        left the process group).

        The group itself stays for the app's next start (``create`` lifts what a reused group
        had) and goes when the app is deleted: removing a memory group and making it again
        cost each stop and restart milliseconds in the kernel, and a stop of 200 apps waited
        on 200 of them.  An empty group, the usual case, needs no worker thread."""
        confinement, runtime.confinement = runtime.confinement, None
        cgroup = confinement.cgroup if confinement is not None else None
        if cgroup is None or not cgroup.members():
            return
        killed, left = await asyncio.to_thread(cgroup.kill_all)
        for pid in killed:  # escapers that re-parented to the host: reap them by pid, never waitpid(-1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if left:
            log.warning("%s: processes %s survived SIGKILL in its cgroup", runtime.name, sorted(left))
            runtime.reason = f"processes {sorted(left)} survived SIGKILL (stuck in the kernel?)"


def _sealed_group_members(runtime: AppRuntime) -> Callable[[], set[int]] | None:
    """The member list of the app's cgroup when the app cannot leave it (its own uid, so
    not the root-owned group files), else None (its tree is found in the process table)."""
    confinement = runtime.confinement
    if confinement is None or confinement.cgroup is None or confinement.mode != UID or confinement.uid is None:
        return None
    members: Callable[[], set[int]] = confinement.cgroup.members
    return members


def out_of_memory(runtime: AppRuntime) -> str | None:
    """The out-of-memory reason when the app's memory limit killed a process of it, or None."""
    confinement = runtime.confinement
    if confinement is None or not confinement.out_of_memory():
        return None
    return out_of_memory_reason(confinement.limits)


def confine_failed(name: str, exc: Exception) -> BoltError:
    return BoltError(APP_START_FAILED, f"Could not confine app {name!r}: {exc}")


def removed(name: str) -> BoltError:
    return BoltError(APP_START_FAILED, f"App {name!r} was removed (its folder is gone); it cannot start")
