"""Is a freshly spawned app ready?  Polled with short, growing intervals up to a deadline.

Server apps are ready when their ``health`` path answers 2xx/3xx, or without a
``health`` path when a TCP connect to their port succeeds.  Apps that are not
servers are ready once spawned and alive.  An exit during the wait ends it at
once (the wait races the exit future; it never sleeps through a crash).

Probes start 5 ms after the spawn and the interval grows by half each time up
to 100 ms, so a start is seen soon after the app listens (a Python app needs
50-100 ms) without hammering one that takes seconds.  While the port refuses
connections the probe is a bare TCP connect (microseconds); the ``health``
request is only made once something listens.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

LOOPBACK = "127.0.0.1"
FIRST_INTERVAL = 0.005
MAX_INTERVAL = 0.1
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
    if not await _accepts(port):
        return False
    if not health:
        return True
    path = health if health.startswith("/") else f"/{health}"
    try:
        response = await client.get(f"http://{LOOPBACK}:{port}{path}", timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


async def _accepts(port: int) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):  # not wait_for: it can swallow a stop's cancel on 3.11
            _, writer = await asyncio.open_connection(LOOPBACK, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
