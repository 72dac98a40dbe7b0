"""Processes of supervised apps: spawn, exit watch, whole-tree kill, adoption checks.

Linux only (pidfds, ``PR_SET_CHILD_SUBREAPER``).  The rules, and why:

* Spawn with ``subprocess.Popen(start_new_session=True)`` and no ``preexec_fn``:
  CPython then uses vfork with signals blocked and resets handlers before exec,
  so a signal sent right after spawn is never lost or delivered to the host.
  Each app leads its own session and process group (pgid == pid).
* Exits are seen through ``os.pidfd_open`` + ``loop.add_reader``: no polling and
  no thread per child (Python 3.11's default child watcher starts one each).
  The exit status is read with ``WNOWAIT`` and the child is reaped only after
  its tree was swept, so the process-group id stays pinned (cannot be reused)
  while we may still ``killpg`` it.
* Signals to single processes go through pidfds, so a recycled pid is never hit.
* An adopted process is not our child: the moment it dies, init reaps it and its pid
  (and the process-group id it led) may go to anyone.  So its group is signalled only
  while its pidfd says it lives, and a tree sweep takes its pid for the app's only
  where the snapshot shows the start time we adopted.
* A pid read from a cgroup's member list is a member only while the list still holds
  it after its start time was read (or its pidfd opened): between two reads it may have
  ended and gone to a process outside the group.
* A marker names one host's app (its data dir's id is part of it): a stop of an
  adopted app searches the whole machine by marker, where another host's app of the
  same name and generation also runs.
* The host makes itself a child subreaper, so grandchildren whose parent died
  (double forks, ``setsid`` escapers) re-parent to the host, where the tree
  sweep and :class:`OrphanReaper` find and reap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bolt_host.services.envnames import refusal
from bolt_host.services.proctable import (
    ProcessTable,
    SharedSnapshots,
    pgid_or,
    read_environ_value,
    read_marker,
    start_time,
)
from bolt_host.services.start_command import command_argv, command_environment

if TYPE_CHECKING:
    from bolt_host.services.stats import Orphan

log = logging.getLogger("bolt_host.processes")

SAFE_BASE_VARIABLES = ("PATH", "LANG", "HOME", "TZ")
LOOPBACK = "127.0.0.1"
PR_SET_CHILD_SUBREAPER = 36
CREATE_TIME_TOLERANCE = 0.05  # psutil derives create_time from clock ticks since boot
KILL_ROUNDS = 5

# Pids this host spawned as app main processes (any Supervisor in this process);
# a re-parented orphan is never one of them.
_main_pids: set[int] = set()
# Popen objects of detached processes, kept so their __del__ neither warns nor
# reaps behind the back of the Supervisor that adopts them (tests only).
_detached: list[subprocess.Popen[bytes]] = []


def enable_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def build_command(app: Mapping[str, Any]) -> list[str]:
    """The argv for ``app``, from the command resolved at install (:mod:`start_command`)."""
    return command_argv(app)


def base_environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The only variables of the host's environment an app inherits."""
    source = os.environ if source is None else source
    env = {key: source[key] for key in SAFE_BASE_VARIABLES if key in source}
    env.setdefault("PATH", os.defpath)
    return env


def app_environment(
    app: Mapping[str, Any], extra: Mapping[str, Any], *, name: str, port: int | None, token: str, host_url: str
) -> dict[str, str]:
    """An app's whole environment: a few safe host variables, the manifest's ``env``, what
    plugins add (``extra``), then the host's own variables, which nothing can override."""
    env = base_environment()
    env.update(command_environment(app, env["PATH"]))
    env.update({str(key): str(value) for key, value in (app.get("env") or {}).items()})
    for key, value in extra.items():
        why = refusal(str(key))
        if why is not None:  # the APIs refuse these with a 400; a plugin's dict is checked here
            log.warning("%s: env %s from a plugin not passed on: %s", name, key, why)
            continue
        env[str(key)] = str(value)
    if port is not None:
        env["PORT"] = str(port)
    env.update({"HOST": LOOPBACK, "BOLT_APP_NAME": name, "BOLT_APP_TOKEN": token, "BOLT_HOST_URL": host_url})
    return env


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (adopted)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def create_time_of(pid: int) -> float | None:
    return start_time(pid)


