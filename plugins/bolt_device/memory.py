"""A manager's memory: glibc's heap kept small, and opt-in reports for finding what a burst
leaves allocated.

:func:`keep_heap_small` fixes glibc's thresholds (``mallopt``): by default every large
buffer freed (a journal batch's encoding, say) raises the size above which malloc uses
mmap, and with it the free space it keeps at the top of its heap instead of giving it back,
up to 64 MiB; in the 500-device bench that kept about 5 MiB after each burst (what
``malloc_trim`` then released). With the thresholds fixed at glibc's own defaults, large
buffers are mapped and unmapped and the heap's top goes back to the kernel when freed.

With ``BOLT_DEVICE_MEMORY_REPORTS=DIR`` (off by default) the manager writes, on
``SIGUSR1``, a report to ``DIR/<n>.txt``: its RSS, glibc's malloc statistics
(``mallinfo2``: what malloc holds, in use and free, i.e. fragmentation), the
Python allocations tracemalloc sees (top lines, and the change since the previous
report) when tracing is on (``PYTHONTRACEMALLOC=N`` traces from the interpreter's
start, N frames per allocation), and the report's label read from ``DIR/label``
if present.  On ``SIGUSR2`` it calls ``malloc_trim(0)`` and writes what that gave
back to ``DIR/<n>-trim.txt``.  ``bench/device_fanout.py --memory-reports DIR``
drives it (idle, at the burst's peak, after it, after a trim).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

log = logging.getLogger("bolt_device.memory")
ENV = "BOLT_DEVICE_MEMORY_REPORTS"
TOP_LINES = 40
TOP_TRACES = 12
MIB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024  # glibc's defaults; setting them explicitly turns off their dynamic growth


def keep_heap_small() -> bool:
    """Fix glibc malloc's trim and mmap thresholds; False where malloc is not glibc's."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(option, THRESHOLD) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))


def malloc_info() -> _MallInfo2 | None:
    """glibc's ``mallinfo2()`` (every arena), or None where malloc is not glibc's (2.33+)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info: _MallInfo2 = libc.mallinfo2()
    return info


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


class MemoryReports:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self._previous: tracemalloc.Snapshot | None = None
        self._libc = _libc()

    def install(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.report)
        loop.add_signal_handler(signal.SIGUSR2, self.trim)
        log.warning("memory reports on SIGUSR1 (malloc_trim on SIGUSR2) into %s; tracemalloc %s",
                    self.folder, "on" if tracemalloc.is_tracing() else "off (set PYTHONTRACEMALLOC=N)")

    def _label(self) -> str:
        try:
            return (self.folder / "label").read_text().strip()
        except OSError:
            return ""

    def malloc_lines(self) -> list[str]:
        rss = psutil.Process().memory_info().rss
        lines = [f"rss {rss / MIB:.1f} MiB"]
        info = malloc_info()
        if info is not None:
            lines.append(
                f"malloc: heap (sbrk) {info.arena / MIB:.1f} MiB, mmapped {info.hblkhd / MIB:.1f} MiB, "
                f"in use {info.uordblks / MIB:.1f} MiB, free inside the heap {info.fordblks / MIB:.1f} MiB "
                f"(trimmable at its top {info.keepcost / MIB:.1f} MiB)")
        return lines

    def report(self) -> None:
        self.count += 1
        began = time.perf_counter()
        lines = [f"report {self.count}: {self._label()}", *self.malloc_lines(), *_pymalloc_lines(), _modules()]
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            lines.append(f"tracemalloc: current {current / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB, "
                         f"its own overhead {tracemalloc.get_tracemalloc_memory() / MIB:.1f} MiB")
            snapshot = tracemalloc.take_snapshot().filter_traces((
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            ))
            lines.append(f"\ntop {TOP_LINES} lines:")
            lines += [str(stat) for stat in snapshot.statistics("lineno")[:TOP_LINES]]
            if self._previous is not None:
                lines.append(f"\nchange since report {self.count - 1}, top {TOP_LINES} lines:")
                lines += [str(stat) for stat in snapshot.compare_to(self._previous, "lineno")[:TOP_LINES]]
                if tracemalloc.get_traceback_limit() > 1:
                    lines.append(f"\nchange since report {self.count - 1}, top {TOP_TRACES} tracebacks:")
                    for stat in snapshot.compare_to(self._previous, "traceback")[:TOP_TRACES]:
                        lines.append(str(stat))
                        lines += [f"    {frame}" for frame in stat.traceback.format(most_recent_first=True)]
            self._previous = snapshot
        lines.append(f"\n(this report took {time.perf_counter() - began:.2f} s, the event loop blocked)")
        (self.folder / f"{self.count}.txt").write_text("\n".join(lines) + "\n")

    def trim(self) -> None:
        before = self.malloc_lines()
        released = self._libc.malloc_trim(0) if self._libc is not None else None
        after = self.malloc_lines()
        text = ["before malloc_trim(0):", *before, f"malloc_trim returned {released}", "after:", *after]
        (self.folder / f"{self.count}-trim.txt").write_text("\n".join(text) + "\n")


def _modules() -> str:
    """How many modules are loaded, and from which top-level packages (what the manager carries)."""
    loaded = [name for name, module in list(sys.modules.items()) if module is not None]  # None: an import blocked
    packages = collections.Counter(name.partition(".")[0] for name in loaded)
    listing = ", ".join(f"{name} {count}" for name, count in sorted(packages.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"modules loaded: {len(loaded)}; by top-level package: {listing}"


def _pymalloc_lines() -> list[str]:
    """Python's own allocator (objects up to 512 bytes, in 1 MiB arenas that malloc does not see):
    the summary lines of ``sys._debugmallocstats``, which writes to the C stderr."""
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    wanted = ("# arenas allocated current", "# bytes in allocated blocks", "# bytes in available blocks",
              "# bytes lost to pool headers", "# bytes lost to quantization", "Total")
    found: dict[str, str] = {}
    for line in text.splitlines():
        prefix = next((w for w in wanted if line.startswith(w)), None)
        if prefix is not None:
            found.setdefault(prefix, " ".join(line.split()))  # the first "Total" is the arenas' own
    return [f"pymalloc: {line}" for line in found.values()]
