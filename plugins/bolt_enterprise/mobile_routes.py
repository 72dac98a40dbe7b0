"""Mobile installs (``/store/apps/...``) and enterprise operations (``/store/apis/enterprise/...``).

A user installs apps they can see for themselves or on their devices.  The
enterprise lists and installs to roles and users are for admins only, and
fail closed: the check comes first and nothing runs after a refusal (WSO2
answered 401 and then performed the action anyway).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import read_body

from .access import require_admin, require_login
from .assets import asset_id
from .context import enterprise_of, login_form
from .replies import EnterpriseError, done, reply, store_endpoint

ACTIONS = ("install", "uninstall")
TARGETS = ("role", "user")


@store_endpoint
async def install_for_user(request: Request) -> Response:
    """Install (subscribe) an app for the logged-in user: form ``asset=<app id>``."""
    who, body, enterprise = await login_form(request)
    app = enterprise.visible_app(body.get("asset"), who.user_name or "")
    enterprise.subscriptions.subscribe(app["name"], "user", who.user_name or "", who.user_name)
    await enterprise.host.publish(
        "enterprise-installed", {"app": app["name"], "user": [who.user_name]}, publisher="enterprise"
    )
    return done(f"Installed {app['name']} for {who.user_name}", assetId=asset_id(app["name"]))


@store_endpoint
async def install_on_device(request: Request) -> Response:
    """Install an app on one of the caller's devices through the device backend: form ``asset=<app id>``."""
    who, body, enterprise = await login_form(request)
    app = enterprise.visible_app(body.get("asset"), who.user_name or "")
    device_id = request.path_params["device_id"]
    record = await enterprise.devices.install(app, device_id, who.as_dict(), request.path_params.get("device_type"))
    return done(
        f"Asked device {device_id} to install {app['name']} {app['version']}",
        device=device_id, assetId=record["assetId"], operation=record["operation"],
    )


@store_endpoint
async def uninstall_from_devices(request: Request) -> Response:
    """Uninstall (unsubscribe) an app the caller installed: form ``asset=<app id>``."""
    who, body, enterprise = await login_form(request)
    app = enterprise.visible_app(body.get("asset"), who.user_name or "")
    unsubscribed = enterprise.subscriptions.unsubscribe(app["name"], "user", who.user_name or "")
    removed, kept = await enterprise.devices.uninstall_for_user(app, who.as_dict())
    message = f"Uninstalled {app['name']} for {who.user_name}"
    if kept:
        message += "; it stays on " + "; ".join(f"{device} ({why})" for device, why in kept.items())
    return done(message, unsubscribed=unsubscribed, removedFrom=removed, stillOn=list(kept), reasons=kept)


@store_endpoint
async def get_devices(request: Request) -> Response:
    """The devices the logged-in user may manage (503 without a device backend)."""
    who = require_login(request)
    return reply(await enterprise_of(request).devices.devices(who.as_dict()))


@store_endpoint
async def get_all_roles(request: Request) -> Response:
    """Every role, as ``{"aaData": [[name], ...]}`` (admin)."""
    await require_admin(request, "enterprise.roles.read")
    roles = enterprise_of(request).host.users.roles()
    return reply({"aaData": [[role["name"]] for role in roles]})


@store_endpoint
async def get_all_users(request: Request) -> Response:
    """Every user name, as ``{"aaData": [[name], ...]}`` (admin)."""
    await require_admin(request, "enterprise.users.read")
    users = enterprise_of(request).host.users.list()
    return reply({"aaData": [[user["name"]] for user in users]})


def _names(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise EnterpriseError(400, "'data[]' must name at least one user or role")
    return list(dict.fromkeys(names))


@store_endpoint
async def perform(request: Request) -> Response:
    """Install or uninstall an app for roles or users (admin): form ``app=<id>&data[]=<name>...``."""
    action, target = request.path_params["action"], request.path_params["target"]
    who = await require_admin(request, f"enterprise.{action}", target)
    if action not in ACTIONS or target not in TARGETS:
        raise EnterpriseError(404, f"No enterprise operation {action}/{target}")
    body = await read_body(request)
    enterprise = enterprise_of(request)
    app = enterprise.app(body.get("app"))
    subjects = _names(body.get("data"))
    enterprise.subscriptions.check_subjects(target, subjects)  # all known, or nothing changes
    await enterprise.change(action == "install", app["name"], target, subjects, who.user_name,
                            f"enterprise-{action}ed")
    return reply({"status": "success"})
