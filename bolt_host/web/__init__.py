"""The web layer: translates HTTP to service calls; services never import it."""

from __future__ import annotations

from starlette.routing import BaseRoute


def core_routes() -> list[BaseRoute]:
    """The host's own routes in matching order (fixed paths before ``/api/apps/{name}``)."""
    from bolt_host.web import appdata, apps, meta, processes, users

    return [
        *meta.routes,
        *users.routes,
        *processes.routes,
        *apps.routes,
        *appdata.routes,
        *apps.item_routes,
    ]
