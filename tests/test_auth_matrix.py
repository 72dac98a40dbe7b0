"""The auth matrix: every route of the running app, called as five callers, allowed or refused.

The route list comes from the running app (``iter_endpoints(app.routes)``), core and
every loaded store backend, so a new route without a row in ``EXPECTED`` fails the test
by name.  Callers, in the order of the rule strings:

==========  ================================================================
anonymous   no credentials
user        a non-admin user (``bob``, role guest) with HTTP Basic
admin       the bootstrap admin with HTTP Basic
app         a non-system app's ``X-Bolt-App-Token`` (``echo``), no user
system      a system app's token (``app-admin``) together with an admin user token
==========  ================================================================

A rule is five characters, one per caller: ``+`` allowed, ``-`` refused.  *Refused* is
HTTP 401/403 (for the core envelope, with an auth code: not logged in, no admin right,
not a system app, app token missing/unknown, no right to the app); *allowed* is any
other answer (a 404 for a made-up name still passed the gate).  Each route gets a
minimal, valid-ish call: made-up names (nothing real is deleted) and a small body.

``BOLT_AUTH_MATRIX_DUMP=1`` prints the observed table, ready to paste, for new routes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.sessions import LoginThrottle
from bolt_host.testing import ADMIN_PASSWORD
from bolt_host.web.meta import iter_endpoints
from tests.helpers import REQUIRE_ALL_TOOLS_ENV
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
CALLERS = ("anonymous", "user", "admin", "app", "system")
BOB_PASSWORD = "bob-password-1"

# Rules, one character per caller in CALLERS order.
PUBLIC = "+++++"  # anyone
AUTHENTICATED = "-++++"  # require_user: a user or any app token
A_USER = "-++-+"  # a logged-in user (an app token alone is not one)
ADMIN = "--+-+"  # an admin user; an app token must be a system app's (installer, operator, admin)
APP = "---++"  # an app's own token (per-app data, events)
OWN_APP = "-++++"  # proxy: a user who may see the app, or the app itself (see PARAMS: name=echo)
NOBODY = "-----"  # none of the five: needs the store's own credentials (a Kapua bearer token)
STORE_USER = "-++--"  # a user by HTTP Basic or the store's session (enterprise)
STORE_ADMIN = "--+--"  # an admin by HTTP Basic or the store's session (enterprise)

EXPECTED: dict[tuple[str, str], str] = {
    # host
    ("GET", "/-/health"): PUBLIC,
    ("GET", "/-/plugins"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/dashboard/{path:path}"): PUBLIC,
    ("GET", "/api/system"): ADMIN,
    # users and roles
    ("POST", "/api/users/login"): PUBLIC,
    ("POST", "/api/users/logout"): PUBLIC,
    ("GET", "/api/users/@current"): A_USER,
    ("POST", "/api/users/change-password"): A_USER,
    ("GET", "/api/users"): AUTHENTICATED,
    ("POST", "/api/users"): ADMIN,
    ("GET", "/api/users/{name}"): AUTHENTICATED,
    ("DELETE", "/api/users/{name}"): ADMIN,
    ("PUT", "/api/users/{name}/roles"): ADMIN,
    ("GET", "/api/roles"): AUTHENTICATED,
    ("POST", "/api/roles"): ADMIN,
    # apps
    ("GET", "/api/apps"): AUTHENTICATED,
    ("POST", "/api/apps"): ADMIN,
    ("DELETE", "/api/apps"): ADMIN,
    ("GET", "/api/apps/{name}"): AUTHENTICATED,
    ("PUT", "/api/apps/{name}"): ADMIN,
    ("DELETE", "/api/apps/{name}"): ADMIN,
    ("POST", "/api/apps/package"): ADMIN,
    ("POST", "/api/apps/readme"): ADMIN,
    ("GET", "/api/apps/local"): ADMIN,
    ("POST", "/api/apps/local"): ADMIN,
    ("POST", "/api/apps/upload"): ADMIN,
    ("POST", "/api/apps/local-package"): ADMIN,
    ("POST", "/api/apps/local-readme"): ADMIN,
    ("POST", "/api/apps/install-task"): ADMIN,
    # running apps
    ("GET", "/api/apps/@live"): AUTHENTICATED,
    ("POST", "/api/apps/start"): ADMIN,
    ("POST", "/api/apps/stop"): ADMIN,
    ("POST", "/api/apps/restart"): ADMIN,
    ("GET", "/api/apps/{name}/logs"): ADMIN,
    **{(method, path): OWN_APP for path in ("/x/{name}", "/x/{name}/{path:path}")
       for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")},
    # per-app data, checks, grants, events, public files
    ("POST", "/api/db/{collection}/{operation}"): APP,
    ("DELETE", "/api/db/{collection}"): APP,
    ("DELETE", "/api/db"): APP,
    ("GET", "/api/checks/visible-apps/{user}"): "-++-+",  # bob asks about bob; another app may not
    ("POST", "/api/checks/has-permission"): AUTHENTICATED,
    ("GET", "/api/app-roles"): AUTHENTICATED,
    ("POST", "/api/app-roles"): ADMIN,
    ("DELETE", "/api/app-roles"): ADMIN,
    ("GET", "/api/events/stream"): ADMIN,
    ("POST", "/api/events/{name:path}"): APP,
    ("GET", "/public/{app}"): PUBLIC,
    ("GET", "/public/{app}/{path:path}"): PUBLIC,
    # tasks and catalog
    ("GET", "/api/tasks"): ADMIN,
    ("GET", "/api/tasks/{id}"): ADMIN,
    ("DELETE", "/api/tasks/{id}"): ADMIN,
    ("GET", "/api/tasks/{id}/log"): ADMIN,
    ("POST", "/api/tasks/{id}/cancel"): ADMIN,
    ("GET", "/api/catalog"): ADMIN,
    ("GET", "/api/catalog/package"): ADMIN,
    # robot backend (/app_store): admins (or system apps) only, for reads too; or the robot's Secret header
    ("GET", "/app_store/packages"): ADMIN,
    ("POST", "/app_store/services/refresh_store"): ADMIN,
    ("POST", "/app_store/services/download_packages"): ADMIN,
    ("POST", "/app_store/services/install_packages"): ADMIN,
    ("POST", "/app_store/services/install_local_file"): ADMIN,
    ("POST", "/app_store/services/upload_local_file"): ADMIN,
    ("POST", "/app_store/services/uninstall_packages"): ADMIN,
    ("GET", "/app_store/jobs/{group}/tasks"): ADMIN,
    ("GET", "/app_store/jobs/{group}/tasks/{task_id}/log"): ADMIN,
    ("POST", "/app_store/jobs/{group}/tasks/{task_id}/log"): ADMIN,
    ("POST", "/app_store/jobs/{group}/tasks/{task_id}/cancel"): ADMIN,
    ("GET", "/app_store/firmware/packages"): ADMIN,
    ("POST", "/app_store/firmware/install_packages"): ADMIN,
    # market backend (/app-store/api/v2): always a user (an app token alone is not one); the
    # catch-all answers the Market's 404 to everyone
    ("GET", "/app-store/api/v2/market/hash"): A_USER,
    ("GET", "/app-store/api/v2/market/data"): A_USER,
    ("GET", "/app-store/api/v2/market/state"): A_USER,
    ("GET", "/app-store/api/v2/market/statesimple"): A_USER,
    ("GET", "/app-store/api/v2/market/debug-memory"): ADMIN,
    ("POST", "/app-store/api/v2/apps"): A_USER,
    ("POST", "/app-store/api/v2/apps/version-history"): A_USER,
    ("POST", "/app-store/api/v2/apps/upload"): ADMIN,
    ("POST", "/app-store/api/v2/apps/open"): A_USER,
    ("POST", "/app-store/api/v2/apps/resume"): A_USER,
    ("POST", "/app-store/api/v2/apps/stop"): A_USER,
    ("GET", "/app-store/api/v2/apps/{id}/payment-status"): A_USER,
    ("GET", "/app-store/api/v2/apps/{id}/package"): A_USER,
    ("PUT", "/app-store/api/v2/apps/{id}/config"): A_USER,
    ("POST", "/app-store/api/v2/apps/{id}/install"): A_USER,
    ("DELETE", "/app-store/api/v2/apps/{id}/install"): A_USER,
    ("POST", "/app-store/api/v2/apps/{id}/clone"): A_USER,
    ("PUT", "/app-store/api/v2/apps/{id}/upgrade"): A_USER,
    ("DELETE", "/app-store/api/v2/apps/{id}"): A_USER,
    ("DELETE", "/app-store/api/v2/local-apps/delete"): ADMIN,
    ("GET", "/app-store/api/v2/settings/system-status"): A_USER,
    ("GET", "/app-store/api/v2/settings/market-source"): A_USER,
    ("POST", "/app-store/api/v2/settings/market-source"): ADMIN,
    ("DELETE", "/app-store/api/v2/settings/market-source/{id}"): ADMIN,
    ("GET", "/app-store/api/v2/settings/market-settings"): A_USER,
    ("PUT", "/app-store/api/v2/settings/market-settings"): A_USER,
    ("GET", "/app-store/api/v2/logs"): A_USER,
    ("GET", "/app-store/api/v2/runtime/state"): A_USER,
    ("GET", "/app-store/api/v2/runtime/dashboard"): A_USER,
    ("GET", "/app-store/api/v2/runtime/dashboard-app"): A_USER,
    ("GET", "/app-store/api/v2/diagnostic"): ADMIN,
    ("POST", "/app-store/api/v2/reload"): ADMIN,
    ("POST", "/app-store/api/v2/cleanup"): ADMIN,
    ("GET", "/app-store/api/v2/sources/{source}/apps/{id}/payment-status"): A_USER,
    ("POST", "/app-store/api/v2/sources/{source}/apps/{id}/purchase"): A_USER,
    ("POST", "/app-store/api/v2/sources/{source}/apps/{id}/restore-purchase"): A_USER,
    ("POST", "/app-store/api/v2/payment/submit-signature"): A_USER,
    ("POST", "/app-store/api/v2/payment/fetch-signature-callback"): A_USER,
    ("POST", "/app-store/api/v2/payment/frontend-start"): A_USER,
    ("POST", "/app-store/api/v2/payment/start-polling"): A_USER,
    ("POST", "/app-store/api/v2/payment/resend-vc"): A_USER,
    ("GET", "/app-store/api/v2/payment/states"): A_USER,
    ("DELETE", "/app-store/api/v2/{rest:path}"): PUBLIC,
    ("GET", "/app-store/api/v2/{rest:path}"): PUBLIC,
    ("OPTIONS", "/app-store/api/v2/{rest:path}"): PUBLIC,
    ("PATCH", "/app-store/api/v2/{rest:path}"): PUBLIC,
    ("POST", "/app-store/api/v2/{rest:path}"): PUBLIC,
    ("PUT", "/app-store/api/v2/{rest:path}"): PUBLIC,
    # enterprise backend (/store, /api/v1/apps/mobile): HTTP Basic or the store's own session
    # cookie only, so a host user token (the system caller) is not a store login
    ("POST", "/store/apis/user/login"): PUBLIC,
    ("GET", "/store/apis/user/logout"): PUBLIC,
    ("POST", "/store/apis/user/register"): STORE_ADMIN,
    ("POST", "/store/apis/user/exists"): PUBLIC,
    ("GET", "/store/apis/v1/assets/{type}"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}/"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}/{name}"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}/{name}/"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}/{name}/{version}"): STORE_ADMIN,
    ("GET", "/store/apis/v1/assets/{type}/{provider}/{name}/{version}/"): STORE_ADMIN,
    ("POST", "/store/resources/webapp/v1/subscription/app"): STORE_USER,
    ("POST", "/store/resources/webapp/v1/unsubscription/app"): STORE_USER,
    ("GET", "/store/resources/webapp/v1/subscriptions/{provider}/{name}"): STORE_ADMIN,
    ("GET", "/store/resources/webapp/v1/subscriptions/{provider}/{name}/"): STORE_ADMIN,
    ("GET", "/store/resources/webapp/v1/subscriptions/{provider}/{name}/{version}"): STORE_ADMIN,
    ("GET", "/store/resources/webapp/v1/subscription/{username}"): STORE_ADMIN,
    ("GET", "/store/apis/tag/{type}"): PUBLIC,
    ("POST", "/store/apps/user/install"): STORE_USER,
    ("POST", "/store/apps/devices/uninstall"): STORE_USER,
    ("POST", "/store/apps/devices/{device_id}/install"): STORE_USER,
    ("POST", "/store/apps/devices/{device_id}/{device_type}/install"): STORE_USER,
    ("GET", "/store/apis/enterprise/get-devices"): STORE_USER,
    ("GET", "/store/apis/enterprise/get-all-roles"): STORE_ADMIN,
    ("GET", "/store/apis/enterprise/get-all-users"): STORE_ADMIN,
    ("POST", "/store/apis/enterprise/perform/{action}/{target}"): STORE_ADMIN,
    ("GET", "/api/v1/apps/mobile/list/tenant/{tenant}"): STORE_ADMIN,
    ("GET", "/api/v1/apps/mobile/subscriptions/tenant/{tenant}/user/{subject}"): STORE_ADMIN,
    ("GET", "/api/v1/apps/mobile/subscriptions/tenant/{tenant}/role/{subject}"): STORE_ADMIN,
    ("POST", "/api/v1/apps/mobile/subscribe/tenant/{tenant}/user/{subject}"): STORE_ADMIN,
    ("POST", "/api/v1/apps/mobile/subscribe/tenant/{tenant}/role/{subject}"): STORE_ADMIN,
    ("POST", "/api/v1/apps/mobile/unsubscribe/tenant/{tenant}/user/{subject}"): STORE_ADMIN,
    ("POST", "/api/v1/apps/mobile/unsubscribe/tenant/{tenant}/role/{subject}"): STORE_ADMIN,
    # device backend in manager mode (/v1): Kapua bearer tokens only, from /v1/authentication/user;
    # refresh is public but refuses a made-up refresh token
    ("POST", "/v1/authentication/user"): PUBLIC,
    ("POST", "/v1/authentication/refresh"): NOBODY,
    ("POST", "/v1/authentication/logout"): NOBODY,
    ("GET", "/v1/authentication/info"): NOBODY,
    ("GET", "/v1/{scopeId}/accounts"): NOBODY,
    ("POST", "/v1/{scopeId}/accounts"): NOBODY,
    ("GET", "/v1/{scopeId}/accounts/{accountId}"): NOBODY,
    ("POST", "/v1/{scopeId}/users"): NOBODY,
    ("GET", "/v1/{scopeId}/devices"): NOBODY,
    ("POST", "/v1/{scopeId}/devices"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/packages"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/packages/_download"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/packages/_uninstall"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/operations"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}/notifications"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/_query"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/_count"): NOBODY,
    ("PUT", "/v1/{scopeId}/devices/{deviceId}"): NOBODY,
    ("DELETE", "/v1/{scopeId}/devices/{deviceId}"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/inventory/packages"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/operations/_query"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/operations/_count"): NOBODY,
    ("DELETE", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}/notifications/_query"): NOBODY,
    ("POST", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}/notifications/_count"): NOBODY,
    ("GET", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}/notifications/{notificationId}"): NOBODY,
    ("DELETE", "/v1/{scopeId}/devices/{deviceId}/operations/{operationId}/notifications/{notificationId}"): NOBODY,
    ("GET", "/v1/device-packages/{offerId}"): NOBODY,  # only a device given the offer's password
    # every other path and method under /v1: Kapua's 401 without a Kapua token, then its 404/405
    **{(method, "/v1/{rest:path}"): NOBODY for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")},
}

# Made-up path parameters (nothing real is touched), except where a real one is needed.
PARAMS: dict[str, str] = {
    "name": "ghost",
    "user": "bob",
    "app": "ghost",
    "path": "index.html",
    "collection": "things",
    "operation": "find",
    "id": "999999",
}
# Per-route overrides of PARAMS and of the default body.
ROUTE_PARAMS: dict[tuple[str, str], dict[str, str]] = {
    **{(m, p): {"name": "echo", "path": "health"} for (m, p) in EXPECTED if p.startswith("/x/")},
}
# The fields handlers validate before their gate (market: ``id``/``appName``), so the gate decides.
DEFAULT_BODY: dict[str, Any] = {"name": "ghost", "id": "ghost", "appName": "ghost"}
# The market's payment routes need the header its real proxy sets (checked before the user).
DEFAULT_HEADERS = {"X-Forwarded-Host": "market.example"}
ROUTE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/users/login"): {"name": "bob", "password": BOB_PASSWORD},
    ("POST", "/store/apis/user/login"): {"username": "bob", "password": BOB_PASSWORD},
    ("POST", "/v1/authentication/user"): {"username": "admin", "password": ADMIN_PASSWORD},
    ("POST", "/store/apis/user/register"): {"username": "carol", "password": "carol-password-1"},
    ("POST", "/api/users/change-password"): {"password": "not-the-password", "newPassword": "new-password-1"},
    ("POST", "/api/checks/has-permission"): {"app": "ghost", "permission": "read", "user": "bob"},
    ("POST", "/api/app-roles"): {"app": "ghost", "role": "guest"},
    ("DELETE", "/api/app-roles"): {"app": "ghost", "role": "guest"},
}
AUTH_CODES = {
    errors.NOT_LOGGED_IN,
    errors.NO_ADMIN_RIGHT,
    errors.NOT_SYSTEM_APP,
    errors.APP_TOKEN_MISSING,
    errors.APP_TOKEN_UNKNOWN,
    errors.NO_START_RIGHT,
    errors.CSRF_FAILED,
}


@dataclass
class Matrix:
    live: LiveServer
    app_token: str
    system_token: str
    routes: list[tuple[str, str]]


def _device_plugin(base: Path, stack: contextlib.ExitStack) -> tuple[list[Any], dict[str, Any]]:
    """The device backend as a Kapua manager (its /v1 routes exist only then), on a real broker."""
    try:
        from bolt_device import DevicePlugin
        from bolt_device.config import DeviceConfig, parse_broker_url

        from tests.fixtures.device.mosquitto import MOSQUITTO, Mosquitto
    except ImportError as exc:  # the backend is not installed
        print(f"auth matrix: device backend not loaded ({exc})")
        return [], {}
    if MOSQUITTO is None:
        if os.environ.get(REQUIRE_ALL_TOOLS_ENV) == "1":
            pytest.fail("mosquitto is not installed: the device manager's /v1 routes would go unchecked")
        print("auth matrix: mosquitto is not installed; the device manager's /v1 routes are not covered")
        return [], {}
    broker = stack.enter_context(Mosquitto(base / "broker", {"bolt-manager": "broker-password"}))
    config = DeviceConfig(
        mode="manager",
        broker=parse_broker_url(broker.url, "bolt-manager", "broker-password"),
        client_id="bolt-manager",
        manager_id="bolt-manager",
    )
    return [DevicePlugin(config)], {"disable_plugins": ("device",)}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    base = tmp_path_factory.mktemp("matrix")
    repo = base / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    with contextlib.ExitStack() as stack:
        plugins, overrides = _device_plugin(base, stack)
        live = stack.enter_context(live_host(base / "data", local_repo=repo, plugins=plugins, **overrides))
        with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
            user = {"name": "bob", "password": BOB_PASSWORD, "roles": ["guest"]}
            assert admin.post("/api/users", json=user).status_code == 201
            assert admin.post("/api/apps/local", json={"path": "echo"}).status_code == 201
            assert admin.post("/api/apps/local", json={"path": "app-admin", "system": True}).status_code == 201
        host = live.host
        routes = [(method, path) for path, method, _ in iter_endpoints(live.app.routes)]
        # Tokens as the supervisor would hand them to the running apps (no process needed).
        yield Matrix(live, host.tokens.issue("echo"), host.tokens.issue("app-admin"), routes)


def _user_token(live: LiveServer, name: str) -> str:
    """A fresh user token for each call, so a logout under test never ends the next call's session."""
    sessions = live.host.sessions
    return sessions.issue_token(sessions.create(name))


