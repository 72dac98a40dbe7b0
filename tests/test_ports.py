"""The port pool: free ports only, never one a live app holds, round-robin, exhaustion."""

from __future__ import annotations

import random
import socket

import pytest

from bolt_host.errors import APP_START_FAILED, BoltError
from bolt_host.services.ports import PortPool, is_port_free, wait_port_free


def pool_range(size: int) -> tuple[int, int]:
    """A block of free ports below the ephemeral range (outgoing connections take those)."""
    for _ in range(50):
        low = random.randrange(10000, 19900, 100)
        if all(is_port_free(port) for port in range(low, low + size)):
            return low, low + size - 1
    raise AssertionError("no block of free ports found")


def test_a_port_someone_listens_on_is_skipped() -> None:
    low, high = pool_range(3)
    with socket.create_server(("127.0.0.1", low)):
        assert not is_port_free(low)
        assert PortPool((low, high)).acquire("app") == low + 1


def test_held_ports_are_never_handed_out_twice() -> None:
    low, high = pool_range(3)
    pool = PortPool((low, high))

    ports = [pool.acquire(name) for name in ("a", "b", "c")]

    assert sorted(ports) == [low, low + 1, low + 2]
    with pytest.raises(BoltError) as exhausted:
        pool.acquire("d")
    assert exhausted.value.code == APP_START_FAILED
    pool.release(ports[1])
    assert pool.acquire("d") == ports[1] and pool.owner(ports[1]) == "d"


def test_a_released_port_is_not_reused_at_once() -> None:
    low, high = pool_range(4)
    pool = PortPool((low, high))
    first = pool.acquire("a")
    pool.release(first)

    assert pool.acquire("b") != first


def test_hold_marks_an_adopted_port() -> None:
    low, high = pool_range(2)
    pool = PortPool((low, high))
    pool.hold(low, "adopted")

    assert pool.acquire("new") == low + 1
    assert pool.held == {low: "adopted", low + 1: "new"}


async def test_wait_port_free_waits_for_the_listener_to_go() -> None:
    low, _ = pool_range(1)
    listener = socket.create_server(("127.0.0.1", low))
    assert not await wait_port_free(low, timeout=0.05)
    listener.close()
    assert await wait_port_free(low, timeout=1)


def test_a_requested_port_is_given_only_when_free_and_in_range() -> None:
    low, high = pool_range(3)
    pool = PortPool((low, high))
    assert pool.acquire("a", high) == high
    assert pool.acquire("a", high) == high  # its own port again (a restart)
    for wanted, why in ((high, f"port {high} for b is in use"),
                        (high + 1, f"port {high + 1} for b is outside the port range {low}-{high}")):
        with pytest.raises(BoltError) as refused:
            pool.acquire("b", wanted)
        assert refused.value.code == APP_START_FAILED and refused.value.message == why
    with socket.create_server(("127.0.0.1", low)), pytest.raises(BoltError) as busy:
        pool.acquire("b", low)  # something outside the host listens there
    assert busy.value.message == f"port {low} for b is in use"
    assert pool.acquire("b") != high  # the pool itself never hands out a held port
