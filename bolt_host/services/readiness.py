"""Is a freshly spawned app ready?  Polled with short, growing intervals up to a deadline.

Server apps are ready when their ``health`` path answers 2xx/3xx, or without a
``health`` path when a TCP connect to their port succeeds; given the app's pid, the listener
on that port must also be the app's own (checked once, when the port first answers:
:mod:`listeners`).  Apps that are not
servers are ready once spawned and alive.  An exit during the wait ends it at
once (the wait races the exit future; it never sleeps through a crash).

Probes start 5 ms after the spawn and the interval grows by half each time up
to 50 ms, so a start is seen within 50 ms of the app listening (a client that
starts a fleet with bounded concurrency does not hold a slot long for the
probe's lag).  While the port refuses connections the probe is a non-blocking
connect (microseconds); the ``health`` request is only made once something
listens.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
from urllib.parse import quote

from bolt_host.services.listeners import port_holder

LOOPBACK = "127.0.0.1"
FIRST_INTERVAL = 0.005
MAX_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0


class ExitedDuringStart(Exception):
    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"exited during start (code {exit_code})")
        self.exit_code = exit_code


class NeverReady(Exception):
    pass


class ForeignListener(NeverReady):
    """The port answers, but another process holds it: the app never will."""


async def wait_until_ready(
    *,
    exited: asyncio.Future[int | None],
    port: int | None,
    health: str | None,
    timeout: float,
    pid: int | None = None,
) -> None:
    """Return once ready; raise :class:`ExitedDuringStart` or :class:`NeverReady`
    (:class:`ForeignListener` when ``pid``, the app's process, is given and another process
    listens on ``port``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = FIRST_INTERVAL
    unverified = pid  # the listener's owner is checked once, then this is None
    while True:
        if exited.done():
            raise ExitedDuringStart(None if exited.cancelled() else exited.result())
        if port is None:
            return
        if _listening(port):
            if unverified is not None:
                holder = port_holder(port, unverified)
                if not holder.owned:
                    raise ForeignListener(holder.describe(port))
                unverified = None
            if not health or await _health_ok(port, health):
                return
        remaining = deadline - loop.time()
        if remaining <= 0:
            what = f"GET {health} answering 2xx/3xx" if health else f"port {port} accepting connections"
            raise NeverReady(f"not ready within {timeout:g} s (waited for {what})")
        await asyncio.wait({exited}, timeout=min(interval, remaining))
        interval = min(interval * 1.5, MAX_INTERVAL)


async def _health_ok(port: int, health: str) -> bool:
    status = await _health_status(port, health if health.startswith("/") else f"/{health}")
    return status is not None and 200 <= status < 400


def _listening(port: int) -> bool:
    """Does something accept connections on the port?  A non-blocking connect on loopback is
    refused at once when nothing listens, so this costs microseconds, not a round of the loop."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        code = probe.connect_ex((LOOPBACK, port))
        if code == errno.EINPROGRESS:  # the answer is usually there already; else ask next round
            _, writable, _ = select.select([], [probe], [], 0)
            code = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else -1
        return code == 0


async def _health_status(port: int, path: str) -> int | None:
    """The status of ``GET path`` (a bare HTTP/1.0 request over a plain socket: several times
    cheaper than a client library's or a stream's, and this runs many times while a fleet of
    apps starts), or None."""
    target = quote(path, safe="/?&=%:@!$'()*+,;~-._")
    request = f"GET {target} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    answer = b""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):  # not wait_for: it can swallow a stop's cancel on 3.11
                await loop.sock_connect(probe, (LOOPBACK, port))
                await loop.sock_sendall(probe, request)
                while b"\n" not in answer and len(answer) < 1024:
                    chunk = await loop.sock_recv(probe, 1024)
                    if not chunk:
                        break
                    answer += chunk
        except (OSError, TimeoutError):
            return None
    parts = answer.split(b"\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None
