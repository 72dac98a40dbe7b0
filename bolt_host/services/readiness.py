"""Is a freshly spawned app ready?  Watched with short, growing intervals up to a deadline.

Server apps are ready when their ``health`` path answers 2xx/3xx, or without a
``health`` path once something listens on their port (a connect would succeed); given the
app's pid, the listener on that port must also be the app's own (checked once, when the
port first listens: :mod:`listeners`).  Apps that are not servers are ready once spawned
and alive.  An exit during the wait ends it at once (the wait races the exit future; it
never sleeps through a crash).

Until the port listens, the wait sleeps on the event loop's :class:`ListenSweep`: one kernel
question per round for every start in flight, which also hands over the listening sockets'
inodes for the owner check.  Without a ``health`` path one connect then confirms it on
loopback (where the kernel cannot answer, or the listener is not on loopback, each wait
connects to its port every round instead); with one, its request is that confirmation.
Then the ``health`` request, repeated on this
schedule: 5 ms after the start, then 5 ms plus a quarter of the time waited so far, so a
start is seen within about a quarter of what the app itself took, a slow one is not probed
hundreds of times.  The wait is capped at 50 ms, or more while many apps start at once
(``BUSY_STARTS`` per 50 ms): at 200 simultaneous starts on two cores every probe takes CPU
from the apps being waited for.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
from typing import Any
from urllib.parse import quote

from bolt_host.services.listen_sweep import ListenSweep
from bolt_host.services.listeners import port_holder

LOOPBACK = "127.0.0.1"
FIRST_INTERVAL = 0.005
GROWTH = 0.25  # of the time waited so far, added to the next wait
MAX_INTERVAL = 0.05
BUSY_STARTS = 16  # starts in flight per MAX_INTERVAL of cap
MAX_BUSY_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0

_waiting = 0  # readiness waits in flight in this process


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
    global _waiting
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + timeout
    what = f"GET {health} answering 2xx/3xx" if health else f"port {port} accepting connections"
    late = f"not ready within {timeout:g} s (waited for {what})"
    _waiting += 1
    try:
        _raise_if_exited(exited)
        if port is None:
            return
        inodes = await _until_listening(port, exited, began, deadline, late, confirm=not health)
        if pid is not None:  # the listener's owner, checked once
            holder = port_holder(port, pid, inodes)
            if not holder.owned:
                raise ForeignListener(holder.describe(port))
        while True:
            _raise_if_exited(exited)
            if not health or await _health_ok(port, health):
                return
            now = loop.time()
            if now >= deadline:
                raise NeverReady(late)
            await asyncio.wait({exited}, timeout=min(next_wait(now - began, _waiting), deadline - now))
    finally:
        _waiting -= 1


async def _until_listening(
    port: int, exited: asyncio.Future[int | None], began: float, deadline: float, late: str, *, confirm: bool
) -> set[str] | None:
    """Return once something listens on ``port``: told by the loop's :class:`ListenSweep` (then
    with the inodes of the listening sockets), or where the kernel cannot tell, by a connect each
    round (then None); :class:`NeverReady` (``late``) at the deadline.

    ``confirm``: the sweep's word is confirmed by a connect on loopback, as the proxy will
    connect.  Without it (an app with a ``health`` path, whose request connects the same way
    and is repeated until it answers) the sweep's word is enough."""
    loop = asyncio.get_running_loop()
    sweep = ListenSweep.of_running_loop()
    watch: asyncio.Future[set[str]] | None = sweep.watch(port)
    told: set[str] | None = None
    try:
        while True:
            _raise_if_exited(exited)
            if watch is not None and watch.done():
                sweep.forget(port, watch)
                if not watch.cancelled() and watch.exception() is None:
                    told = watch.result()
                    if not confirm:
                        return told
                watch = None  # from now on (no sock_diag here, or a listener not on loopback) a connect per round
            if watch is None:
                if _listening(port):
                    return told  # a listener the host reaches on loopback, as the proxy will
                told = None  # the one found next may be another socket
            now = loop.time()
            if now >= deadline:
                raise NeverReady(late)
            if watch is not None:
                either: set[asyncio.Future[Any]] = {exited, watch}
                await asyncio.wait(either, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.wait({exited}, timeout=min(next_wait(now - began, _waiting), deadline - now))
    finally:
        if watch is not None:
            sweep.forget(port, watch)


def _raise_if_exited(exited: asyncio.Future[int | None]) -> None:
    if exited.done():
        raise ExitedDuringStart(None if exited.cancelled() else exited.result())


def next_wait(waited: float, starting: int) -> float:
    """Seconds until the next probe, ``waited`` seconds into a start, ``starting`` starts in flight."""
    cap = min(MAX_BUSY_INTERVAL, MAX_INTERVAL * max(1.0, starting / BUSY_STARTS))
    return min(cap, FIRST_INTERVAL + GROWTH * waited)


async def _health_ok(port: int, health: str, timeout: float = PROBE_TIMEOUT) -> bool:
    status = await _health_status(port, health if health.startswith("/") else f"/{health}", timeout)
    return status is not None and 200 <= status < 400


async def answers(port: int, health: str | None, timeout: float) -> bool:
    """Whether the app on ``port`` answers now, within ``timeout`` seconds: its ``health`` path
    with 2xx/3xx, or without one, a TCP connect (which a hung process's listen queue still
    accepts: only a ``health`` path tells a hang)."""
    if health:
        return await _health_ok(port, health, timeout)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(probe, (LOOPBACK, port))
        except (OSError, TimeoutError):
            return False
    return True


def _listening(port: int) -> bool:
    """Does something accept connections on the port?  A non-blocking connect on loopback is
    refused at once when nothing listens, so this costs microseconds, not a round of the loop."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        code = probe.connect_ex((LOOPBACK, port))
        if code == errno.EINPROGRESS:  # the answer is usually there already; else ask next round
            # poll, not select: a host running ~1000 apps holds more than select's 1024 descriptors
            poller = select.poll()
            poller.register(probe, select.POLLOUT)
            writable = poller.poll(0)
            code = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else -1
        return code == 0


async def _health_status(port: int, path: str, timeout: float = PROBE_TIMEOUT) -> int | None:
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
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a stop's cancel on 3.11
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