def _basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def _headers(matrix: Matrix, caller: str) -> dict[str, str]:
    if caller == "user":
        return {"Authorization": _basic("bob", BOB_PASSWORD)}
    if caller == "admin":
        return {"Authorization": _basic("admin", ADMIN_PASSWORD)}
    if caller == "app":
        return {"X-Bolt-App-Token": matrix.app_token}
    if caller == "system":
        return {"X-Bolt-App-Token": matrix.system_token, "X-Bolt-User-Token": _user_token(matrix.live, "admin")}
    return {}


def _url(method: str, path: str) -> str:
    values = {**PARAMS, **ROUTE_PARAMS.get((method, path), {})}

    def fill(part: str) -> str:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1].split(":")[0]
            return values.get(name, "x")
        return part

    return "/".join(fill(part) for part in path.split("/"))


def _outcome(response: httpx.Response, body: bytes) -> str:
    """'-' refused, '+' allowed (see the module docstring)."""
    if response.status_code not in (401, 403):
        return "+"
    if response.headers.get("content-type", "").startswith("application/json"):
        with contextlib.suppress(ValueError):
            import json

            data = json.loads(body)
            if isinstance(data, dict) and "errorTraceId" in data and isinstance(data.get("code"), int):
                return "-" if data["code"] in AUTH_CODES else "+"
    return "-"


