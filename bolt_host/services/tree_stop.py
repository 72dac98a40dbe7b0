"""The end of an app's process tree: SIGTERM to all of it, a grace period, SIGKILL to what is left.

The rules it keeps (see :mod:`processes` for why): signals to single processes go through
pidfds; the process group is signalled only while its id is pinned; exits are seen through
pidfds (exit notices), never by polling; a member read from a cgroup's list counts only while
the list still holds it after its start time was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

from bolt_host.services.processes import (
    KILL_ROUNDS,
    AppProcess,
    TreeMember,
    find_tree,
    open_verified_pidfd,
    pidfd_exited,
)
from bolt_host.services.proctable import SharedSnapshots, pgid_or, read_environ_value, start_time

log = logging.getLogger("bolt_host.processes")


class _WatchedTree:
    """Pidfds for the members of one tree besides its main process (whose exit its
    :class:`AppProcess` watches), so signals and exit waits are race-free."""

    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}

    def add(self, members: Iterable[TreeMember]) -> None:
        for member in members:
            if member.pid in self._pidfds:
                continue
            pidfd = open_verified_pidfd(member.pid, member.create_time)
            if pidfd is not None:
                self._pidfds[member.pid] = pidfd

    def alive(self) -> list[int]:
        return [pid for pid, pidfd in self._pidfds.items() if not pidfd_exited(pidfd)]

    def outside(self, pgid: int) -> list[int]:
        """Live members not in process group ``pgid`` (a ``killpg`` of it did not reach them)."""
        return [pid for pid in self.alive() if pgid_or(pid, -1) != pgid]

    def send(self, pids: Iterable[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfds[pid], sig)

    async def wait_exited(self, timeout: float, main: AppProcess) -> bool:
        """Wait for the exit notices of every member and of ``main``, at most ``timeout``."""
        loop = asyncio.get_running_loop()
        waiting = {pid: self._pidfds[pid] for pid in self.alive()}
        if not waiting:
            if not main.exited.done():
                await asyncio.wait({main.exited}, timeout=timeout)
            return main.exited.done()
        all_gone = loop.create_future()

        def settle(*_: Any) -> None:
            if not waiting and main.exited.done() and not all_gone.done():
                all_gone.set_result(None)

        def on_exit(pid: int) -> None:
            loop.remove_reader(waiting.pop(pid))
            settle()

        for pid, pidfd in waiting.items():
            loop.add_reader(pidfd, on_exit, pid)
        main.exited.add_done_callback(settle)
        try:
            await asyncio.wait({all_gone}, timeout=timeout)
        finally:
            main.exited.remove_done_callback(settle)
            for pidfd in waiting.values():
                loop.remove_reader(pidfd)
        return all_gone.done()

    def reap(self) -> None:
        """Reap dead members that are our children (re-parented orphans)."""
        for pidfd in self._pidfds.values():
            if pidfd_exited(pidfd):
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)

    def close(self) -> None:
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()


class TreeStop:
    """The end of one app's tree: SIGTERM to all of it, up to ``grace`` for it to go, then SIGKILL
    whatever is left, repeated with a fresh look until a look finds nothing alive (processes
    forked during the grace period are caught too).

    :meth:`begin` sends the SIGTERMs at once where the tree is read without waiting (a sealed
    cgroup), so a stop of many apps signals them all before it writes notes or events for any;
    :meth:`finish` sends them otherwise, then waits on exit notices (pidfds), never polling.
    The main process is left as a zombie for :meth:`AppProcess.reap`.  Concurrent stops sharing
    ``snapshots`` share their passes over ``/proc``.

    ``group_members``: the pids of a cgroup the tree cannot leave (the app runs as a uid of its
    own, and the groups' files are root's): then the tree is read from there, one file per look
    (two when it lists processes besides the main one) instead of a pass over the process table.
    """

    def __init__(
        self,
        process: AppProcess,
        *,
        marker: str,
        since: float,
        grace: float,
        snapshots: SharedSnapshots | None = None,
        kill_wait: float = 5.0,
        group_members: Callable[[], set[int]] | None = None,
    ) -> None:
        self._process = process
        self._marker = marker
        self._since = since
        self._grace = grace
        self._snapshots = snapshots or SharedSnapshots()
        self._kill_wait = kill_wait
        self._group_members = group_members
        self._tree = _WatchedTree()
        self._looked = False  # the members were read for :meth:`begin` (see :meth:`look`)
        self._signalled = False
        self.group_empty = False  # the last look at the sealed group listed no process at all

    def look(self) -> None:
        """Read the tree's members now for :meth:`begin`, if that needs no wait (a sealed cgroup):
        a stop of many apps reads every tree first, so that its SIGTERMs go out in one tight pass."""
        if self._group_members is not None and not self._looked:
            self._tree.add(self._group_others())
            self._looked = True

    def begin(self) -> None:
        """SIGTERM the tree now if reading it needs no wait; else :meth:`finish` does."""
        if self._group_members is not None and not self._signalled:
            self.look()
            self._signal([])

    async def finish(self) -> list[int]:
        """End the tree; the pids still alive at the end (normally none; a process stuck in the
        kernel may linger)."""
        process, tree = self._process, self._tree
        try:
            if not self._signalled:
                self._signal(await self._others())
            await tree.wait_exited(self._grace, process)
            for _ in range(KILL_ROUNDS):
                tree.add(await self._others())
                survivors = tree.alive()
                if not survivors and not self._main_alive():
                    break
                process.signal_group(signal.SIGKILL)
                process.send(signal.SIGKILL)
                tree.send(survivors, signal.SIGKILL)
                await tree.wait_exited(self._kill_wait, process)
            tree.reap()
            return [*tree.alive(), *([process.pid] if self._main_alive() else [])]
        finally:
            tree.close()

    def _signal(self, others: list[TreeMember]) -> None:
        # The members' pidfds are opened before the signal: one that is the host's child (a
        # re-parented orphan) and dies of it at once is still reaped by this stop.
        process, tree = self._process, self._tree
        tree.add(others)
        if process.interrupt():  # the whole process group at once, the main process with it
            tree.send(tree.outside(process.pgid), signal.SIGTERM)
        else:  # the group's id is not pinned: each member by its pidfd
            tree.send(tree.alive(), signal.SIGTERM)
        if process.pgid != process.pid:  # not a group leader (a stray :func:`end_strays` found)
            process.send(signal.SIGTERM)
        self._signalled = True

    async def _others(self) -> list[TreeMember]:
        """The tree's members besides the main process, from one look."""
        if self._group_members is not None:
            return self._group_others()
        process = self._process
        table = await self._snapshots.fresh()
        found = find_tree(
            table,
            TreeMember(process.pid, process.create_time),
            process.pgid,
            self._marker,
            self._since,
            group_pinned=process.group_pinned,
            anywhere=process.adopted,
        )
        return [member for member in found if member.pid != process.pid]

    def _group_others(self) -> list[TreeMember]:
        assert self._group_members is not None
        listed = self._group_members()
        self.group_empty = not listed
        others = listed - {self._process.pid}  # the main one's start is known: one /proc read fewer
        if not others:
            return []
        read = [TreeMember(pid, started) for pid in others if (started := start_time(pid)) is not None]
        # A listed pid may have ended and gone to another process before its start time was
        # read: only pids the group lists again after that read were read of members.
        still = self._group_members()
        return [member for member in read if member.pid in still]

    def _main_alive(self) -> bool:
        self._process.check_exited()
        return self._process.alive


async def terminate_tree(process: AppProcess, **options: Any) -> list[int]:
    """End ``process``'s whole tree (a :class:`TreeStop` with ``options``); the pids that
    survived even SIGKILL."""
    return await TreeStop(process, **options).finish()


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
