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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bolt_host.services.envnames import refusal
from bolt_host.services.proctable import (
    ProcessTable,
    pgid_or,
    read_marker,
    start_time,
)
from bolt_host.services.start_command import command_argv, command_environment

if TYPE_CHECKING:
    from bolt_host.services.stats import Orphan
    from bolt_host.services.tree_stop import TreeStop

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


def pidfd_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def open_verified_pidfd(pid: int, create_time: float) -> int | None:
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
        self.interrupted = False  # its group got the stop's SIGTERM
        self.ending: TreeStop | None = None  # a stop that signalled its tree and has yet to finish
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
        if not identity_matches(pid, create_time, marker) or pidfd_exited(pidfd):
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
        if self._pidfd is not None and not self.exited.done() and pidfd_exited(self._pidfd):
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
        return self._pidfd is not None and not pidfd_exited(self._pidfd)

    def signal_group(self, sig: int) -> bool:
        """``killpg`` the app's process group, only while its id is pinned; True when sent."""
        if not self.group_pinned:
            return False
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def interrupt(self) -> bool:
        """SIGTERM the process group, once (a second SIGTERM makes some servers skip their
        graceful shutdown); True when the group got it.  A main process we spawned leads its own
        session, so it cannot leave the group (``setpgid`` refuses a session leader)."""
        if not self.interrupted:
            self.interrupted = self.signal_group(signal.SIGTERM)
        return self.interrupted

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
        pidfd = open_verified_pidfd(pid, create_time)
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
