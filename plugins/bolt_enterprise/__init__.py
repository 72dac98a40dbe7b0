"""The `enterprise` store backend: WSO2 App Manager's Store APIs over the host's
users, roles, apps and (when a device backend is loaded) devices.

Registered through the `bolt_host` entry-point group like any third-party
plugin.  Routes live under ``/store/...`` and ``/api/v1/apps/mobile/...``; see
docs/enterprise.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bolt_host import hookimpl

if TYPE_CHECKING:
    from bolt_host.host import Host
    from bolt_host.services.events import Event

__version__ = "0.1.0"


@hookimpl
def register_routes(host: Host) -> list[Any]:
    from bolt_enterprise import asset_routes, jaxrs_routes, mobile_routes, user_routes, webapp_routes

    return [
        *user_routes.routes,
        *asset_routes.routes,
        *webapp_routes.routes,
        *mobile_routes.routes,
        *jaxrs_routes.routes,
    ]


@hookimpl
def startup(host: Host) -> None:
    from bolt_enterprise.context import Enterprise

    Enterprise.start(host)


@hookimpl
def register_permissions(host: Host) -> list[tuple[str, str]]:
    return [
        ("/store/apis/user/login", "public"),
        ("/store/apis/user/logout", "public"),
        ("/store/apis/user/exists", "public"),
        ("/store/apis/user/register", "admin"),
        ("/store/apis/v1/assets", "admin"),
        ("/store/apis/tag", "public"),
        ("/store/resources/webapp/v1/subscription", "user"),
        ("/store/resources/webapp/v1/unsubscription", "user"),
        ("/store/resources/webapp/v1/subscriptions", "admin"),
        ("/store/apps", "user"),
        ("/store/apis/enterprise/get-devices", "user"),
        ("/store/apis/enterprise", "admin"),
        ("/api/v1/apps/mobile", "admin"),
    ]


@hookimpl
def on_event(host: Host, event: Event) -> None:
    """Drop entitlements of apps and users that no longer exist."""
    enterprise = host.state.get("enterprise")
    body = event.body if isinstance(event.body, dict) else {}
    if enterprise is None or not event.from_host:
        return
    if event.name == "app-uninstalled" and isinstance(body.get("app"), dict):
        enterprise.subscriptions.forget_app(body["app"]["name"])
    elif event.name == "user-deleted" and isinstance(body.get("name"), str):
        enterprise.subscriptions.forget_subject("user", body["name"])
