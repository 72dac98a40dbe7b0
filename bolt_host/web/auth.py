"""Who is calling: the request's user and app, and the checks handlers make.

A request's user comes from the session cookie, HTTP Basic or
``X-Bolt-User-Token``; its app from ``X-Bolt-App-Token``.  A credential that
is presented but wrong fails the request at once (401); it never falls back
to anonymous.  Cookie-authenticated writes must pass the cross-origin check of
:mod:`bolt_host.web.origin` (a page of this origin, a client that is no browser, or
the session's CSRF token in ``X-CSRF-Token``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.sessions import CLIENT_MAX_FAILURES
from bolt_host.web.origin import write_allowed

if TYPE_CHECKING:
    from bolt_host.host import Host

SESSION_COOKIE = "bolt_session"
CSRF_COOKIE = "bolt_csrf"
APP_TOKEN_HEADER = "x-bolt-app-token"
USER_TOKEN_HEADER = "x-bolt-user-token"
MAX_NAME_IN_KEY = 64  # longer names are no user's; they share a throttle key


@dataclass
class Actor:
    """The caller of one request."""

    user: dict[str, Any] | None = None
    is_admin: bool = False
    app: str | None = None
    app_system: bool = False
    via: str | None = None  # "session", "basic", "token"
    session_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user_name(self) -> str | None:
        return self.user["name"] if self.user else None

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user_name, "isAdmin": self.is_admin, "app": self.app, "system": self.app_system}


def host_of(request: Request) -> Host:
    return cast("Host", request.app.state.host)


def client_key(request: Request) -> str:
    return f"client:{request.client.host if request.client else 'unknown'}"


def actor(request: Request) -> Actor:
    """Resolve (once per request) and return the caller; raises on bad credentials
    and on a cookie-authenticated write refused by the cross-origin check."""
    cached = request.scope.get("bolt_actor")
    if cached is not None:
        return cast(Actor, cached)
    host = host_of(request)
    found = Actor()
    _resolve_user(request, host, found)
    _resolve_app(request, host, found)
    request.scope["bolt_actor"] = found
    return found


def _resolve_user(request: Request, host: Host, found: Actor) -> None:
    header = request.headers.get("authorization", "")
    user_token = request.headers.get(USER_TOKEN_HEADER)
    if header.lower().startswith("basic "):
        name, password = basic_credentials(header)
        found.user = check_login(request, host, name, password)
        found.via = "basic"
    elif user_token:
        known = host.token_users.user_for(user_token)
        if known is None:
            raise BoltError(errors.NOT_LOGGED_IN, "The user token is invalid or has expired")
        (found.user, found.is_admin), found.via = known, "token"
        return  # its admin right came with it
    elif request.cookies.get(SESSION_COOKIE):
        session = host.sessions.get(request.cookies[SESSION_COOKIE])
        user = host.users.get(session.user) if session else None
        if session is None or user is None or user.get("isBlocked"):
            raise BoltError(errors.NOT_LOGGED_IN, "The session has ended; log in again")
        require_same_origin_write(request, host, session.csrf)
        found.user, found.via, found.session_id = user, "session", session.id
    if found.user is not None:
        found.is_admin = host.users.is_admin(found.user)


def trusted_origins(host: Host) -> tuple[str, ...]:
    """Origins that pass the cross-origin check besides the request's own Host: the host's URL."""
    return (host.settings.url,)


def cross_origin_write_allowed(request: Request, session_csrf: str | None = None) -> bool:
    """The host's cross-origin check for ``request`` (see :mod:`bolt_host.web.origin`)."""
    return write_allowed(request, session_csrf, trusted_origins(host_of(request)))


def require_same_origin_write(request: Request, host: Host, session_csrf: str | None) -> None:
    """Refuse a cookie-authenticated write that a browser says comes from another origin.

    Apps' own pages (through the app proxy) and the dashboard send their writes with
    ``fetch``; the browser marks those ``Sec-Fetch-Site: same-origin`` (older browsers:
    an ``Origin`` equal to ours), which a page on another site, or on another port of
    this host, cannot forge.  Clients that are no browser send neither header and pass.
    """
    if write_allowed(request, session_csrf, trusted_origins(host)):
        return
    raise BoltError(
        errors.CSRF_FAILED,
        "Cross-origin write refused: send it from a page of this origin, or with the X-CSRF-Token header from login",
        user_title="Request refused",
    )


def basic_credentials(header: str) -> tuple[str, str]:
    """Name and password from an ``Authorization: Basic`` header; a clear error if malformed."""
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, IndexError) as exc:
        raise BoltError(errors.CREDENTIALS_MISSING, "Malformed HTTP Basic credentials") from exc
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        raise BoltError(errors.CREDENTIALS_MISSING, "Malformed HTTP Basic credentials")
    return name, password