def _call(client: httpx.Client, matrix: Matrix, method: str, path: str, caller: str) -> tuple[str, str]:
    matrix.live.host.login_throttle = LoginThrottle()  # wrong-password rows never lock the admin out
    client.cookies.clear()  # a login row's session cookie must not make the next caller someone
    body = ROUTE_BODIES.get((method, path), DEFAULT_BODY)
    kwargs: dict[str, Any] = {"headers": {**DEFAULT_HEADERS, **_headers(matrix, caller)}}
    if method in {"POST", "PUT", "PATCH", "DELETE"}:
        kwargs["json"] = body
    with client.stream(method, _url(method, path), **kwargs) as response:
        # A stream that opened is allowed; never read it to the end.
        streaming = "text/event-stream" in response.headers.get("content-type", "")
        content = b"" if streaming else response.read()
    return _outcome(response, content), f"{response.status_code} {content[:160]!r}"


def test_every_route_has_a_row(matrix: Matrix) -> None:
    missing = [f"{method} {path}" for method, path in matrix.routes if (method, path) not in EXPECTED]
    assert not missing, "routes without a row in tests/test_auth_matrix.py EXPECTED:\n  " + "\n  ".join(missing)


@pytest.mark.timeout(300)
def test_each_caller_is_allowed_or_refused_as_the_table_says(matrix: Matrix) -> None:
    wrong: list[str] = []
    observed: dict[tuple[str, str], str] = {}
    with httpx.Client(base_url=matrix.live.url, timeout=30) as client:
        for method, path in matrix.routes:
            expected = EXPECTED.get((method, path))
            row = ""
            for index, caller in enumerate(CALLERS):
                outcome, detail = _call(client, matrix, method, path, caller)
                row += outcome
                if expected is not None and outcome != expected[index]:
                    verb = "allowed" if outcome == "+" else "refused"
                    wrong.append(f"{method} {path} as {caller}: {verb}, expected otherwise ({detail})")
            observed[(method, path)] = row
    if os.environ.get("BOLT_AUTH_MATRIX_DUMP"):
        for (method, path), row in observed.items():
            print(f'    ("{method}", "{path}"): "{row}",')
    assert not wrong, f"{len(wrong)} wrong answers:\n  " + "\n  ".join(wrong)
    assert set(EXPECTED) >= set(observed), "every route was checked against a row"


def test_the_last_admin_cannot_be_demoted(matrix: Matrix) -> None:
    """Taking the admin role from the only admin would lock every admin out, as deleting it would."""
    with httpx.Client(base_url=matrix.live.url, auth=matrix.live.admin_auth, timeout=30) as admin:
        refused = admin.put("/api/users/admin/roles", json={"roles": ["guest"]})
        assert refused.status_code == 400 and "last admin" in refused.json()["error"]["message"]
        assert admin.get("/api/users/@current").json()["body"]["isAdmin"] is True
