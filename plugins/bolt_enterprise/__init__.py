"""The `enterprise` store backend: WSO2 App Manager's Store APIs over the host's
users, roles, apps and (when a device backend is loaded) devices.

Registered through the `bolt_host` entry-point group like any third-party
plugin (the host registers its :data:`plugin`); it imports only ``bolt_host.plugin``.
Routes live under ``/store/...`` and ``/api/v1/apps/mobile/...``; see docs/enterprise.md.
"""

from __future__ import annotations

from typing import Any

from bolt_host.plugin import Event, Host, hookimpl

__version__ = "0.1.0"


class EnterprisePlugin:
    """The backend's hooks; its per-host state lives in ``host.state["enterprise"]``."""

    @hookimpl
    def register_routes(self, host: Host) -> list[Any]:
        from .route_table import routes

        return routes()

    @hookimpl
    def startup(self, host: Host) -> None:
        from .context import Enterprise

        Enterprise.start(host)

    @hookimpl
    def on_event(self, host: Host, event: Event) -> None:
        """Drop entitlements of apps and users that no longer exist."""
        enterprise = host.state.get("enterprise")
        body = event.body if isinstance(event.body, dict) else {}
        if enterprise is None or not event.from_host:
            return
        if event.name == "app-uninstalled" and isinstance(body.get("app"), dict):
            enterprise.subscriptions.forget_app(body["app"]["name"])
        elif event.name == "user-deleted" and isinstance(body.get("name"), str):
            enterprise.subscriptions.forget_subject("user", body["name"])


plugin = EnterprisePlugin()
