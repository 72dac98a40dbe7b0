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
back once its restart is ready; an instance that hangs while its process lives is not
detected (there is no active health check).
"""

from __future__ import annotations

from typing import Any

from bolt_host.services.traffic import Traffic

SEPARATOR = "#"
DEFAULT_MAX_INSTANCES = 8


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
    """Picks the port for the next request among an app's serving instances."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._turn = 0

    def pick(self, ports: list[int]) -> int | None:
        if len(ports) < 2:
            return ports[0] if ports else None
        loads = [self._traffic.outstanding(port) for port in ports]
        least = min(loads)
        candidates = [port for port, load in zip(ports, loads, strict=True) if load == least]
        self._turn += 1
        return candidates[self._turn % len(candidates)]
