"""Is a freshly spawned app ready?  Polled with short, growing intervals up to a deadline.

Server apps are ready when their ``health`` path answers 2xx/3xx, or without a
``health`` path when a TCP connect to their port succeeds.  Apps that are not
servers are ready once spawned and alive.  An exit during the wait ends it at
once (the wait races the exit future; it never sleeps through a crash).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

LOOPBACK = "127.0.0.1"
FIRST_INTERVAL = 0.02
MAX_INTERVAL = 0.25
PROBE_TIMEOUT = 1.0


class ExitedDuringStart(Exception):
    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"exited during start (code {exit_code})")
        self.exit_code = exit_code


class NeverReady(Exception):
    pass


async def wait_until_ready(
    *,
    exited: asyncio.Future[int | None],
    port: int | None,
    health: str | None,
    timeout: float,
    client: httpx.AsyncClient,
) -> None:
    """Return once ready; raise :class:`ExitedDuringStart` or :class:`NeverReady`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = FIRST_INTERVAL
    while True:
        if exited.done():
            raise ExitedDuringStart(None if exited.cancelled() else exited.result())
        if port is None or await _probe(port, health, client):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            what = f"GET {health} answering 2xx/3xx" if health else f"port {port} accepting connections"
            raise NeverReady(f"not ready within {timeout:g} s (waited for {what})")
        await asyncio.wait({exited}, timeout=min(interval, remaining))
        interval = min(interval * 1.5, MAX_INTERVAL)


async def _probe(port: int, health: str | None, client: httpx.AsyncClient) -> bool:
    if health:
        path = health if health.startswith("/") else f"/{health}"
        try:
            response = await client.get(f"http://{LOOPBACK}:{port}{path}", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
