"""CPU and memory of each app's whole process tree, sampled in one pass.

One background task wakes every ``interval`` seconds and, in a worker thread
(reading /proc is blocking I/O), walks the process table ONCE: one read of
``/proc/<pid>/stat`` per process gives the ppid map, start times, CPU time and
RSS, and CPU% and RSS are summed over each app's tree from that same pass.
Reads (contexts, ``GET /api/apps/@live``) come from the cache and never touch
/proc.  Calling ``Process.children(recursive=True)`` per app instead scans all
of /proc per call: O(apps x processes) per tick.

The same pass notices app processes that re-parented to the host (their
parent died; the host is a child subreaper): host children that carry an
app's marker and are not an app's main process.  They count towards that
app's tree and are handed to ``on_orphans`` so the host can reap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bolt_host.services import processes, proctable

log = logging.getLogger("bolt_host.stats")


@dataclass(frozen=True)
class TreeUsage:
    pid: int  # the main process the tree was measured from
    cpu: float  # percent of one CPU, summed over the tree
    memory: int  # resident bytes, summed over the tree
    processes: int


@dataclass(frozen=True)
class Orphan:
    pid: int
    create_time: float
    marker: str


class TreeSampler:
    """The synchronous sampling pass; keeps each measured process's CPU time for the next CPU%."""

    def __init__(self) -> None:
        self._cpu_before: dict[int, tuple[float, float]] = {}  # pid -> (create time, cpu seconds)
        self._before: float | None = None  # monotonic time of the last pass
        self._markers: dict[tuple[int, float], str | None] = {}
        self._group_before: dict[int, float] = {}  # main pid -> its cgroup's cpu seconds

    def sample(
        self, roots: Mapping[str, int], markers: Mapping[str, str], groups: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, TreeUsage], list[Orphan]]:
        """``roots``: app -> main pid; ``markers``: marker -> app; ``groups``: app -> its
        :class:`~bolt_host.services.cgroups.AppCgroup`, whose kernel counters replace the tree
        walk for that app.  Returns usage and orphans."""
        groups = groups or {}
        table = proctable.ProcessTable.snapshot()
        now = time.monotonic()
        elapsed = now - self._before if self._before is not None else 0.0
        create_times = table.create_times
        main_pids = set(roots.values())
        orphans = [
            Orphan(pid, create_times[pid], marker)
            for pid in table.children.get(os.getpid(), ())
            if pid not in main_pids
            and not processes.is_main_pid(pid)
            and (marker := self._marker_of(pid, create_times[pid])) is not None
        ]
        self._markers = {key: value for key, value in self._markers.items() if key[0] in create_times}

        measured = {name: self._measure_group(roots[name], groups[name], elapsed) for name in groups if name in roots}
        self._group_before = {pid: seconds for pid, seconds in self._group_before.items() if pid in main_pids}
        tree_roots = {name: [pid] for name, pid in roots.items() if pid in create_times and measured.get(name) is None}
        for orphan in orphans:
            owner = markers.get(orphan.marker)
            if owner in tree_roots:
                tree_roots[owner].append(orphan.pid)

        trees = {name: table.descendants(start) for name, start in tree_roots.items()}
        usage = {name: self._measure(roots[name], members, table, elapsed) for name, members in trees.items()}
        usage.update({name: found for name, found in measured.items() if found is not None})
        self._cpu_before = {
            pid: (create_times[pid], table.cpu_seconds[pid]) for members in trees.values() for pid in members
        }
        self._before = now
        return usage, orphans

    def orphans(self, roots: Mapping[str, int]) -> list[Orphan] | None:
        """Only the re-parented app processes, from the host's own children (None: the kernel
        cannot list them; take a whole :meth:`sample`)."""
        children = proctable.host_children()
        if children is None:
            return None
        main_pids = set(roots.values())
        found = []
        for pid in children:
            if pid in main_pids or processes.is_main_pid(pid):
                continue
            started = proctable.start_time(pid)
            if started is not None and (marker := self._marker_of(pid, started)) is not None:
                found.append(Orphan(pid, started, marker))
        return found

    def _measure_group(self, main_pid: int, group: Any, elapsed: float) -> TreeUsage | None:
        """Usage from the cgroup's counters (two file reads), or None to walk the tree instead."""
        counters = group.usage()
        if counters is None:
            return None
        cpu_seconds, memory = counters
        before = self._group_before.get(main_pid)
        self._group_before[main_pid] = cpu_seconds
        cpu = max(0.0, cpu_seconds - before) / elapsed * 100 if before is not None and elapsed > 0 else 0.0
        return TreeUsage(pid=main_pid, cpu=round(cpu, 1), memory=memory, processes=len(group.members()))

    def _marker_of(self, pid: int, create_time: float) -> str | None:
        key = (pid, create_time)
        if key in self._markers:
            return self._markers[key]
        marker = proctable.read_marker(pid)
        # A process in the middle of execve shows an empty environ: decide later.
        if marker is not None or time.time() - create_time > 1:
            self._markers[key] = marker
        return marker

    def _measure(self, main_pid: int, members: set[int], table: proctable.ProcessTable, elapsed: float) -> TreeUsage:
        """CPU% (of one CPU, since the last pass; 0 for a process first seen now) and RSS of a tree."""
        cpu = 0.0
        memory = 0
        for pid in members:
            memory += table.rss[pid]
            before = self._cpu_before.get(pid)
            if before is None or elapsed <= 0:
                continue
            started, cpu_seconds = before
            if abs(started - table.create_times[pid]) > processes.CREATE_TIME_TOLERANCE:
                continue  # the pid was reused since the last pass
            cpu += max(0.0, table.cpu_seconds[pid] - cpu_seconds) / elapsed * 100
        return TreeUsage(pid=main_pid, cpu=round(cpu, 1), memory=memory, processes=len(members))


