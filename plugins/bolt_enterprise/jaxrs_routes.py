"""WSO2's JAX-RS mobile API (``/api/v1/apps/mobile/...``): HTTP Basic of an admin, one tenant.

The host has a single tenant, ``carbon.super`` (WSO2's super tenant); any other
tenant domain is a 404.  ``limit=0`` (the default) lists everything, as the
seed's sample answer (``"limit": 0``) shows.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import Actor, jsondepth

from .access import require_admin
from .assets import TENANT, find_app, mobile_summary, non_negative, page
from .context import Enterprise, enterprise_of
from .replies import EnterpriseError, Handler, reply, store_endpoint


async def _admin_of_tenant(request: Request, action: str) -> tuple[Enterprise, Actor]:
    who = await require_admin(request, action, basic_only=True)
    tenant = request.path_params["tenant"]
    if tenant != TENANT:
        raise EnterpriseError(404, f"Unknown tenant {tenant!r}; this host has one tenant, {TENANT}")
    return enterprise_of(request), who


def _summaries(enterprise: Enterprise, app_names: list[str]) -> list[dict[str, Any]]:
    apps = {app["name"]: app for app in enterprise.host.apps.list()}
    return [
        mobile_summary(apps[name], enterprise.base_url, with_location=True)
        for name in dict.fromkeys(app_names) if name in apps
    ]


@store_endpoint
async def list_apps(request: Request) -> Response:
    """A tenant's apps: ``?search=`` (in the name), ``platform=``, ``limit=``, ``offset=``."""
    enterprise, _ = await _admin_of_tenant(request, "enterprise.assets.read")
    query = request.query_params
    limit = non_negative(query.get("limit"), "limit", 0)
    offset = non_negative(query.get("offset"), "offset", 0)
    search = (query.get("search") or "").lower()
    platform = query.get("platform")
    everything = [mobile_summary(app, enterprise.base_url) for app in enterprise.host.apps.list()]
    found = [
        app for app in everything
        if (not search or search in app["name"].lower() or search in app["appName"].lower())
        and (not platform or app["platform"] == platform)
    ]
    return reply(
        {
            "apps": page(found, offset, limit or None),
            "query": {"found": len(found), "limit": limit, "total": len(everything), "offset": offset},
        }
    )


@store_endpoint
async def user_subscriptions(request: Request) -> Response:
    """Apps a user is subscribed to, directly or through their roles."""
    enterprise, _ = await _admin_of_tenant(request, "enterprise.subscriptions.read")
    name = request.path_params["subject"]
    enterprise.subscriptions.check_subjects("user", [name])
    return reply(_summaries(enterprise, [row["app"] for row in enterprise.subscriptions.for_user(name)]))


@store_endpoint
async def role_subscriptions(request: Request) -> Response:
    """Apps a role is subscribed to."""
    enterprise, _ = await _admin_of_tenant(request, "enterprise.subscriptions.read")
    role = request.path_params["subject"]
    enterprise.subscriptions.check_subjects("role", [role])
    return reply(_summaries(enterprise, [row["app"] for row in enterprise.subscriptions.for_subject("role", role)]))


async def _app_ids(request: Request) -> list[str]:
    try:
        ids = jsondepth.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnterpriseError(400, f"The body must be a JSON array of app ids: {exc}") from exc
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise EnterpriseError(400, 'The body must be a non-empty JSON array of app ids, e.g. ["<id>"]')
    return ids


def _changer(action: str, target: str) -> Handler:
    async def change(request: Request) -> Response:
        enterprise, who = await _admin_of_tenant(request, f"enterprise.{action}")
        subject = request.path_params["subject"]
        enterprise.subscriptions.check_subjects(target, [subject])
        ids = await _app_ids(request)
        apps = enterprise.host.apps.list()
        found = {ref: find_app(apps, ref) for ref in ids}
        unknown = [ref for ref, app in found.items() if app is None]
        if unknown:  # all known, or nothing changes
            raise EnterpriseError(404, f"No apps with the ids {', '.join(unknown)}")
        chosen = [app for app in found.values() if app is not None]
        for app in chosen:
            await enterprise.change(action == "subscribe", app["name"], target, [subject], who.user_name,
                                    f"enterprise-{action}d")
        return reply(_summaries(enterprise, [app["name"] for app in chosen]))

    change.__name__ = f"{action}_{target}"
    preposition = "to" if action == "subscribe" else "from"
    change.__doc__ = f"{action.capitalize()} a {target} {preposition} apps: JSON body ``[\"<app id>\", ...]``."
    return store_endpoint(change)


subscribe_user = _changer("subscribe", "user")
subscribe_role = _changer("subscribe", "role")
unsubscribe_user = _changer("unsubscribe", "user")
unsubscribe_role = _changer("unsubscribe", "role")
