"""Shared pieces of the manager's REST handlers: errors, the caller, scopes, bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import jsondepth

from . import queries
from .backend import STATE_KEY, DeviceBackend
from .kapua import KAPUA, KapuaError, illegal_argument, method_not_allowed, unauthenticated, unauthorized
from .tokens import bearer_token

log = logging.getLogger("bolt_device.web")
Handler = Callable[[Request], Awaitable[Response]]
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 10 * 60_000


def kapua_endpoint(handler: Handler) -> Handler:
    """Answer KapuaErrors (and core errors) in Kapua's error body."""
    return KAPUA.endpoint(handler)


def backend_of(request: Request) -> DeviceBackend:
    backend = request.app.state.host.state.get(STATE_KEY)
    if backend is None or backend.manager is None:
        raise KapuaError(503, "SERVICE_UNAVAILABLE", "This host is not a device manager (BOLT_DEVICE_MODE=manager)")
    return backend


@dataclass(frozen=True)
class Caller:
    user: str
    scope: str
    token_id: str
    is_admin: bool


def caller(request: Request) -> Caller:
    """The token's user (401 without one); every handler asks this first."""
    backend = backend_of(request)
    row = backend.tokens.verify(bearer_token(request.headers.get("authorization")))
    user = backend.host.users.get(row["user"])
    if user is None or user.get("isBlocked"):
        raise unauthenticated("The user of this access token no longer exists or is blocked")
    _refuse_query_words(request)
    return Caller(row["user"], row["scopeId"], row["id"], backend.host.users.is_admin(user))


# ``.../devices/_count`` also matches ``.../devices/{deviceId}``: Kapua routes the literal
# path first, so another method than POST there is a 405, not "no device _count".
QUERY_WORDS = ("_query", "_count")


def _refuse_query_words(request: Request) -> None:
    last = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    if last in QUERY_WORDS and last in request.path_params.values():
        raise method_not_allowed(request.method, request.url.path, ["POST"])


def require_admin(who: Caller, domain: str, action: str, scope: str) -> None:
    """Changes (devices, downloads, uninstalls, accounts, users) are for host admins; others only read."""
    if not who.is_admin:
        raise unauthorized(domain, action, scope)


def writer_in_scope(request: Request, domain: str) -> tuple[Caller, str]:
    """The caller and the scope the path names, for a change in ``domain``: only admins write."""
    who = caller(request)
    scope = scope_for(who, request.path_params["scopeId"], domain, "write")
    require_admin(who, domain, "write", scope)
    return who, scope


def scope_for(who: Caller, raw: str, domain: str, action: str) -> str:
    """The scope a path names (``_`` is the caller's own); another scope is a 403."""
    scope = who.scope if raw == "_" else raw
    if scope != who.scope:
        raise unauthorized(domain, action, raw)
    return scope


async def json_body(request: Request, name: str) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        from .kapua import illegal_null

        raise illegal_null(name)
    try:
        body = jsondepth.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise illegal_argument(name, raw[:100].decode(errors="replace"), "The body is not JSON.") from exc
    if not isinstance(body, dict):
        raise illegal_argument(name, str(body)[:100], "The body must be a JSON object.")
    return body


def int_param(request: Request, name: str, default: int, low: int = 0, high: int | None = None) -> int:
    """A whole-number query parameter; absent is ``default``, empty is refused (as Kapua refuses it)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise illegal_argument(name, raw, "Expected a whole number.") from exc
    if value < low or (high is not None and value > high):
        raise illegal_argument(name, raw, f"Expected a number from {low}" + (f" to {high}." if high else "."))
    return value


def timeout_ms(request: Request) -> int:
    """``timeout`` in ms; 0 is allowed (the device cannot answer in time: Kapua's timeout error at once)."""
    return int_param(request, "timeout", DEFAULT_TIMEOUT_MS, low=0, high=MAX_TIMEOUT_MS)


def page(request: Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    query = queries.from_params(request.query_params, ())
    return items[query.offset : query.offset + query.limit], query.offset + query.limit < len(items)
