"""The agent's and manager's MQTT link against a real Mosquitto: it never stops
reconnecting for good, and it backs off between attempts."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from pathlib import Path

import pytest
from bolt_device.config import BrokerAddress
from bolt_device.transport import MqttLink, NotConnected

from tests.fixtures.device.mosquitto import MOSQUITTO, Mosquitto
from tests.helpers import async_wait_until, free_port

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is not installed (apt-get install mosquitto)"),
    pytest.mark.timeout(60),
]

USERS = {"dev-1": "secret-1"}


async def _ignore(topic: str, payload: bytes, retained: bool) -> None:
    return None


def _link(port: int, **options: object) -> MqttLink:
    address = BrokerAddress("127.0.0.1", port, username="dev-1", password=USERS["dev-1"])
    return MqttLink(address, "dev-1", ["$EDC/kapua-sys/dev-1/DEPLOY-V2/+/+"], _ignore, **options)  # type: ignore[arg-type]


async def test_a_link_whose_on_connect_step_fails_connects_again(tmp_path: Path) -> None:
    """A drop during the BIRTH publish raises NotConnected, a RuntimeError: the link must retry."""
    calls: list[int] = []

    async def on_connect() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise NotConnected("the broker went away while the BIRTH was being sent")

    with Mosquitto(tmp_path / "broker", USERS) as broker:
        link = _link(broker.port, on_connect=on_connect)
        link.start()
        try:
            await async_wait_until(lambda: len(calls) >= 2 and link.connected.is_set(), timeout=20,
                                   what="the link to connect again after the failed on-connect step")
            assert link.connections == 2
            await link.publish("$EDC/kapua-sys/dev-1/MQTT/BIRTH", b"{}")  # and it works
        finally:
            await link.stop()


async def test_backoff_grows_against_a_refused_port_until_a_broker_listens(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: every attempt is refused
    link = _link(port, max_backoff=0.8)
    link.start()
    broker = Mosquitto(tmp_path / "broker", USERS, port=port)
    try:
        await async_wait_until(lambda: len(link.attempts) >= 6, timeout=20, what="six connection attempts")
        times = list(link.attempts)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        designed = [0.1, 0.2, 0.4, 0.8, 0.8]  # doubling from 0.1 s, capped at max_backoff, plus up to 50 % jitter
        for gap, delay in zip(gaps, designed, strict=False):
            assert delay - 0.01 <= gap <= delay * 1.5 + 0.5, (gaps, designed)
        assert gaps[2] > gaps[0] * 2, gaps
        assert link.connections == 0 and not link.connected.is_set()

        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(link.connected.wait(), timeout=10)
        assert link.connections == 1
    finally:
        await link.stop()
        await asyncio.to_thread(broker.stop)


async def test_a_queued_message_the_broker_is_slow_to_acknowledge_goes_again_and_the_queue_moves_on(
    tmp_path: Path,
) -> None:
    """A loaded broker (here: stopped with SIGSTOP) acknowledges a QoS 1 publish after the link's
    timeout: the message is sent again and the ones queued behind it follow, on the same
    connection (before, the outbox stalled until the next reconnect)."""
    users = {**USERS, "bolt-manager": "manager-secret"}
    seen: list[bytes] = []

    async def collect(topic: str, payload: bytes, retained: bool) -> None:
        seen.append(payload)

    topic = "$EDC/kapua-sys/bolt-manager/DEPLOY-V2/NOTIFY/dev-1/download"
    with Mosquitto(tmp_path / "broker", users, managers=("bolt-manager",)) as broker:
        watcher = MqttLink(BrokerAddress("127.0.0.1", broker.port, username="bolt-manager",
                                         password=users["bolt-manager"]), "bolt-manager", [topic], collect)
        link = _link(broker.port, timeout=0.5)
        watcher.start()
        link.start()
        try:
            await asyncio.wait_for(asyncio.gather(link.connected.wait(), watcher.connected.wait()), timeout=20)
            assert broker.process is not None
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                link.enqueue(topic, b"first")
                await async_wait_until(lambda: link.unacknowledged >= 1, timeout=20, what="the publish to time out")
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            link.enqueue(topic, b"second")
            await async_wait_until(lambda: b"second" in seen, timeout=20, what="the message queued behind it")
            assert b"first" in seen and seen.index(b"first") < seen.index(b"second")
            assert link.connections == 1 and link.queued == 0
        finally:
            await link.stop()
            await watcher.stop()
