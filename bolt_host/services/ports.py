"""The pool of TCP ports handed to server apps as ``$PORT``.

A port is handed out only when no app of this host holds it and a test bind on
127.0.0.1 succeeds, so a port some other program listens on is skipped.  The
supervisor releases a port only after the app's whole process tree is gone,
so a stopping app's port is never given to the next app.  Candidates are tried
round-robin from just after the last port handed out, which keeps a freshly
released port out of circulation for a while (clients with keep-alive
connections to the old app do not reach the new one by accident).  An app may
ask for one port of the range (the ``requested_port`` hook); it gets it only when free.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Collection

from bolt_host.errors import APP_START_FAILED, BoltError

LOOPBACK = "127.0.0.1"
PORT_FREE_TIMEOUT = 5.0  # how long a stop waits for its app's port after the tree is gone


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds).

    SO_REUSEADDR mirrors what servers set (uvicorn, node, http.server), so
    connections lingering in TIME_WAIT do not make a port look busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


async def wait_port_free(port: int, timeout: float, host: str = LOOPBACK) -> bool:
    """Poll until ``port`` is free or ``timeout`` passes; True when it became free."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    while not is_port_free(port, host):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.1)
    return True


async def wait_ports_free(ports: Collection[int], timeout: float, host: str = LOOPBACK) -> set[int]:
    """:func:`wait_port_free` for many ports at once (one round of test binds for all of them,
    then only the busy ones again); the ports still busy at the end."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    busy = set(ports)
    while busy:
        busy = {port for port in busy if not is_port_free(port, host)}
        if not busy or time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.1)
    return busy


class PortPool:
    def __init__(self, port_range: tuple[int, int], host: str = LOOPBACK) -> None:
        low, high = port_range
        if not (0 < low <= high <= 65535):
            raise ValueError(f"bad port range {port_range!r}")
        self._low = low
        self._high = high
        self._host = host
        self._owners: dict[int, str] = {}
        self._next = low

    def acquire(self, owner: str, wanted: int | None = None) -> int:
        """A free port for ``owner`` (``wanted`` if given); BoltError(APP_START_FAILED) when there is none."""
        if wanted is not None:
            return self._take(owner, wanted)
        size = self._high - self._low + 1
        for step in range(size):
            port = self._low + (self._next - self._low + step) % size
            if port in self._owners or not is_port_free(port, self._host):
                continue
            self._owners[port] = owner
            self._next = port + 1 if port < self._high else self._low
            return port
        raise BoltError(APP_START_FAILED, f"no free port left in {self._low}-{self._high} for {owner}")

    def _take(self, owner: str, port: int) -> int:
        if not self._low <= port <= self._high:
            span = f"{self._low}-{self._high}"
            raise BoltError(APP_START_FAILED, f"port {port} for {owner} is outside the port range {span}")
        holder = self._owners.get(port)
        if holder not in (None, owner) or (holder is None and not is_port_free(port, self._host)):
            raise BoltError(APP_START_FAILED, f"port {port} for {owner} is in use")
        self._owners[port] = owner
        return port

    def hold(self, port: int, owner: str) -> None:
        """Mark ``port`` as held without checking it (an adopted app listens on it)."""
        self._owners[port] = owner

    def release(self, port: int) -> None:
        self._owners.pop(port, None)

    def owner(self, port: int) -> str | None:
        return self._owners.get(port)

    @property
    def held(self) -> dict[int, str]:
        return dict(self._owners)
