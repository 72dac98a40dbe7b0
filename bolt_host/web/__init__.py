"""The web layer: translates HTTP to service calls; services never import it."""

from __future__ import annotations

from starlette.routing import BaseRoute


def core_routes() -> list[BaseRoute]:
    """The host's own routes in matching order (fixed paths before ``/api/apps/{name}``)."""
    from bolt_host.web import appdata, apps, catalog, dashboard, meta, processes, proxy, tasks, users, wsproxy

    return [
        *meta.routes,
        *users.routes,
        *processes.routes,
        *proxy.routes,
        *wsproxy.routes,
        *apps.routes,
        *appdata.routes,
        *tasks.routes,
        *catalog.routes,
        *dashboard.routes,
        *apps.item_routes,
    ]
