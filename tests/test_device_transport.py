"""The agent's and manager's MQTT link against a real Mosquitto: it never stops
reconnecting for good, and it backs off between attempts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator
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


NOTIFY_TOPIC = "$EDC/kapua-sys/bolt-manager/DEPLOY-V2/NOTIFY/dev-1/download"


@contextlib.asynccontextmanager
async def _device_and_watcher(
    tmp_path: Path, seen: list[bytes], **options: object
) -> AsyncIterator[tuple[Mosquitto, MqttLink]]:
    """A broker, a device's link (``options``) and the manager's link collecting what the device
    publishes on NOTIFY_TOPIC into ``seen``; both connected; both stopped after the block."""
    users = {**USERS, "bolt-manager": "manager-secret"}

    async def collect(topic: str, payload: bytes, retained: bool) -> None:
        seen.append(payload)

    with Mosquitto(tmp_path / "broker", users, managers=("bolt-manager",)) as broker:
        watcher = MqttLink(BrokerAddress("127.0.0.1", broker.port, username="bolt-manager",
                                         password=users["bolt-manager"]), "bolt-manager", [NOTIFY_TOPIC], collect)
        link = _link(broker.port, **options)
        watcher.start()
        link.start()
        try:
            await asyncio.wait_for(asyncio.gather(link.connected.wait(), watcher.connected.wait()), timeout=20)
            yield broker, link
        finally:
            await link.stop()
            await watcher.stop()


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
    seen: list[bytes] = []
    async with _device_and_watcher(tmp_path, seen, timeout=0.5) as (broker, link):
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            link.enqueue(NOTIFY_TOPIC, b"first")
            await async_wait_until(lambda: link.unacknowledged >= 1, timeout=20, what="the publish to time out")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        link.enqueue(NOTIFY_TOPIC, b"second")
        await async_wait_until(lambda: b"second" in seen, timeout=20, what="the message queued behind it")
        assert b"first" in seen and seen.index(b"first") < seen.index(b"second")
        assert link.connections == 1 and link.queued == 0


async def test_a_burst_of_publishes_awaiting_acknowledgement_is_not_logged_and_leaves_nothing_pending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A manager publishes hundreds of requests at once (a fleet's burst), all awaiting the broker's
    acknowledgement together: every one arrives, none stays pending, and aiomqtt's warning for each
    call made while more than 10 are pending (490 lines in a 500-device burst) is not written."""
    seen: list[bytes] = []
    async with _device_and_watcher(tmp_path, seen) as (_, link):
        payloads = [b"message-%d" % number for number in range(200)]
        caplog.clear()
        sent = asyncio.gather(*(link.publish(NOTIFY_TOPIC, payload) for payload in payloads))
        await asyncio.wait_for(sent, timeout=30)
        await async_wait_until(lambda: len(seen) >= len(payloads), timeout=20, what="every message")
        assert sorted(seen) == sorted(payloads)
        assert not [r for r in caplog.records if "pending" in r.getMessage()]
        client = link._client
        assert client is not None and not client._pending_publishes  # each removed at its acknowledgement
        with (  # a message id already pending is refused, as aiomqtt does
            pytest.raises(RuntimeError),
            client._pending_call(7, asyncio.Event(), client._pending_publishes),
            client._pending_call(7, asyncio.Event(), client._pending_subscribes),
        ):
            pass
        assert not client._pending_publishes
