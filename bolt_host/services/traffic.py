"""Requests in flight through the ``/x/<app>/`` proxy, counted per app port.

A rolling restart switches an app to a new process and then drains the old one: no new
request goes to the old port, and the old process is stopped once the requests already
there have finished (or the stop grace has passed).  The proxy takes a :class:`Lease` on the
port it forwards to for as long as the request (its whole streamed answer) or WebSocket
lasts; :meth:`Traffic.wait_idle` is what the drain waits on.

Picking the port and taking the lease happen in one synchronous step (no ``await`` between
them, see :meth:`~bolt_host.services.supervisor.Supervisor.lease`), so a drain that starts
after a switch sees every request that was routed before it.
"""

from __future__ import annotations

import asyncio
import contextlib


class Lease:
    """One request's hold on an app port; :meth:`release` may be called any number of times."""

    __slots__ = ("_released", "_traffic", "port")

    def __init__(self, traffic: Traffic, port: int) -> None:
        self._traffic = traffic
        self.port = port
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._traffic._leave(self.port)


class Traffic:
    def __init__(self) -> None:
        self._outstanding: dict[int, int] = {}
        self._idle: dict[int, asyncio.Event] = {}

    def enter(self, port: int) -> Lease:
        self._outstanding[port] = self._outstanding.get(port, 0) + 1
        event = self._idle.get(port)
        if event is not None:
            event.clear()
        return Lease(self, port)

    def outstanding(self, port: int) -> int:
        return self._outstanding.get(port, 0)

    async def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no request holds ``port`` (True), or ``timeout`` seconds (False)."""
        if not self._outstanding.get(port):
            return True
        event = self._idle.setdefault(port, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return not self._outstanding.get(port)

    def _leave(self, port: int) -> None:
        left = self._outstanding.get(port, 0) - 1
        if left > 0:
            self._outstanding[port] = left
            return
        self._outstanding.pop(port, None)
        event = self._idle.pop(port, None)
        if event is not None:
            event.set()
