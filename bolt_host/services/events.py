"""The host's event bus: one publish, many listeners with bounded queues.

Listeners are the plugin hook ``on_event`` (wired by the Host), server-sent
event streams (one bounded queue each; a slow reader gets an overflow marker
instead of slowing the publisher) and any in-process callback.

A call that makes many events and must answer fast (a stop of many apps) may hold the bus
(:meth:`EventBus.held`): events published meanwhile get their ids and times at once but are
delivered after the hold, in order, by a background task that lets the loop run between
them, so the call's answer goes out first.  Events published while a backlog is still
going out queue behind it: every listener and stream sees every event in id order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Listener = Callable[["Event"], Awaitable[None] | None]

STREAM_QUEUE_SIZE = 256
EVENTS_PER_TURN = 16  # a backlog's events delivered between two turns of the loop
HOST_PUBLISHER = "bolt"

# The events the host itself publishes (publisher "bolt").  Apps may not publish these
# names: a listener that forgot to check the publisher would take an app's word for them.
HOST_EVENTS = frozenset(
    {
        "system-started",
        "stream-overflow",
        *(f"app-{what}" for what in ("downloaded", "installed", "updated", "uninstalling", "uninstalled")),
        *(f"app-{what}" for what in ("starting", "started", "stopping", "stopped", "crashed", "backoff", "failed")),
        *(f"user-{what}" for what in ("created", "updated", "deleted", "logged-in", "logged-out")),
        *(f"role-{what}" for what in ("created", "updated", "deleted")),
        *(f"task-{what}" for what in ("queued", "started", "succeeded", "failed", "canceled")),
    }
)


def is_reserved_event_name(name: str) -> bool:
    """Whether an app is refused ``name``: a host event, or one dressed as the host's (``bolt/...``)."""
    return name in HOST_EVENTS or name.startswith(f"{HOST_PUBLISHER}/")


@dataclass
class Event:
    """Something that happened: ``name`` like ``app-started``; ``body`` is JSON-able."""

    name: str
    body: Any = None
    publisher: str = HOST_PUBLISHER
    time: float = field(default_factory=time.time)
    id: int = 0

    @property
    def from_host(self) -> bool:
        """Published by the host (core or a plugin), not by an app through ``POST /api/events``."""
        return self.publisher == HOST_PUBLISHER

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "body": self.body,
            "publisher": self.publisher,
            "time": self.time,
        }


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._streams: set[asyncio.Queue[Event | None]] = set()
        self._ids = itertools.count(1)
        self._pending: set[asyncio.Task[None]] = set()
        self._holds = 0
        self._backlog: deque[Event] = deque()
        self._sending: asyncio.Task[None] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def publish(self, name: str, body: Any = None, publisher: str = "bolt") -> Event:
        """Deliver to streams at once and to listeners concurrently (after a hold and the events
        held before it: see :meth:`held`); never raises."""
        event = Event(name=name, body=body, publisher=publisher, id=next(self._ids))
        if self._holds or self._backlog or self._sending is not None:
            self._backlog.append(event)
            if not self._holds:
                self._send_backlog()
        else:
            self._deliver(event)
        return event

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Deliver the events published in the block only after it (in order, from a task)."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds and self._backlog:
                self._send_backlog()

    def _deliver(self, event: Event) -> None:
        for queue in list(self._streams):
            _offer(queue, event)
        for listener in list(self._listeners):
            task = asyncio.ensure_future(_call_listener(listener, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _send_backlog(self) -> None:
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._deliver_backlog(), name="event backlog")

    async def _deliver_backlog(self) -> None:
        try:
            sent = 0
            while self._backlog and not self._holds:
                if sent % EVENTS_PER_TURN == 0:
                    await asyncio.sleep(0)  # first of all: the call that held the bus answers
                if self._backlog and not self._holds:
                    self._deliver(self._backlog.popleft())
                    sent += 1
        finally:
            self._sending = None  # what a new hold queues goes when that hold ends

    async def drain(self) -> None:
        """Wait for the held events' delivery and for listener deliveries started so far (tests and shutdown)."""
        while self._sending is not None or self._pending:
            if self._sending is not None:
                await asyncio.shield(self._sending)
            if self._pending:
                await asyncio.gather(*list(self._pending), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[asyncio.Queue[Event | None]]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=STREAM_QUEUE_SIZE)
        self._streams.add(queue)
        try:
            yield queue
        finally:
            self._streams.discard(queue)

    def close_streams(self) -> None:
        while self._backlog:  # the streams get what was held for them before they end
            self._deliver(self._backlog.popleft())
        for queue in list(self._streams):
            _offer(queue, None)


def _offer(queue: asyncio.Queue[Event | None], event: Event | None) -> None:
    if queue.full():
        # Drop the oldest and mark the gap, so a slow reader never blocks publishers.
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        overflow = Event(name="stream-overflow", body={"dropped": 1})
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(overflow)
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(event)


async def _call_listener(listener: Listener, event: Event) -> None:
    import logging

    try:
        result = listener(event)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
    except Exception:  # a broken listener must not break the publisher
        logging.getLogger("bolt_host.events").exception("event listener failed for %s", event.name)
