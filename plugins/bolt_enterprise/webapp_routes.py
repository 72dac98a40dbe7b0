"""Web-app subscriptions (``/store/resources/webapp/v1/...``) and tags (``/store/apis/tag/{type}``).

Subscribing is self-service for web apps the caller can already see; an
``ENTERPRISE`` subscription (for the roles named in ``enterprises``) needs an
admin.  A user lists only their own subscriptions unless they are an admin;
the subscribers of an app are for admins only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import Actor

from .access import caller, require_admin, require_login
from .assets import app_url, asset_id, asset_type, check_type, provider_of
from .context import Enterprise, enterprise_of, login_form
from .replies import EnterpriseError, done, reply, store_endpoint

SUBSCRIPTION_TYPES = ("INDIVIDUAL", "ENTERPRISE")
DEFAULT_DETAILS = {"apiTier": "Unlimited", "subscriptionType": "INDIVIDUAL", "appName": "DefaultApplication"}


def subscription_view(row: dict[str, Any], app: dict[str, Any], base_url: str) -> dict[str, Any]:
    details = {**DEFAULT_DETAILS, **row.get("details", {})}
    return {
        "apiName": app["name"],
        "apiProvider": provider_of(app),
        "apiVersion": app["version"],
        **details,
        "subscriber": row["subject"],
        "subscriberType": row["kind"],
        "assetId": asset_id(app["name"]),
        "assetType": asset_type(app),
        "url": app_url(app, base_url),
        "subscribedBy": row.get("subscribedBy"),
        "dateCreated": row.get("dateCreated"),
    }


def _views(enterprise: Enterprise, rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    apps = {app["name"]: app for app in enterprise.host.apps.list()}
    return [
        subscription_view(row, apps[row["app"]], enterprise.base_url)
        for row in rows
        if row["app"] in apps and asset_type(apps[row["app"]]) == kind
    ]


def _webapp(enterprise: Enterprise, body: dict[str, Any], who: Actor) -> dict[str, Any]:
    """The web app the form names (``apiName``, checked against ``apiProvider`` and ``apiVersion``)."""
    name = body.get("apiName")
    if not isinstance(name, str) or not name:
        raise EnterpriseError(400, "'apiName' is missing")
    app = enterprise.visible_app(name, who.user_name or "")
    provider, version = body.get("apiProvider"), body.get("apiVersion")
    if (
        asset_type(app) != "webapp"
        or (provider and provider != provider_of(app))
        or (version and version != app["version"])
    ):
        raise EnterpriseError(404, f"No web app {name!r} with that provider and version")
    return app


async def _subscribers(request: Request, body: dict[str, Any], who: Actor) -> tuple[str, list[str], str]:
    """Who the form subscribes: the caller (INDIVIDUAL) or the ``enterprises`` roles (ENTERPRISE, admin)."""
    kind = str(body.get("subscriptionType") or "INDIVIDUAL").upper()
    if kind not in SUBSCRIPTION_TYPES:
        raise EnterpriseError(400, f"'subscriptionType' must be one of {', '.join(SUBSCRIPTION_TYPES)}")
    if kind == "INDIVIDUAL":
        return "user", [who.user_name or ""], kind
    await require_admin(request, "enterprise.subscribe.roles")
    roles = body.get("enterprises") or []
    if isinstance(roles, str):
        roles = [r.strip() for r in roles.split(",") if r.strip()]
    if not roles:
        raise EnterpriseError(400, "An ENTERPRISE subscription names its roles in 'enterprises'")
    return "role", list(roles), kind


@store_endpoint
async def subscribe(request: Request) -> Response:
    """Subscribe to a web app (form: apiName, apiVersion, apiTier, subscriptionType, apiProvider, appName)."""
    who, body, enterprise = await login_form(request)
    app = _webapp(enterprise, body, who)
    kind, subjects, subscription_type = await _subscribers(request, body, who)
    enterprise.subscriptions.check_subjects(kind, subjects)
    details = {
        "apiTier": str(body.get("apiTier") or DEFAULT_DETAILS["apiTier"]),
        "subscriptionType": subscription_type,
        "appName": str(body.get("appName") or DEFAULT_DETAILS["appName"]),
    }
    rows = [enterprise.subscriptions.subscribe(app["name"], kind, s, who.user_name, details) for s in subjects]
    await enterprise.host.publish(
        "enterprise-subscribed", {"app": app["name"], kind: subjects}, publisher="enterprise"
    )
    return done(
        f"Subscribed to {app['name']} {app['version']}",
        subscriptions=[subscription_view(row, app, enterprise.base_url) for row in rows],
    )


@store_endpoint
async def unsubscribe(request: Request) -> Response:
    """Unsubscribe from a web app (the same form fields as subscribing)."""
    who, body, enterprise = await login_form(request)
    app = _webapp(enterprise, body, who)
    kind, subjects, _ = await _subscribers(request, body, who)
    removed = sum(enterprise.subscriptions.unsubscribe(app["name"], kind, s) for s in subjects)
    await enterprise.host.publish(
        "enterprise-unsubscribed", {"app": app["name"], kind: subjects}, publisher="enterprise"
    )
    return done(f"Unsubscribed from {app['name']} {app['version']}", removed=removed)


@store_endpoint
async def app_subscriptions(request: Request) -> Response:
    """Every subscription of one web app (admin): ``.../subscriptions/{provider}/{name}[/{version}]``."""
    await require_admin(request, "enterprise.subscriptions.read")
    enterprise = enterprise_of(request)
    params = request.path_params
    for app in enterprise.host.apps.list():
        if (
            asset_type(app) == "webapp"
            and app["name"] == params["name"]
            and provider_of(app) == params["provider"]
            and params.get("version") in (None, app["version"])
        ):
            return reply(_views(enterprise, enterprise.subscriptions.for_app(app["name"]), "webapp"))
    raise EnterpriseError(404, "no matching web app found")


@store_endpoint
async def user_subscriptions(request: Request) -> Response:
    """A user's web-app subscriptions, their roles' included (their own, or anyone's for an admin)."""
    who = require_login(request)
    name = request.path_params["username"]
    if name.casefold() != (who.user_name or "").casefold():
        await require_admin(request, "enterprise.subscriptions.read", name)
    enterprise = enterprise_of(request)
    if enterprise.host.users.get(name) is None:
        raise EnterpriseError(404, f"No user {name!r}")
    return reply(_views(enterprise, enterprise.subscriptions.for_user(name), "webapp"))


@store_endpoint
async def tags(request: Request) -> Response:
    """Tags of the apps of one type the caller can see, with how many apps carry each."""
    kind = check_type(request.path_params["type"])
    who = caller(request)
    host = enterprise_of(request).host
    if who is not None:
        apps = host.visibility.visible_apps(who.user_name or "")
    else:
        apps = [app for app in host.apps.list() if not app.get("controlledVisibility")]
    counts = Counter(tag for app in apps if asset_type(app) == kind for tag in app.get("tags") or [])
    return reply([{"name": tag, "count": count} for tag, count in sorted(counts.items())])
