"""The process table, read once per pass, and passes shared between concurrent callers.

Each stop sweeps the app's whole tree from a snapshot of the process table,
twice (before SIGTERM and after the grace period); the stats sampler takes one
per tick.  Fifty concurrent stops would read ``/proc`` a hundred times; with
:class:`SharedSnapshots` they share passes, and a caller never gets a snapshot
that began before it asked (a later fork is never missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MARKER_VARIABLE = "BOLT_SUPERVISOR_ID"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def data_dir_id(data_dir: str | Path) -> str:
    """A short id of the host that owns ``data_dir``: the same after a restart, never the same
    for two hosts running at once on one machine (a data dir has one host at a time)."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


def app_marker(key: str, generation: int, host_id: str) -> str:
    """The ``BOLT_SUPERVISOR_ID`` of one generation of app ``key`` of the host ``host_id``.

    The host's id is part of it because a stop of an adopted app searches the whole machine
    for processes carrying its marker (its orphans re-parented to init): without it, another
    host's app of the same name at the same generation (every first start is generation 1)
    would be taken for one of them and killed."""
    return f"{key}:{generation}@{host_id}"


def read_environ_value(pid: int, key: str) -> str | None:
    """The value of ``key`` in ``pid``'s environment (as it was at exec), or None."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{key}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def read_marker(pid: int) -> str | None:
    """The ``BOLT_SUPERVISOR_ID`` in ``pid``'s environment, or None."""
    return read_environ_value(pid, MARKER_VARIABLE)


@functools.cache
def boot_time() -> float:
    """The ``btime`` line of /proc/stat, as ``psutil.boot_time()`` reads it (psutil is not imported
    for this: it is about 0.9 MB the host otherwise needs only on rare paths)."""
    with open("/proc/stat", "rb") as handle:
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


def start_time(pid: int) -> float | None:
    """``pid``'s start time as ``psutil.Process(pid).create_time()`` gives it, from one read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return float(ticks) / CLOCK_TICKS + boot_time()


def processes_by_marker(host_url: str) -> dict[str, list[tuple[int, float]]]:
    """(pid, start time) of every live process a host at ``host_url`` started, by marker."""
    found: dict[str, list[tuple[int, float]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        marker = read_marker(pid)
        if marker is None or read_environ_value(pid, "BOLT_HOST_URL") != host_url:
            continue
        started = start_time(pid)
        if started is not None:
            found.setdefault(marker, []).append((pid, started))
    return found


def host_children() -> list[int] | None:
    """This process's children from ``/proc/self/task/*/children`` (a few small reads, not a
    pass over the whole table), or None where the kernel has no such file.  A child forked
    or re-parented during the read may be missed: callers look again on their next round."""
    if not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
        return None
    children: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children", "rb") as handle:
            children.extend(int(pid) for pid in handle.read().split())  # suppressed: a thread that just ended
    return children


def pgid_or(pid: int, default: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return default


@dataclass
class ProcessTable:
    """One pass over the process table: start times, a ppid -> children map, CPU time and RSS.

    Each process costs one read of ``/proc/<pid>/stat``, which holds all four;
    ``psutil.process_iter`` costs several times more per process (it also checks
    every cached Process for pid reuse), and this pass runs for every stop and
    every stats tick over the whole host.  ``create_times`` are computed as
    psutil computes ``Process.create_time()``, so the two compare equal.
    """

    create_times: dict[int, float]
    children: dict[int, list[int]]
    cpu_seconds: dict[int, float] = field(default_factory=dict)  # user + system
    rss: dict[int, int] = field(default_factory=dict)  # bytes
    _markers: dict[int, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def snapshot(cls) -> ProcessTable:
        booted = boot_time()
        create_times: dict[int, float] = {}
        children: dict[int, list[int]] = defaultdict(list)
        cpu_seconds: dict[int, float] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
                # The name (field 2) may hold spaces and parentheses: split after the last ')'.
                fields = stat[stat.rindex(b")") + 2 :].split()
                ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
                start_ticks, rss_pages = int(fields[19]), int(fields[21])
            except (OSError, ValueError, IndexError):  # gone since the listing
                continue
            pid = int(entry)
            create_times[pid] = float(start_ticks) / CLOCK_TICKS + booted
            children[ppid].append(pid)
            cpu_seconds[pid] = (utime + stime) / CLOCK_TICKS
            rss[pid] = rss_pages * PAGE_SIZE
        return cls(create_times, children, cpu_seconds, rss)

    def marker(self, pid: int) -> str | None:
        """``pid``'s supervisor marker, read once per snapshot (callers share the reads)."""
        if pid not in self._markers:
            self._markers[pid] = read_marker(pid)
        return self._markers[pid]

    def descendants(self, starts: Iterable[int]) -> set[int]:
        """``starts`` and everything below them; never init or this process."""
        excluded = (0, 1, os.getpid())
        members: set[int] = set()
        pending = list(starts)
        while pending:
            pid = pending.pop()
            if pid in members or pid in excluded or pid not in self.create_times:
                continue
            members.add(pid)
            pending.extend(self.children.get(pid, ()))
        return members


class SharedSnapshots:
    """Fresh process-table snapshots, one pass (in a worker thread) for all who wait at once."""

    def __init__(self) -> None:
        self._running: asyncio.Task[ProcessTable] | None = None
        self._running_since = 0.0
        self.passes = 0  # for tests and benchmarks

    async def fresh(self) -> ProcessTable:
        """A snapshot taken wholly after this call began."""
        asked = time.monotonic()
        while True:
            running = self._running
            if running is not None and not running.done():
                if self._running_since >= asked:
                    return await asyncio.shield(running)
                await asyncio.wait({running})  # began too early for us: take the next one
                continue
            if running is not None and self._running_since >= asked:
                return running.result()
            self._running_since = time.monotonic()
            self._running = asyncio.ensure_future(asyncio.to_thread(self._take))

    def _take(self) -> ProcessTable:
        self.passes += 1
        return ProcessTable.snapshot()