def identity_matches(pid: int, create_time: float, marker: str) -> bool:
    """Is ``pid`` still the process we recorded (same start time, same marker)?"""
    actual = create_time_of(pid)
    if actual is None or abs(actual - create_time) > CREATE_TIME_TOLERANCE:
        return False
    return read_marker(pid) == marker


def is_main_pid(pid: int) -> bool:
    return pid in _main_pids


def _pidfd_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _open_verified_pidfd(pid: int, create_time: float) -> int | None:
    """A pidfd for ``pid`` only if it is still the process that started at ``create_time``."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    # Checked after opening: the pidfd now pins the process we compare.
    actual = create_time_of(pid)
    if actual is None or abs(actual - create_time) > CREATE_TIME_TOLERANCE:
        os.close(pidfd)
        return None
    return pidfd


def _exit_code_from(result: Any) -> int | None:
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)


@dataclass(frozen=True)
class Launched:
    """A started, unreaped child: what :meth:`AppProcess.watch` needs."""

    popen: subprocess.Popen[bytes]
    pidfd: int
    create_time: float


def launch(
    argv: list[str], *, cwd: str | Path | None, env: dict[str, str], log_fd: int, pass_fds: tuple[int, ...] = ()
) -> Launched:
    """Start ``argv`` in a session of its own, output to ``log_fd``, inheriting only ``pass_fds``.
    Blocking: safe to run in a worker thread, so a storm of starts does not stall the event loop
    while each child execs."""
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        close_fds=True,
        pass_fds=pass_fds,
        start_new_session=True,
    )
    # Popen returns after a successful exec; the child is unreaped, so its pid is ours.
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # e.g. out of file descriptors: do not leave an unwatched child behind
        os.killpg(popen.pid, signal.SIGKILL)  # its own group, pinned while unreaped
        popen.wait()
        raise
    _main_pids.add(popen.pid)
    # The unreaped child's /proc entry exists even if it already exited.
    return Launched(popen, pidfd, start_time(popen.pid) or time.time())


class AppProcess:
    """One app's main process, spawned by us or adopted after a host restart.

    ``exited`` resolves with the exit code (negative: killed by that signal;
    None: unknown, e.g. an adopted process that is not our child) as soon as the
    process dies.  It stays a zombie until :meth:`reap`.
    """

    def __init__(self, pid: int, create_time: float, pidfd: int, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.create_time = create_time
        self.popen = popen
        self.adopted = popen is None
        self.pgid = pgid_or(pid, pid)
        self._pidfd: int | None = pidfd
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int | None] = self._loop.create_future()
        self._reaped = False
        self._loop.add_reader(pidfd, self._on_pidfd_readable)

    @classmethod
    def spawn(
        cls,
        argv: list[str],
        *,
        cwd: str | Path | None,
        env: dict[str, str],
        log_fd: int,
        pass_fds: tuple[int, ...] = (),
    ) -> AppProcess:
        return cls.watch(launch(argv, cwd=cwd, env=env, log_fd=log_fd, pass_fds=pass_fds))

    @classmethod
    def watch(cls, launched: Launched) -> AppProcess:
        """Watch a process :func:`launch` started (on the event loop's thread)."""
        return cls(launched.popen.pid, launched.create_time, launched.pidfd, launched.popen)

    @classmethod
    def adopt(cls, pid: int, create_time: float, marker: str) -> AppProcess | None:
        """Watch a recorded process again, or None when it is gone or its pid was reused."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        if not identity_matches(pid, create_time, marker) or _pidfd_exited(pidfd):
            os.close(pidfd)
            return None
        return cls(pid, create_time, pidfd, popen=None)

    def _on_pidfd_readable(self) -> None:
        if self._pidfd is None:
            return
        self._loop.remove_reader(self._pidfd)
        code: int | None = None
        with contextlib.suppress(ChildProcessError):
            # WNOWAIT: read the status but leave the zombie, pinning pid and pgid.
            code = _exit_code_from(os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT))
        if self.adopted:
            code = None
        if not self.exited.done():
            self.exited.set_result(code)

    def check_exited(self) -> None:
        """Resolve ``exited`` now if the process is dead but the loop has not told us yet."""
        if self._pidfd is not None and not self.exited.done() and _pidfd_exited(self._pidfd):
            self._on_pidfd_readable()

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def send(self, sig: int) -> None:
        """Signal the main process through its pidfd (never a recycled pid)."""
        if self._pidfd is None or self._reaped:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    @property
    def group_pinned(self) -> bool:
        """True while the process-group id cannot have been reused: our unreaped child, or alive
        (asked of the pidfd, not of ``exited``: the loop may not have seen the exit yet)."""
        if self._reaped:
            return False
        if self.popen is not None:
            return self.popen.returncode is None
        return self._pidfd is not None and not _pidfd_exited(self._pidfd)

    def signal_group(self, sig: int) -> None:
        """``killpg`` the app's process group, only while its id is pinned."""
        if self.group_pinned:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    def reap(self) -> None:
        """Collect the zombie once the tree is swept (no-op for non-children)."""
        if self._reaped or self.alive:
            return
        if self.popen is not None:
            self.popen.poll()
        elif self._pidfd is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        self._reaped = True
        _main_pids.discard(self.pid)

    def close(self) -> None:
        """Stop watching; the process itself is left alone."""
        if self._pidfd is None:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None

    def detach(self) -> None:
        """Forget the process without touching it (simulated host crash, tests only)."""
        self.close()
        if self.popen is not None:
            _detached.append(self.popen)
        self.exited.cancel()


@dataclass(frozen=True)
class TreeMember:
    pid: int
    create_time: float


def find_tree(
    table: ProcessTable, root: TreeMember, pgid: int, marker: str, since: float, *, group_pinned: bool, anywhere: bool
) -> list[TreeMember]:
    """Every process of one app, from ONE process-table snapshot.

    Members: the main process (only if the snapshot shows it with ``root.create_time``: an
    adopted one's pid may already name another process), everything in its process group, host children
    carrying the app's marker (descendants re-parented to the host after their
    parent died, e.g. ``setsid`` escapers), and all their descendants by ppid.
    With ``anywhere`` (an adopted app: its orphans re-parented to init, not to
    this host) every process started since the app that carries its marker.
    Once the group id is no longer pinned by our unreaped main process it could
    name someone else's group, so then group members must carry the marker too.
    """

    def ours(pid: int) -> bool:
        return table.create_times[pid] >= since - 1 and table.marker(pid) == marker

    started = table.create_times.get(root.pid)
    roots = {root.pid} if started is not None and abs(started - root.create_time) <= CREATE_TIME_TOLERANCE else set()
    roots.update(pid for pid in table.create_times if pgid_or(pid, -1) == pgid and (group_pinned or ours(pid)))
    candidates = table.create_times if anywhere else table.children.get(os.getpid(), ())
    roots.update(pid for pid in candidates if pid not in _main_pids and ours(pid))
    return [TreeMember(pid, table.create_times[pid]) for pid in table.descendants(roots)]


class _WatchedTree:
    """Pidfds for the members of one tree, so signals and exit waits are race-free."""

    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}

    def add(self, members: Iterable[TreeMember]) -> None:
        for member in members:
            if member.pid in self._pidfds:
                continue
            pidfd = _open_verified_pidfd(member.pid, member.create_time)
            if pidfd is not None:
                self._pidfds[member.pid] = pidfd

    def alive(self) -> list[int]:
        return [pid for pid, pidfd in self._pidfds.items() if not _pidfd_exited(pidfd)]

    def send(self, pids: Iterable[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfds[pid], sig)

    async def wait_exited(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        waiting = {pid: self._pidfds[pid] for pid in self.alive()}
        if not waiting:
            return True
        all_gone = loop.create_future()

        def on_exit(pid: int) -> None:
            loop.remove_reader(waiting.pop(pid))
            if not waiting and not all_gone.done():
                all_gone.set_result(None)

        for pid, pidfd in waiting.items():
            loop.add_reader(pidfd, on_exit, pid)
        try:
            await asyncio.wait({all_gone}, timeout=timeout)
        finally:
            for pidfd in waiting.values():
                loop.remove_reader(pidfd)
        return all_gone.done()

    def reap(self, skip_pid: int) -> None:
        """Reap dead members that are our children (re-parented orphans)."""
        for pid, pidfd in self._pidfds.items():
            if pid != skip_pid and _pidfd_exited(pidfd):
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)

    def close(self) -> None:
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()


async def terminate_tree(
    process: AppProcess,
    *,
    marker: str,
    since: float,
    grace: float,
    snapshots: SharedSnapshots | None = None,
    kill_wait: float = 5.0,
    group_members: Callable[[], set[int]] | None = None,
) -> list[int]:
    """SIGTERM the whole tree, wait up to ``grace``, then SIGKILL whatever is left.

    Repeats the snapshot + SIGKILL until a snapshot finds nothing alive, so
    processes forked during the grace period are caught too.  Returns the pids
    still alive at the end (normally none; a process stuck in the kernel may
    linger).  The main process is left as a zombie for :meth:`AppProcess.reap`.
    Concurrent calls sharing ``snapshots`` share their passes over ``/proc``.

    ``group_members``: the pids of a cgroup the tree cannot leave (the app runs as
    a uid of its own, and the groups' files are root's): then the tree is read
    from there, a file or two per look instead of a pass over the whole process
    table.  A stop of many apps, or a crash restart, no longer waits on /proc.
    """
    snapshots = snapshots or SharedSnapshots()

    async def members() -> list[TreeMember]:
        if group_members is not None:  # the main process too: it joins its group only after its first exec
            others = group_members() - {process.pid}  # the main one's start is known: one /proc read fewer
            read = [TreeMember(pid, started) for pid in others if (started := start_time(pid)) is not None]
            # A listed pid may have ended and gone to another process before its start time was
            # read: only pids the group lists again after that read were read of members.
            still = group_members()
            return [TreeMember(process.pid, process.create_time), *(m for m in read if m.pid in still)]
        table = await snapshots.fresh()
        return find_tree(
            table,
            TreeMember(process.pid, process.create_time),
            process.pgid,
            marker,
            since,
            group_pinned=process.group_pinned,
            anywhere=process.adopted,
        )

    tree = _WatchedTree()
    try:
        tree.add(await members())
        process.signal_group(signal.SIGTERM)
        tree.send(tree.alive(), signal.SIGTERM)
        await tree.wait_exited(grace)
        for _ in range(KILL_ROUNDS):
            tree.add(await members())
            survivors = tree.alive()
            if not survivors:
                break
            process.signal_group(signal.SIGKILL)
            tree.send(survivors, signal.SIGKILL)
            await tree.wait_exited(kill_wait)
        tree.reap(skip_pid=process.pid)
        return tree.alive()
    finally:
        tree.close()


async def end_strays(
    name: str,
    marker: str,
    candidates: list[tuple[int, float]],
    *,
    belongs: Callable[[str | None], bool],
    grace: float,
    snapshots: SharedSnapshots,
) -> None:
    """End processes of app ``name`` that carry its recorded ``marker`` but whose pid was never
    recorded (the host was killed between the spawn and the write).  ``candidates`` are
    ``(pid, start time)``; a process is ours only if ``belongs(its BOLT_APP_TOKEN)``: the
    marker and host URL alone could belong to another host started with the same URL."""
    for pid, started in sorted(candidates, key=lambda found: found[1]):  # the tree's root first
        if not belongs(read_environ_value(pid, "BOLT_APP_TOKEN")):
            continue
        process = AppProcess.adopt(pid, started, marker)
        if process is None:
            continue  # gone with an earlier root's tree
        log.warning("%s: ending pid %s, started just before the host was killed", name, pid)
        await terminate_tree(process, marker=marker, since=started, grace=grace, snapshots=snapshots)
        process.close()


class OrphanReaper:
    """Reaps app descendants that re-parented to the host when they exit.

    Fed by the stats sampler, which notices host children carrying an app
    marker.  Only those are reaped: ``waitpid(-1)`` would steal exit statuses
    from other code in the host that runs subprocesses.
    """

    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}

    def watch_all(self, orphans: Iterable[Orphan]) -> None:
        for orphan in orphans:
            self.watch(orphan.pid, orphan.create_time)

    def watch(self, pid: int, create_time: float) -> None:
        if pid in self._pidfds or pid in _main_pids:
            return
        pidfd = _open_verified_pidfd(pid, create_time)
        if pidfd is None:
            return
        self._pidfds[pid] = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._reap, pid)

    def _reap(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid)
        asyncio.get_running_loop().remove_reader(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        os.close(pidfd)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for pidfd in self._pidfds.values():
            loop.remove_reader(pidfd)
            os.close(pidfd)
        self._pidfds.clear()
