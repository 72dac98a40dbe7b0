"""Every route of the backend, each handler named ``"module:function"`` (:func:`lazy_endpoint`): the
route modules are imported at the first request for one of their routes, not when the host starts."""

from __future__ import annotations

from starlette.routing import Route

from bolt_host.plugin import lazy_endpoint

ASSETS = "/store/apis/v1/assets/{type}"
WEBAPP = "/store/resources/webapp/v1"
MOBILE = "/api/v1/apps/mobile"

# (path, "module.function" in this package, method); in the order the routes are matched
TABLE: list[tuple[str, str, str]] = [
    ("/store/apis/user/login", "user_routes.login", "POST"),
    ("/store/apis/user/logout", "user_routes.logout", "GET"),
    ("/store/apis/user/register", "user_routes.register", "POST"),
    ("/store/apis/user/exists", "user_routes.exists", "POST"),
    *[
        (path + slash, f"asset_routes.{handler}", "GET")
        for path, handler in (
            (ASSETS, "list_assets"),
            (ASSETS + "/{provider}", "list_assets"),
            (ASSETS + "/{provider}/{name}", "list_assets"),
            (ASSETS + "/{provider}/{name}/{version}", "get_asset"),
        )
        for slash in ("", "/")
    ],
    (f"{WEBAPP}/subscription/app", "webapp_routes.subscribe", "POST"),
    (f"{WEBAPP}/unsubscription/app", "webapp_routes.unsubscribe", "POST"),
    (f"{WEBAPP}/subscriptions/{{provider}}/{{name}}", "webapp_routes.app_subscriptions", "GET"),
    (f"{WEBAPP}/subscriptions/{{provider}}/{{name}}/", "webapp_routes.app_subscriptions", "GET"),
    (f"{WEBAPP}/subscriptions/{{provider}}/{{name}}/{{version}}", "webapp_routes.app_subscriptions", "GET"),
    (f"{WEBAPP}/subscription/{{username}}", "webapp_routes.user_subscriptions", "GET"),
    ("/store/apis/tag/{type}", "webapp_routes.tags", "GET"),
    ("/store/apps/user/install", "mobile_routes.install_for_user", "POST"),
    ("/store/apps/devices/uninstall", "mobile_routes.uninstall_from_devices", "POST"),
    ("/store/apps/devices/{device_id}/install", "mobile_routes.install_on_device", "POST"),
    ("/store/apps/devices/{device_id}/{device_type}/install", "mobile_routes.install_on_device", "POST"),
    ("/store/apis/enterprise/get-devices", "mobile_routes.get_devices", "GET"),
    ("/store/apis/enterprise/get-all-roles", "mobile_routes.get_all_roles", "GET"),
    ("/store/apis/enterprise/get-all-users", "mobile_routes.get_all_users", "GET"),
    ("/store/apis/enterprise/perform/{action}/{target}", "mobile_routes.perform", "POST"),
    (MOBILE + "/list/tenant/{tenant}", "jaxrs_routes.list_apps", "GET"),
    (MOBILE + "/subscriptions/tenant/{tenant}/user/{subject}", "jaxrs_routes.user_subscriptions", "GET"),
    (MOBILE + "/subscriptions/tenant/{tenant}/role/{subject}", "jaxrs_routes.role_subscriptions", "GET"),
    *[
        (f"{MOBILE}/{action}/tenant/{{tenant}}/{target}/{{subject}}", f"jaxrs_routes.{action}_{target}", "POST")
        for action in ("subscribe", "unsubscribe")
        for target in ("user", "role")
    ],
]


def routes() -> list[Route]:
    made = []
    for path, handler, method in TABLE:
        module, _, function = handler.rpartition(".")
        made.append(Route(path, lazy_endpoint(f"{__package__}.{module}:{function}"), methods=[method]))
    return made
