"""One MQTT connection that keeps itself up: reconnects with backoff, resubscribes,
and holds an outbox so notifications published while the broker is away go out
after the reconnect, in order.

Built on ``aiomqtt`` (paho-mqtt driven by the asyncio loop).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiomqtt

from .config import BrokerAddress

log = logging.getLogger("bolt_device.mqtt")

MessageHandler = Callable[[str, bytes, bool], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]
OUTBOX_LIMIT = 10_000
INITIAL_BACKOFF = 0.1
RESEND_PAUSE = 0.5


class NotConnected(RuntimeError):
    """The link is down; the message was not sent."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class _Client(aiomqtt.Client):
    """aiomqtt's client with its pending calls kept in O(1) per call.

    aiomqtt (2.x) checks each new call's message id against a generator over every pending
    subscribe, unsubscribe and publish, counts them by listing that generator, and logs a
    warning for each call made while more than 10 are pending.  A manager with 500 requests
    awaiting their broker acknowledgement at once walked about 250,000 ids for 500 publishes
    and wrote 490 warnings into its log (bench/mqtt_publish_burst.py: 0.72x the CPU per burst).
    The same bookkeeping, by dictionary look-up; a burst of acknowledgements due is not a problem
    to log (a publish never acknowledged fails with aiomqtt's timeout, as before).  It overrides
    a private method (as aiomqtt 2.5 has it): test_device_transport's burst test fails if that changes.
    """

    @contextlib.contextmanager
    def _pending_call(self, mid: int, value: Any, pending_dict: dict[int, Any]) -> Iterator[None]:
        if mid in self._pending_subscribes or mid in self._pending_unsubscribes or mid in self._pending_publishes:
            raise RuntimeError(f'There already exists a pending call for message ID "{mid}"')
        pending_dict[mid] = value
        try:
            yield
        finally:  # the acknowledgement's callback removes it, unless none came (a timeout, a lost connection)
            pending_dict.pop(mid, None)


class MqttLink:
    def __init__(
        self,
        broker: BrokerAddress,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        *,
        will: Outgoing | Callable[[], Outgoing] | None = None,
        on_connect: ConnectHandler | None = None,
        keepalive: int = 30,
        max_backoff: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_connect = on_connect
        self._will = will
        self._keepalive = keepalive
        self._max_backoff = max_backoff
        self._timeout = timeout  # for the broker's acknowledgements (connect, subscribe, QoS 1 publish)
        self._client: aiomqtt.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._outbox: collections.deque[Outgoing] = collections.deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self.connected = asyncio.Event()
        self.connections = 0  # how many times the link came up (tests and stats)
        self.messages_in = 0
        self.messages_out = 0
        self.unacknowledged = 0  # queued messages the broker did not acknowledge in time (sent again)
        self.attempts: collections.deque[float] = collections.deque(maxlen=100)  # monotonic start of each try
        self._came_up = False

    # lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def stop(self, last_words: Outgoing | None = None, timeout: float = 3.0) -> None:
        """Publish ``last_words`` if connected (a DC, say), then disconnect cleanly."""
        self._stopping = True
        if last_words is not None and self._client is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await self._send(self._client, last_words)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait({self._runner})  # unlike `await`, never takes our own cancel for its
        self._runner = None
        self.connected.clear()

    # sending ------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Send now; raises :class:`NotConnected` when the link is down."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotConnected(f"not connected to the broker {self.broker.host}:{self.broker.port}")
        try:
            await self._send(client, Outgoing(topic, payload, qos, retain))
        except aiomqtt.MqttError as exc:
            raise NotConnected(str(exc)) from exc

    def enqueue(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Send when connected (now or after the next reconnect), keeping the order."""
        self._outbox.append(Outgoing(topic, payload, qos, retain))
        self._outbox_empty.clear()
        self._outbox_ready.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued message has been acknowledged by the broker.

        False when the link is down or ``timeout`` passes first (the messages stay queued).
        """
        if not self._outbox:
            return True
        if not self.connected.is_set():
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._outbox_empty.wait()
        except TimeoutError:
            return False
        return True

    @property
    def queued(self) -> int:
        """How many messages wait in the outbox."""
        return len(self._outbox)

    def take_outbox(self) -> list[Outgoing]:
        """Remove and return the messages not sent yet (to hand them to the next link)."""
        items = list(self._outbox)
        self._outbox.clear()
        self._outbox_empty.set()
        return items

    def restore_outbox(self, items: list[Outgoing]) -> None:
        """Queue ``items`` ahead of anything enqueued later, in their order."""
        for item in reversed(items):
            self._outbox.appendleft(item)
        if items:
            self._outbox_empty.clear()
            self._outbox_ready.set()

    async def _send(self, client: aiomqtt.Client, item: Outgoing) -> None:
        await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        self.messages_out += 1

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._outbox:
                self._outbox_empty.set()
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            item = self._outbox[0]
            try:
                await self._send(client, item)
            except aiomqtt.MqttError as exc:
                # Not acknowledged in time (a loaded broker or host): the message stays first in
                # line and goes again; ending here would hold every later one until a reconnect.
                # A dropped connection ends this task anyway, and the next connection sends it.
                self.unacknowledged += 1
                log.warning("%s: the broker did not acknowledge %s (%s); sending it again",
                            self.client_id, item.topic, exc)
                await asyncio.sleep(RESEND_PAUSE)
                continue
            if self._outbox and self._outbox[0] is item:
                self._outbox.popleft()

    # the connection loop ------------------------------------------------------
    def _client_for(self) -> aiomqtt.Client:
        will = None
        last = self._will() if callable(self._will) else self._will
        if last is not None:
            will = aiomqtt.Will(last.topic, last.payload, qos=last.qos, retain=last.retain)
        return _Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            will=will,
            clean_session=True,
            keepalive=self._keepalive,
            timeout=self._timeout,
            tls_context=ssl.create_default_context() if self.broker.tls else None,
        )

    async def _run(self) -> None:
        delay = INITIAL_BACKOFF
        while not self._stopping:
            self.attempts.append(time.monotonic())
            self._came_up = False
            try:
                await self._connection()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever ends one attempt, the loop goes on
                if not self._stopping:
                    log.warning("%s: broker connection lost or refused (%s: %s); retrying",
                                self.client_id, type(exc).__name__, exc)
            finally:
                self.connected.clear()
                self._client = None
            if self._stopping:
                break
            if self._came_up:
                delay = INITIAL_BACKOFF
            await asyncio.sleep(delay + random.uniform(0, delay / 2))  # backoff with jitter
            delay = min(delay * 2, self._max_backoff)

    async def _connection(self) -> None:
        """One connection: subscribe, run the on-connect step, then handle messages until it drops."""
        async with self._client_for() as client:
            for topic in self._subscriptions:
                await client.subscribe(topic, qos=1)
            self._client = client
            self.connected.set()
            self.connections += 1
            log.info("%s connected to %s:%s", self.client_id, self.broker.host, self.broker.port)
            sender = asyncio.create_task(self._drain_outbox(client))
            try:
                if self._on_connect is not None:
                    await self._on_connect()
                self._came_up = True  # a failing on-connect step keeps the backoff growing
                async for message in client.messages:
                    self.messages_in += 1
                    payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                    try:
                        await self._on_message(str(message.topic), bytes(payload), bool(message.retain))
                    except Exception:
                        log.exception("%s: handler failed for %s", self.client_id, message.topic)
            finally:
                self.connected.clear()
                self._client = None
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
