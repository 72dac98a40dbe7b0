"""Who calls the store, and whether a write may go ahead.

Callers prove who they are with HTTP Basic (every route) or with the store's
session cookie ``JSESSIONID`` (the ``/store`` routes; the cookie is scoped to
``Path=/store``, HttpOnly, SameSite=Strict).  A presented credential that is
wrong fails the request; it never falls back to anonymous.

Writes (any method but GET/HEAD/OPTIONS), authenticated or not, pass the host's
cross-origin check (Go's ``CrossOriginProtection`` model): a browser page of this
origin (``Sec-Fetch-Site: same-origin``/``none``, or a matching ``Origin``), a
client that is not a browser (curl, the seed's examples, scripts send neither
header), or, with the session cookie, the session's CSRF token in
``X-CSRF-Token`` (returned by login).  Anything else is refused with 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from bolt_host.plugin import (
    SAFE_METHODS,
    Actor,
    BoltError,
    admin_allowed,
    check_login,
    cross_origin_write_allowed,
    host_of,
)
from bolt_host.plugin import basic_credentials as core_basic_credentials

from .replies import EnterpriseError

if TYPE_CHECKING:
    from bolt_host.plugin import Host

STORE_COOKIE = "JSESSIONID"
STORE_COOKIE_PATH = "/store"
_CALLER_KEY = "enterprise_caller"


def basic_credentials(header: str) -> tuple[str, str]:
    """The core's Basic parser, answering in the store's error format."""
    try:
        return core_basic_credentials(header)
    except BoltError as exc:
        raise EnterpriseError(401, exc.message) from exc


def caller(request: Request, *, allow_session: bool = True) -> Actor | None:
    """The authenticated caller, None when anonymous; raises on wrong credentials or a refused write."""
    if _CALLER_KEY in request.scope:
        return request.scope[_CALLER_KEY]
    host = host_of(request)
    who = _resolve(request, host, allow_session)
    if request.method not in SAFE_METHODS:
        check_write(request, who)
    request.scope[_CALLER_KEY] = who
    return who


def _resolve(request: Request, host: Host, allow_session: bool) -> Actor | None:
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(STORE_COOKIE) if allow_session else None
    if header.lower().startswith("basic "):
        name, password = basic_credentials(header)
        who = Actor(user=check_login(request, host, name, password), via="basic")
    elif cookie:
        session = host.sessions.get(cookie)
        user = host.users.get(session.user) if session else None
        if session is None or user is None or user.get("isBlocked"):
            raise EnterpriseError(401, "The store session has ended; log in again")
        who = Actor(user=user, via="session", session_id=session.id, extra={"csrf": session.csrf})
    else:
        return None
    who.is_admin = host.users.is_admin(who.user)
    return who


def check_write(request: Request, who: Actor | None) -> None:
    """Refuse a write the host's cross-origin check refuses (a page of another origin, a wrong token)."""
    csrf = who.extra["csrf"] if who is not None and who.via == "session" else None
    if not cross_origin_write_allowed(request, csrf):
        raise EnterpriseError(
            403, "Cross-origin writes to the store are refused (a page of this origin, or the X-CSRF-Token from login)"
        )


def require_login(request: Request) -> Actor:
    who = caller(request)
    if who is None:
        raise EnterpriseError(401, "Log in to the store first (or use HTTP Basic)")
    return who


async def require_admin(
    request: Request, action: str, resource: str | None = None, *, basic_only: bool = False
) -> Actor:
    """An authenticated admin; a ``permission_allowed`` plugin may decide instead of the admin role.

    Fails closed: the handler goes no further when this raises.
    """
    who = caller(request, allow_session=not basic_only)
    if who is None:
        how = "HTTP Basic credentials of an admin" if basic_only else "Log in as an admin (or use HTTP Basic)"
        raise EnterpriseError(401, f"{how} required")
    if not await admin_allowed(host_of(request), who.as_dict(), who.is_admin, action, resource):
        raise EnterpriseError(403, "Only an admin may do this")
    return who

