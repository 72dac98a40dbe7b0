"""Who is calling the Market: always one of the host's users.

Accepted: the host's own credentials (session cookie with CSRF for writes, HTTP
Basic, ``X-Bolt-User-Token``), and ``X-Authorization`` carrying a host user
token (what the Olares SPA and ``olares-cli`` send).  ``X-Bfl-User`` names the
user only when the host runs with ``trust_proxy`` (env ``BOLT_TRUST_PROXY``),
i.e. behind a proxy that sets it and strips it from clients; otherwise a request
carrying it is refused, so a spoofed header never silently passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from bolt_host.plugin import BoltError, Host, actor, admin_allowed, ask_permission, host_of, refuse_non_system_app

from .envelope import MarketError

USER_HEADER = "x-bfl-user"
TOKEN_HEADER = "x-authorization"
NO_USER = "Failed to get user information"


@dataclass(frozen=True)
class MarketUser:
    name: str
    is_admin: bool
    via: str
    record: dict[str, Any]

    def as_actor(self) -> dict[str, Any]:
        return {"user": self.name, "isAdmin": self.is_admin, "app": None, "system": False}


def _from_record(host: Host, user: dict[str, Any] | None, via: str) -> MarketUser:
    if user is None or user.get("isBlocked"):
        raise MarketError(401, NO_USER)
    return MarketUser(user["name"], host.users.is_admin(user), via, user)


def resolve_user(request: Request) -> MarketUser:
    """The request's user, resolved once; 401 in the Market envelope otherwise."""
    cached = request.scope.get("market_user")
    if cached is not None:
        return cached
    host = host_of(request)
    proxied = request.headers.get(USER_HEADER)
    token = request.headers.get(TOKEN_HEADER)
    if proxied is not None:
        if not host.settings.trust_proxy:
            raise MarketError(
                401,
                "X-Bfl-User is not trusted by this host; authenticate with a user token "
                "(or run behind a proxy with BOLT_TRUST_PROXY=1)",
            )
        found = _from_record(host, host.users.get(proxied.strip()), "proxy")
    elif token is not None:
        name = host.sessions.user_for_token(token.removeprefix("Bearer ").strip())
        found = _from_record(host, host.users.get(name) if name else None, "token")
    else:
        who = actor(request)  # raises on presented-but-wrong credentials
        if who.user is None:
            raise MarketError(401, NO_USER)
        found = _from_record(host, who.user, who.via or "session")
    request.scope["market_user"] = found
    return found


async def require_market_user(request: Request, action: str, resource: str | None = None) -> MarketUser:
    """A user allowed to ``action`` (plugins may refuse through ``permission_allowed``)."""
    user = resolve_user(request)
    if await ask_permission(host_of(request), user.as_actor(), action, resource) is False:
        raise MarketError(403, f"Not allowed to {action}")
    return user


async def require_market_admin(request: Request, action: str, resource: str | None = None) -> MarketUser:
    """An admin; as for the host's installers, an app token sent along must be a system app's
    (checked first: another app's token with an admin's credentials is refused, Bolt's 504)."""
    try:
        refuse_non_system_app(request)
    except BoltError as exc:
        raise MarketError(exc.http_status, exc.message, {"code": exc.code}) from None
    user = resolve_user(request)
    if not await admin_allowed(host_of(request), user.as_actor(), user.is_admin, action, resource):
        raise MarketError(403, "This operation needs an admin")
    return user
