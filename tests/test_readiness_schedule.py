"""The readiness probe's schedule: early and dense at first, sparser the longer a start takes
and the more starts are in flight."""

from __future__ import annotations

from bolt_host.services.readiness import FIRST_INTERVAL, MAX_BUSY_INTERVAL, MAX_INTERVAL, next_wait


def test_the_first_probes_come_early_and_the_wait_grows_with_the_time_waited() -> None:
    assert next_wait(0.0, 1) == FIRST_INTERVAL
    waits = [next_wait(waited, 1) for waited in (0.0, 0.01, 0.04, 0.1, 1.0, 10.0)]
    assert waits == sorted(waits) and waits[2] < 0.02  # an app up in 40 ms is seen within ~15 ms
    assert waits[-1] == MAX_INTERVAL  # one slow start: still at least 20 probes a second


def test_many_starts_in_flight_probe_less_often_but_within_a_bound() -> None:
    alone, crowd = next_wait(10.0, 1), next_wait(10.0, 200)
    assert alone == MAX_INTERVAL and alone < crowd <= MAX_BUSY_INTERVAL
    assert next_wait(0.0, 200) == FIRST_INTERVAL  # the first probe is early even in a crowd
