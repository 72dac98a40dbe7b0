"""uvicorn's server with a main loop that sleeps when nothing happens.

``uvicorn.Server.main_loop`` wakes every 0.1 s to see whether it should exit and, every
tenth time, to refresh the ``Date`` header.  On an idle host those ten wake-ups a second
were most of its CPU (about 0.1 % of a core): here the loop wakes once a second (the
``Date`` header has one-second resolution anyway), and at once when a signal asks the
server to exit, so a shut-down is not delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_SECONDS = 1.0
UVICORN_TICKS_PER_SECOND = 10  # on_tick refreshes the headers when counter % 10 == 0


class QuietServer(uvicorn.Server):
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + UVICORN_TICKS_PER_SECOND) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)  # safe from a signal handler