def check_login(request: Request, host: Host, name: Any, password: Any) -> dict[str, Any]:
    """Verify a name and password with throttling; one message for every failure."""
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise BoltError(errors.CREDENTIALS_MISSING)
    client = client_key(request)
    pair = f"{client}|user:{name[:MAX_NAME_IN_KEY].casefold()}"  # a guesser locks out itself, not the name everywhere
    throttle = host.login_throttle
    wait = throttle.retry_after(pair, client)
    if wait > 0:
        raise BoltError(
            errors.RATE_LIMITED,
            f"Too many failed logins; try again in {int(wait) + 1} s",
            details={"retryAfter": int(wait) + 1},
        )
    user = host.users.check_password(name, password)
    if user is None:
        throttle.failed(pair)
        throttle.failed(client, limit=CLIENT_MAX_FAILURES)
        raise BoltError(errors.LOGIN_FAILED, "Invalid user name or password")
    throttle.succeeded(pair)
    return user


def _resolve_app(request: Request, host: Host, found: Actor) -> None:
    token = request.headers.get(APP_TOKEN_HEADER)
    if token is None:
        return
    name = host.tokens.app_for(token)
    if name is None:
        raise BoltError(errors.APP_TOKEN_UNKNOWN)
    found.app = name
    found.app_system = app_is_system(host, name)


def app_is_system(host: Host, name: str) -> bool:
    apps = getattr(host, "apps", None)
    record = apps.get(name) if apps is not None else None
    return bool(record and record.get("system"))


# checks a handler makes ---------------------------------------------------------
async def _decided_by_plugins(request: Request, action: str, resource: str | None) -> bool | None:
    host = host_of(request)
    if not host.hooks.implemented("permission_allowed"):  # every read asks: skip the caller's dict and the call
        return None
    return await ask_permission(host, actor(request).as_dict(), action, resource)


async def ask_permission(host: Host, caller: dict[str, Any], action: str, resource: str | None = None) -> bool | None:
    """The plugins' ``permission_allowed`` answer for ``caller``: True, False, or None when all abstain."""
    answer = await host.hooks.call("permission_allowed", actor=caller, action=action, resource=resource)
    return answer if isinstance(answer, bool) else None


async def admin_allowed(
    host: Host, caller: dict[str, Any], is_admin: bool, action: str, resource: str | None = None
) -> bool:
    """Whether ``caller`` may do an admin's ``action``: a plugin's ``permission_allowed`` answer
    decides, else the admin role does."""
    decided = await ask_permission(host, caller, action, resource)
    return is_admin if decided is None else decided


def require_caller(request: Request) -> Actor:
    """Anyone who sent valid credentials; the first check of a handler that must read its
    body (to name the resource) before it can ask :func:`require_installer`."""
    who = actor(request)
    if who.user is None and who.app is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in, or send a user or app token")
    return who


async def require_user(request: Request, action: str = "read", resource: str | None = None) -> Actor:
    """Any authenticated caller: a user, or an app with a valid token."""
    who = actor(request)
    if who.user is None and who.app is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in, or send a user or app token")
    if await _decided_by_plugins(request, action, resource) is False:
        raise BoltError(errors.NO_ADMIN_RIGHT, f"Not allowed to {action}")
    return who


def refuse_non_system_app(request: Request) -> None:
    """Bolt's first installer check, made before any user credential is looked at: an app
    token must be known (113) and belong to a system app (504)."""
    token = request.headers.get(APP_TOKEN_HEADER)
    if token is None:
        return
    host = host_of(request)
    name = host.tokens.app_for(token)
    if name is None:
        raise BoltError(errors.APP_TOKEN_UNKNOWN)
    if not app_is_system(host, name):
        raise BoltError(errors.NOT_SYSTEM_APP)


async def require_admin(request: Request, action: str = "admin", resource: str | None = None) -> Actor:
    """An admin user; an app token present must belong to a system app, which is checked first."""
    refuse_non_system_app(request)
    who = actor(request)
    decided = await _decided_by_plugins(request, action, resource)
    if decided is True:
        return who
    if who.user is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in as an admin")
    if decided is False or not who.is_admin:
        raise BoltError(errors.NO_ADMIN_RIGHT)
    return who


async def require_installer(request: Request, action: str = "install", resource: str | None = None) -> Actor:
    """Install/delete/update apps: an admin user, with no app token or a system app's."""
    return await require_admin(request, action, resource)


async def require_operator(request: Request, action: str = "operate", resource: str | None = None) -> Actor:
    """Start/stop apps: an admin user, or a system app's token."""
    who = actor(request)
    decided = await _decided_by_plugins(request, action, resource)
    if decided is True:
        return who
    if decided is not False and who.app is not None and who.app_system:
        return who
    if who.app is not None and not who.app_system:
        raise BoltError(errors.NOT_SYSTEM_APP)
    if who.user is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in as an admin or use a system app's token")
    if decided is False or not who.is_admin:
        raise BoltError(errors.NO_ADMIN_RIGHT)
    return who


def require_app(request: Request) -> Actor:
    """A request made by an app with its X-Bolt-App-Token (per-app db, events)."""
    who = actor(request)
    if request.headers.get(APP_TOKEN_HEADER) is None:
        raise BoltError(errors.APP_TOKEN_MISSING)
    return who


def require_system_app(request: Request) -> Actor:
    """A request made by a system app with its X-Bolt-App-Token (110 without one, 504 for another app)."""
    who = require_app(request)
    if not who.app_system:
        raise BoltError(errors.NOT_SYSTEM_APP)
    return who
