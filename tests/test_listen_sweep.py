"""The readiness sweep: one kernel question per round tells many waits whose port listens.

Real sockets on 127.0.0.1: a port that starts listening wakes its wait (and only its wait),
a bound socket that does not listen wakes nothing, and the sweep stops once nothing waits.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from bolt_host.services import sockdiag
from bolt_host.services.listen_sweep import (
    FEW_PORTS,
    FIRST_SWEEP,
    MAX_SWEEP_INTERVAL,
    ListenSweep,
    port_ranges,
    sweep_interval,
)
from bolt_host.services.readiness import NeverReady, wait_until_ready
from tests.helpers import async_wait_until

pytestmark = pytest.mark.timeout(30)


async def _rounds(sweep: ListenSweep, count: int) -> None:
    """Poll (deadline 10 s) until the sweep has asked the kernel ``count`` more times."""
    wanted = sweep.rounds + count
    await async_wait_until(
        lambda: sweep.rounds >= wanted, timeout=10, interval=MAX_SWEEP_INTERVAL / 4, what=f"{count} sweeps"
    )


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_a_port_that_starts_listening_wakes_its_wait_only() -> None:
    sockets = [bound_socket() for _ in range(3)]
    try:
        ports = [sock.getsockname()[1] for sock in sockets]
        sweep = ListenSweep.of_running_loop()
        watches = [sweep.watch(port) for port in ports]
        await _rounds(sweep, 3)  # bound, not listening: several rounds find nothing
        assert not any(watch.done() for watch in watches)
        sockets[1].listen()
        await asyncio.wait_for(asyncio.shield(watches[1]), timeout=10)
        # the listening socket's inode comes with the notice (the owner check needs no dump of its own)
        assert watches[1].result() == {str(os.fstat(sockets[1].fileno()).st_ino)}
        assert not watches[0].done() and not watches[2].done()
        sockets[2].listen()
        await asyncio.wait_for(asyncio.shield(watches[2]), timeout=10)
        assert not watches[0].done()
        for port, watch in zip(ports, watches, strict=True):
            sweep.forget(port, watch)
        assert watches[0].cancelled() and sweep._task is None  # nothing waits: no round pending
    finally:
        for sock in sockets:
            sock.close()


async def test_two_waits_on_one_port_are_both_woken() -> None:
    with bound_socket() as sock:
        port = sock.getsockname()[1]
        sweep = ListenSweep.of_running_loop()
        first, second = sweep.watch(port), sweep.watch(port)
        sock.listen()
        await asyncio.wait_for(asyncio.gather(asyncio.shield(first), asyncio.shield(second)), timeout=10)
        sweep.forget(port, first)
        sweep.forget(port, second)


def test_waited_ports_become_few_ranges_that_cover_them_all() -> None:
    assert port_ranges([5, 1, 2, 3, 9]) == [(1, 3), (5, 5), (9, 9)]
    spread = [100 + 3 * i for i in range(50)] + [1000]
    joined = port_ranges(spread, limit=4)
    assert len(joined) == 4 and joined[-1] == (1000, 1000)  # the widest gaps stay gaps
    assert all(any(low <= port <= high for low, high in joined) for port in spread)


async def test_only_the_waited_ports_between_listening_ones_come_back() -> None:
    """The kernel's filter keeps to the runs of waited ports: listeners between them (apps
    ready already) are not handed back; a waited one among them is."""
    listeners = [bound_socket() for _ in range(4)]
    try:
        for sock in listeners:
            sock.listen()
        ports = sorted(sock.getsockname()[1] for sock in listeners)
        channel = sockdiag.open_channel()
        with channel:
            waited = [ports[0], ports[2]]
            found = {port for port, _ in sockdiag.listening_in(channel, port_ranges(waited))}
            assert found == set(waited)
            assert {port for port, _ in sockdiag.listening_in(channel, [(ports[0], ports[-1])])} >= set(ports)
    finally:
        for sock in listeners:
            sock.close()


def test_rounds_start_early_and_stay_within_the_bound() -> None:
    assert sweep_interval(0.0) == FIRST_SWEEP
    rounds = [sweep_interval(age) for age in (0.0, 0.01, 0.04, 1.0, 100.0)]
    assert rounds == sorted(rounds) and rounds[-1] == MAX_SWEEP_INTERVAL


def test_a_lone_wait_is_swept_sooner_than_a_crowd_and_within_the_same_bound() -> None:
    ages = (0.0, 0.01, 0.04, 0.1, 1.0, 100.0)
    lone = [sweep_interval(age, 1) for age in ages]
    crowd = [sweep_interval(age, 200) for age in ages]
    assert lone == sorted(lone) and lone[-1] == crowd[-1] == MAX_SWEEP_INTERVAL
    assert all(mine < theirs for mine, theirs in zip(lone[:3], crowd[:3], strict=True))
    assert sweep_interval(0.04, FEW_PORTS) == lone[2] and sweep_interval(0.04, FEW_PORTS + 1) == crowd[2]


async def test_a_listener_the_host_cannot_reach_on_loopback_is_not_ready() -> None:
    """The sweep sees any listener on the port; readiness still wants 127.0.0.1 to answer,
    as it did with a connect per round (the proxy connects there)."""
    with socket.socket() as elsewhere:
        elsewhere.bind(("127.0.0.2", 0))
        elsewhere.listen()
        port = elsewhere.getsockname()[1]
        never: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        with pytest.raises(NeverReady):
            await wait_until_ready(exited=never, port=port, health=None, timeout=0.5)
        with pytest.raises(NeverReady):  # with a health path its request is the loopback check
            await wait_until_ready(exited=never, port=port, health="/health", timeout=0.5)
        with socket.socket() as loopback:
            loopback.bind(("127.0.0.1", port))
            loopback.listen()
            await wait_until_ready(exited=never, port=port, health=None, timeout=10)