class StatsSampler:
    """Runs :class:`TreeSampler` and caches the result.

    While someone reads the figures a pass runs every ``interval`` seconds; when
    nobody has read them since the last pass, the next one waits until someone
    does or ``idle_interval`` passes (orphans must still be found and reaped).
    A host nobody watches then costs one round per ``idle_interval``, not one pass
    per ``interval``; and that round only looks for orphans among the host's own
    children (a few reads) instead of measuring every tree: at 200 apps with a
    cgroup each, a whole pass is about 20-30 ms of CPU.
    """

    def __init__(
        self,
        interval: float,
        roots: Callable[[], dict[str, int]],
        markers: Callable[[], dict[str, str]],
        on_orphans: Callable[[list[Orphan]], None] | None = None,
        idle_interval: float = 30.0,
        groups: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.interval = interval
        self.idle_interval = max(idle_interval, interval)
        self._roots = roots
        self._markers = markers
        self._on_orphans = on_orphans
        self._groups = groups
        self._sampler = TreeSampler()
        self._latest: dict[str, TreeUsage] = {}
        self._task: asyncio.Task[None] | None = None
        self._read = asyncio.Event()
        self.passes = 0
        self.sampling = False  # a pass is running (in its worker thread)
        self.version = 0  # counts the passes whose figures differed from the ones before

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="bolt-stats-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, never mistakes our own cancel for its

    def latest(self, name: str, pid: int | None, *, reading: bool = True) -> TreeUsage | None:
        """The last sample of ``name``'s tree, if it was taken from main process ``pid``.

        ``reading`` (a caller shows the figures) keeps passes coming every ``interval``; the
        host's own uses (the bodies of its events) leave the sampler idle: each start and
        stop publishes events, and a start of 200 apps otherwise woke whole passes over
        every running tree while the apps needed the CPU."""
        if reading:
            self._read.set()
        usage = self._latest.get(name)
        return usage if usage is not None and usage.pid == pid else None

    def mark_read(self) -> None:
        """Someone shows the figures (as :meth:`latest` with ``reading``): keep passes coming."""
        self._read.set()

    async def refresh(self) -> None:
        roots, markers = self._roots(), self._markers()
        groups = self._groups() if self._groups is not None else None
        self.sampling = True
        try:
            usage, orphans = await asyncio.to_thread(self._sampler.sample, roots, markers, groups)
        finally:
            self.sampling = False
        self._publish(usage)
        self.passes += 1
        if orphans and self._on_orphans is not None:
            self._on_orphans(orphans)

    def _publish(self, usage: dict[str, TreeUsage]) -> None:
        """Take a pass's figures, keeping the object of each tree whose figures did not change: an
        encoded context is kept while its usage object stays the same (idle apps measure the same
        every pass), and :attr:`version` moves only when some figure did."""
        before = self._latest
        kept = {name: before[name] if before.get(name) == found else found for name, found in usage.items()}
        if kept.keys() != before.keys() or any(found is not before[name] for name, found in kept.items()):
            self.version += 1
        self._latest = kept

    def _reap_orphans(self) -> bool:
        """The idle round: orphans only, from the host's children (no figures anyone reads);
        False when they cannot be listed that way."""
        orphans = self._sampler.orphans(self._roots())
        if orphans is None:
            return False
        if orphans and self._on_orphans is not None:
            self._on_orphans(orphans)
        return True

    async def _run(self) -> None:
        idle = False
        while True:
            self._read.clear()
            try:
                if not (idle and self._reap_orphans()):
                    await self.refresh()
            except Exception:  # a failed tick must not end sampling
                log.exception("stats sampling failed")
            await asyncio.sleep(self.interval)
            idle = False
            if not self._read.is_set():
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                # lands as the event is set, and stop() would then wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_interval - self.interval):
                        await self._read.wait()
                idle = not self._read.is_set()
