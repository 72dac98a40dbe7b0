"""A control group per app, where the machine lets the host make them.

Detected at start-up, never assumed:

* **cgroup v2** when the host's own cgroup has ``memory``, ``pids`` and ``cpu`` in its
  ``cgroup.subtree_control`` and the host may create folders there: in practice root in the
  root cgroup of a pure v2 machine (only the root may hold processes and hand controllers to
  children at once; in a systemd unit with ``Delegate=yes`` the host would first have to move
  itself into a leaf of its own, which it does not).
* **cgroup v1** per controller (``memory``, ``pids``, ``cpu``, ``cpuacct``) where that
  hierarchy is mounted and the host may create a folder under its own cgroup in it.
* Otherwise none: :mod:`sandbox` falls back to rlimits.

Layout: ``<own cgroup>/bolt-<id of the data dir>.<app>`` in each hierarchy (v1) or in the
unified one (v2): each app's group is a sibling at the level where the host's own process sits,
so that under contention an app weighs what one process weighs (v1 ``cpu.shares`` 1024 and
v2 ``cpu.weight`` 100 are both the kernel's weight of one nice-0 task), as a child of raw
``Popen`` or one systemd unit does.  One shared ``bolt-<id>`` parent (the layout before) gave
200 apps together the weight of ONE task against the host: under load each app of a bulk
stop waited 0.2-1.6 s for the CPU to act on its SIGTERM (1-14 ms with the weight of one
process each), and a start all waited likewise.  Every hierarchy has the same layout, memory
and pids too (their weights do not matter, but controllers may be mounted together, e.g.
``cpu,cpuacct``, and then share one folder).  The data dir's id in the name keeps two hosts
on one machine from ever sharing a group, and lets the next host of the same data dir find
a killed host's groups.

A process joins its app's groups by writing ``0`` (itself) to their :meth:`AppCgroup.join_files`
before it execs the app (the wrapper in :mod:`sandbox`), so nothing it forks is ever outside them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bolt_host.services.proctable import data_dir_id

log = logging.getLogger("bolt_host.cgroups")

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
KILL_DEADLINE = 5.0
PIDFD_BATCH = 256  # pidfds held at once by a kill round: a fork bomb's group must not exhaust the host's files


@dataclass(frozen=True)
class CgroupSupport:
    """Where app groups go: ``version`` is "v2", "v1" or "" (none); ``bases``, the host's own
    cgroup folder per controller (v1) or one entry ``"unified"`` (v2), holds the group of app
    ``name`` as ``prefix + name``."""

    version: str
    bases: Mapping[str, Path]
    prefix: str

    @property
    def limited(self) -> frozenset[str]:
        """The limits this support enforces: memory, pids, cpu."""
        if self.version == "v2":
            return frozenset(V2_CONTROLLERS)
        return frozenset(key for key in V2_CONTROLLERS if key in self.bases)

    @property
    def label(self) -> str:
        return f"cgroup {self.version}" if self.version else "none"

    def group(self, name: str) -> AppCgroup | None:
        return AppCgroup(self, name) if self.version else None

    def remove_empty_groups(self) -> None:
        """Remove the app groups nothing runs in (at host shut-down: they stay between an
        app's runs while the host is up), a killed host's of the same data dir too; a busy one
        stays.  Also the ``bolt-<id>`` parent of the layout before, once empty."""
        if not self.prefix:  # never every empty group of the host's cgroup, others' too
            return
        for base in set(self.bases.values()):  # controllers mounted together share a folder
            former = base / self.prefix[:-1]
            ours = [*_subfolders(base, self.prefix), *_subfolders(former, ""), str(former)]
            for folder in ours:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


def _subfolders(folder: Path, prefix: str) -> list[str]:
    """The paths of ``folder``'s subfolders whose names start with ``prefix`` (none if it is gone)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        return [entry.path for entry in entries if entry.name.startswith(prefix) and entry.is_dir()]
    return []


NO_CGROUPS = CgroupSupport("", {}, "")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fs type, super options)`` of every cgroup mount."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) >= 3 and tail[0] in {"cgroup", "cgroup2"}:
                found.append((fields[4].replace("\\040", " "), tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """The host's cgroup path per v1 controller, and ``""`` -> its v2 path."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _may_make_groups(parent: Path, prefix: str) -> bool:
    """Whether the host may make groups in ``parent``: it makes one and removes it (an upper-case
    name, which no app's group has)."""
    probe = parent / f"{prefix}PROBE"
    try:
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError:
        return False
    return True


def detect(data_dir: Path) -> CgroupSupport:
    """The best cgroup support this host has for apps of ``data_dir``."""
    prefix = f"bolt-{data_dir_id(data_dir)}."
    mounts, own = _mounts(), _own_paths()
    for mount, kind, _ in mounts:
        if kind != "cgroup2" or "" not in own:
            continue
        parent = Path(mount + own[""])
        try:
            delegated = set((parent / "cgroup.subtree_control").read_text().split())
        except OSError:
            continue
        # The app groups are leaves beside the host's process: its cgroup hands them the controllers.
        if set(V2_CONTROLLERS) <= delegated and _may_make_groups(parent, prefix):
            return CgroupSupport("v2", {"unified": parent}, prefix)
    bases: dict[str, Path] = {}
    for mount, kind, options in mounts:
        for controller in V1_CONTROLLERS:
            if kind == "cgroup" and controller in options and controller in own and controller not in bases:
                parent = Path(mount + own[controller])
                if _may_make_groups(parent, prefix):
                    bases[controller] = parent
    return CgroupSupport("v1", bases, prefix) if bases else NO_CGROUPS


def _write(path: str | Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read_text(path: str | Path) -> str:
    with open(path) as handle:
        return handle.read()


def _write_if_changed(path: str, value: str) -> None:
    """Write ``value`` unless the file says so already.  For the CPU bandwidth files: a write
    takes the kernel's bandwidth lock and walks the group tree even when nothing changes,
    1-3 ms of CPU and 3-15 ms here, and a fresh group already has the values of no limit;
    a host starting 200 apps for the first time spent most of its CPU there."""
    with contextlib.suppress(OSError):
        if _read_text(path).strip() == value:
            return
    _write(path, value)


def _read_int(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(_read_text(path).split()[0])
    return None


def _read_keyed(path: str, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in _read_text(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return None


PROCS_READ = 1 << 16


class AppCgroup:
    """One app's groups (one per v1 hierarchy, or one v2 group).

    Its folders are kept as strings, not ``Path`` objects: a running app holds its group for
    its whole run, and four ``Path`` objects (each with its parts list and cached string) were
    about 1 KB per app of the host's memory at N=200, for file names only ever joined once."""

    def __init__(self, support: CgroupSupport, name: str) -> None:
        self.version = support.version
        leaf = support.prefix + name
        self.folders = {controller: os.path.join(base, leaf) for controller, base in support.bases.items()}
        self._first_procs = os.fsencode(f"{next(iter(self.folders.values()))}/cgroup.procs") if self.folders else b""

    @property
    def dirs(self) -> dict[str, Path]:
        """The group's folder per controller (v1) or ``"unified"`` (v2)."""
        return {controller: Path(folder) for controller, folder in self.folders.items()}

    def create(self, limits: Mapping[str, Any]) -> None:
        """Make the groups and write the limits (lifting any a reused group still had).

        A group this call made has no limit yet: only the limits asked for are written then
        (each write is a few tenths of a millisecond in the kernel, and a first start of 200
        apps made 200 groups)."""
        fresh = self.make_folders()
        memory, pids, cpu = limits.get("memory"), limits.get("pids"), limits.get("cpu")
        quota = str(int(cpu * CPU_PERIOD_US)) if cpu else None
        if self.version == "v2":
            folder = self.folders["unified"]
            if memory or not fresh:
                _write(f"{folder}/memory.max", str(memory) if memory else "max")
                with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                    _write(f"{folder}/memory.swap.max", "0" if memory else "max")
            if pids or not fresh:
                _write(f"{folder}/pids.max", str(pids) if pids else "max")
            if cpu or not fresh:
                _write_if_changed(f"{folder}/cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
            return
        if "memory" in self.folders and (memory or not fresh):
            folder = self.folders["memory"]
            with contextlib.suppress(OSError):  # memsw must not be below the limit: lift it first
                _write(f"{folder}/memory.memsw.limit_in_bytes", "-1")
            _write(f"{folder}/memory.limit_in_bytes", str(memory) if memory else "-1")
            with contextlib.suppress(OSError):  # swap would let the app pass its limit
                _write(f"{folder}/memory.memsw.limit_in_bytes", str(memory) if memory else "-1")
        if "pids" in self.folders and (pids or not fresh):
            _write(f"{self.folders['pids']}/pids.max", str(pids) if pids else "max")
        if "cpu" in self.folders and (cpu or not fresh):
            _write_if_changed(f"{self.folders['cpu']}/cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write_if_changed(f"{self.folders['cpu']}/cpu.cfs_quota_us", quota or "-1")

    def make_folders(self) -> bool:
        """Make the group's folders; True if none was there (a new group has no limit yet).
        Controllers mounted together (``cpu,cpuacct``) share one folder, made once."""
        fresh = True
        for folder in dict.fromkeys(self.folders.values()):
            try:
                os.mkdir(folder)
            except FileExistsError:
                fresh = False
        return fresh

    def exists(self) -> bool:
        return all(os.path.isdir(folder) for folder in self.folders.values())

    def procs_files(self) -> list[Path]:
        return [Path(folder, "cgroup.procs") for folder in self.folders.values()]

    def join_files(self) -> list[str]:
        """Where the joining process (the exec helper, or the chain's shell) writes ``0`` (itself),
        one file per hierarchy, in order.

        v1: ``tasks``.  A write to ``cgroup.procs`` takes the kernel's global threadgroup lock,
        whose write side waits for an RCU grace period (measured here: 10-12 ms a join, more
        under load); recent kernels skip that lock for a thread moving only itself (pid 0 in
        ``tasks``): 0.03 ms on this machine's 6.18 (older ones take it either way, no worse).
        Either has one thread, so the process moves whole.  v2 has only ``cgroup.procs``."""
        name = "cgroup.procs" if self.version == "v2" else "tasks"
        return [f"{folder}/{name}" for folder in self.folders.values()]

    def members(self) -> set[int]:
        """The pids in the app's groups, from the first hierarchy's ``cgroup.procs`` alone.

        A process joins every hierarchy in :meth:`join_files` order (the first one first)
        and cannot leave one (the files are root's), so the first holds every member, even
        one caught between two joins: reading all four v1 hierarchies cost a stop or a crash
        sweep three more file reads each time, for the same set."""
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(self._first_procs, os.O_RDONLY | os.O_CLOEXEC)  # no Path: a stop reads it twice
            try:
                chunks = []
                while chunk := os.read(fd, PROCS_READ):  # the kernel hands out a page at a time
                    chunks.append(chunk)
                return {int(pid) for pid in b"".join(chunks).split()}
            finally:
                os.close(fd)
        return set()

    def kill_all(self, deadline: float = KILL_DEADLINE) -> tuple[set[int], set[int]]:
        """SIGKILL every member until the groups are empty: ``(pids killed, pids left at the
        deadline)``.  Killed processes that re-parented to the host are then its zombies: the
        caller reaps them (they may carry no marker the host would know them by).

        v2 has ``cgroup.kill`` (atomic, even against a fork bomb); v1 repeats snapshot + kill,
        which the pids limit keeps finite."""
        killed: set[int] = set()
        if self.version == "v2":
            killed |= self.members()
            with contextlib.suppress(OSError):
                _write(f"{self.folders['unified']}/cgroup.kill", "1")
        end = time.monotonic() + deadline
        while True:
            members = self.members() - {os.getpid()}
            if not members or time.monotonic() > end:
                return killed, members
            killed |= self._kill_still_listed(members)
            time.sleep(0.01)  # poll: the kernel gives no wake-up when a v1 group empties

    def _kill_still_listed(self, listed: set[int]) -> set[int]:
        """SIGKILL each of ``listed`` through a pidfd, if the group still lists it once the pidfd
        holds the process: a pid read from the group may have ended and gone to a process outside
        it since (a pidfd opened on the new owner, whose pid the group no longer lists).  Returns
        the pids signalled."""
        signalled: set[int] = set()
        pending = sorted(listed)
        while pending:
            batch, pending = pending[:PIDFD_BATCH], pending[PIDFD_BATCH:]
            pidfds: dict[int, int] = {}
            for pid in batch:
                with contextlib.suppress(OSError):
                    pidfds[pid] = os.pidfd_open(pid)
            try:
                still = self.members()
                for pid, pidfd in pidfds.items():
                    if pid in still:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                            signalled.add(pid)
            finally:
                for pidfd in pidfds.values():
                    os.close(pidfd)
        return signalled

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed in this group so far."""
        if self.version == "v2":
            return _read_keyed(f"{self.folders['unified']}/memory.events", "oom_kill") or 0
        folder = self.folders.get("memory")
        if folder is None:
            return 0
        counted = _read_keyed(f"{folder}/memory.oom_control", "oom_kill")
        if counted is not None:
            return counted
        return 1 if (_read_int(f"{folder}/memory.failcnt") or 0) > 0 else 0  # kernels before 4.13

    def usage(self) -> tuple[float, int] | None:
        """``(cpu seconds, memory bytes)`` of the whole group, from the kernel's counters."""
        if self.version == "v2":
            folder = self.folders["unified"]
            cpu_us, memory = _read_keyed(f"{folder}/cpu.stat", "usage_usec"), _read_int(f"{folder}/memory.current")
            return (cpu_us / 1e6, memory) if cpu_us is not None and memory is not None else None
        if "cpuacct" not in self.folders or "memory" not in self.folders:
            return None
        cpu_ns = _read_int(f"{self.folders['cpuacct']}/cpuacct.usage")
        memory = _read_int(f"{self.folders['memory']}/memory.usage_in_bytes")
        return (cpu_ns / 1e9, memory) if cpu_ns is not None and memory is not None else None

    def remove(self) -> None:
        """Remove the (empty) groups; a group still busy stays and is reused by the next start."""
        for folder in self.folders.values():
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    log.warning("could not remove cgroup %s: %s", folder, exc)
