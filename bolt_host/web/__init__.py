"""The web layer: translates HTTP to service calls; services never import it."""

from __future__ import annotations

from types import ModuleType


def core_route_modules() -> list[ModuleType]:
    """Every web module whose ``routes`` list the host mounts, in order."""
    from bolt_host.web import meta, users

    return [meta, users]
