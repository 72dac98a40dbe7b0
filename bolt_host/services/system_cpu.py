"""The machine's CPU use between two readings, from /proc/stat (what ``psutil.cpu_percent`` computes).

The dashboard's and the Market's system figures read it; measuring it here spares the host
psutil's import (about 0.9 MB) until one of those pages is first asked for.
"""

from __future__ import annotations

import threading

STAT = "/proc/stat"


def _times() -> tuple[float, float] | None:
    """(busy, total) clock ticks of all CPUs since boot; None where /proc/stat cannot be read."""
    try:
        with open(STAT, "rb") as handle:
            fields = [float(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    idle = fields[3] + fields[4]
    total = sum(fields)
    return total - idle, total


class SystemCpu:
    """Percent of all CPUs busy since the previous :meth:`percent` (or since it was made)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = _times()

    def percent(self) -> float:
        now = _times()
        with self._lock:
            last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return 0.0
        busy = max(0.0, now[0] - last[0])
        return round(min(100.0, 100.0 * busy / (now[1] - last[1])), 1)
