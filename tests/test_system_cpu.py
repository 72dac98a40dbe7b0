"""SystemCpu: the machine's CPU use between two readings, read from /proc/stat without psutil."""

from __future__ import annotations

import time

import psutil

from bolt_host.services.system_cpu import SystemCpu, _times


def _busy_until_ticks_pass(ticks: float, deadline_seconds: float = 20.0) -> None:
    """Keep this process on a CPU until the machine's tick count has moved by ``ticks``."""
    start = _times()
    assert start is not None
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        sum(range(10_000))
        now = _times()
        assert now is not None
        if now[1] - start[1] >= ticks:
            return
    raise AssertionError("the machine's CPU tick count did not move")


def test_a_busy_window_reads_above_zero_and_at_most_100() -> None:
    meter = SystemCpu()
    _busy_until_ticks_pass(20)
    percent = meter.percent()
    assert 0.0 < percent <= 100.0  # this process itself was busy for the whole window


def test_it_reads_what_psutil_reads_over_the_same_window() -> None:
    psutil.cpu_percent(interval=None)
    meter = SystemCpu()
    _busy_until_ticks_pass(200)
    ours, theirs = meter.percent(), psutil.cpu_percent(interval=None)
    assert abs(ours - theirs) <= 10.0  # the same counters, read a few microseconds apart

