"""uvicorn's server with a main loop that sleeps until it is told to exit.

``uvicorn.Server.main_loop`` wakes every 0.1 s to see whether it should exit and, every
tenth time, to refresh the ``Date`` header it sends.  Here nothing wakes the loop while
nobody calls: a shut-down signal sets an event the loop waits on (so a shut-down is not
delayed), and the headers are made when a response asks for them, at most once per second
(the ``Date`` header has one-second resolution).  On an idle host with 200 apps a tick once
a second was most of the host's own CPU (about 0.25 ms per tick on a loaded machine).

uvicorn's tick also serves ``--limit-max-requests`` and the ``callback_notify`` of its
process managers; bolt-host sets neither.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from types import FrameType

from uvicorn.config import Config
from uvicorn.server import Server, ServerState


class DatedServerState(ServerState):
    """``default_headers`` (``Date`` and the configured ones) made on demand, once per second."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._second: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = time.time()
        second = int(now)
        if second != self._second:
            date = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = date + self._config.encoded_headers
            self._second = second
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        """uvicorn's own tick would set them; they are made on demand here."""


class QuietServer(Server):
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.server_state = DatedServerState(config)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not self.should_exit:
            await self._wake.wait()
            self._wake.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)  # safe from a signal handler
