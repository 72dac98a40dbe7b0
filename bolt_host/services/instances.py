"""Several processes of one server app behind ``/x/<app>/`` ("instances").

An app runs ``instances`` processes (``bolt.instances`` in its manifest, 1 by default; an
admin's ``instances`` through ``PUT /api/apps/<name>`` wins, kept across upgrades; capped by
the host's ``max_instances``; server apps only).  Each instance is an
:class:`~bolt_host.services.app_runtime.AppRuntime` of its own in the supervisor, with the
same state machine as any app: its own lock, port, pid, token, restarts and stats.  Instance
0 is keyed by the app's name (so everything that knows one context per app sees it);
instance ``k`` by ``<name>#<k>``.  They share the app's log, uid and cgroup (whose limits
cover them all).

Requests are balanced over the instances that are running and not draining by **least
outstanding requests**, ties taken in turn (round robin).  Least outstanding rather than
plain round robin because answers through the proxy differ widely in length (a streamed
answer or a WebSocket holds its instance for minutes, a page for milliseconds): counting what
is still in flight sends new work where there is least of it, and with equal counts (an idle
app, short requests) it is round robin.  A WebSocket holds its instance for its whole life.
An instance whose process exits is out of the rotation at once (it is not ``running``) and
back once its restart is ready.  An instance whose port refuses the proxy's connection (its
process lives but no longer listens) is left out until a connect succeeds again, and the
request that found it so is sent to another instance when it has no body (nothing of it can
have reached the app).  An instance that accepts connections but hangs is found by the active
health check (:mod:`health_probe`, its ``health`` path) and left out until it answers again;
requests it held before that end with the proxy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bolt_host.services.ports import LOOPBACK
from bolt_host.services.traffic import Traffic

SEPARATOR = "#"
DEFAULT_MAX_INSTANCES = 8
PROBE_INTERVAL = 0.25
PROBE_SECONDS = 60.0


def instance_key(name: str, index: int) -> str:
    """The supervisor's key for instance ``index`` of app ``name``."""
    return name if index == 0 else f"{name}{SEPARATOR}{index}"


def wanted_instances(app: dict[str, Any], cap: int) -> int:
    """How many processes ``app`` should run: the admin's count, else the manifest's, within the cap."""
    if app.get("server") is False:
        return 1
    wanted = app.get("adminInstances") or app.get("instances") or 1
    return max(1, min(int(wanted), cap))


def instances_problem(value: Any, cap: int) -> str | None:
    """What is wrong with an instance count (completing "'instances' ..."), or None."""
    if value is None:
        return None  # an admin's null: back to the manifest's count
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
        return f"must be a whole number from 1 to {cap} (the host's max_instances)"
    return None


class Balancer:
    """Picks the port for the next request among an app's serving instances, leaving out ports
    that refused a connection until they accept one again, and those the health probe took out
    until it puts them back."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._turn = 0
        self._refusing: dict[int, asyncio.Task[None]] = {}  # port -> its probe
        self._unhealthy: set[int] = set()

    def pick(self, ports: list[int]) -> int | None:
        if len(ports) < 2:
            return ports[0] if ports else None
        answering = [port for port in ports if port not in self._refusing and port not in self._unhealthy]
        ports = answering or ports  # all out: try anyway rather than refuse the request
        loads = [self._traffic.outstanding(port) for port in ports]
        least = min(loads)
        candidates = [port for port, load in zip(ports, loads, strict=True) if load == least]
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def refused(self, port: int) -> None:
        """The proxy could not connect to ``port``: out of the rotation until a connect succeeds
        (probed every :data:`PROBE_INTERVAL`, for at most :data:`PROBE_SECONDS`; by then the
        supervisor has seen the process exit, or it listens again)."""
        if port not in self._refusing:
            self._refusing[port] = asyncio.create_task(self._probe(port), name=f"probe port {port}")

    def take_out(self, port: int) -> None:
        """The health probe found ``port``'s instance hanging: no requests to it until :meth:`put_back`."""
        self._unhealthy.add(port)

    def put_back(self, port: int) -> None:
        self._unhealthy.discard(port)

    async def _probe(self, port: int) -> None:
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                while True:
                    await asyncio.sleep(PROBE_INTERVAL)
                    with contextlib.suppress(OSError):
                        _, writer = await asyncio.open_connection(LOOPBACK, port)
                        writer.close()
                        return
        except TimeoutError:
            pass
        finally:
            self._refusing.pop(port, None)

    async def close(self) -> None:
        probes = list(self._refusing.values())
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
