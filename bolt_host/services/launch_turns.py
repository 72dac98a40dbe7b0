"""Launches take turns on the event loop: a start of many apps does not hold the loop for all of them.

The starts of one bulk call (``POST /api/apps/start {names}``, the autostart at boot) all wake
at once after their shared record write, and each one's launch (log open, ``Popen``, pidfd) is
synchronous.  Run back to back they made one turn of the event loop that lasted as long as
every spawn together: 3-4 s at 200 apps on two cores, while the apps launched first boot and
compete for the cores.  In that turn nothing else ran: no request was answered, no readiness
sweep looked at the apps already listening, so all 200 readiness checks (the owner check, the
``health`` request, the record, the notes and events of each) came in one burst after the
last spawn, on the host's one thread, and the call answered only after it.

With :class:`LaunchTurns` each launch waits for the previous one and then lets the loop turn
once (timers and I/O run) before it begins: the apps seen listening are checked while the
rest are spawned, requests are served meanwhile, and what is left after the last spawn is
that app's own start and its check.  A single start (a crash restart) waits one turn of an
idle loop: microseconds.  While launches are queued, the supervisor leaves the durable write of
each new pid to the last of them (or to the start's own wait for its record before it answers):
a write after every launch made ~120 writes of the whole state file per start of 200 apps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class LaunchTurns:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.queued = 0  # launches waiting for their turn or in it

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the turn for one launch: after the previous launch and one turn of the loop."""
        self.queued += 1
        try:
            async with self._lock:
                await asyncio.sleep(0)  # the loop turns (I/O, timers, other tasks) before this launch
                yield
        finally:
            self.queued -= 1
