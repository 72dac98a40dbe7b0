"""``/v1/authentication/*``, ``/v1/{scopeId}/accounts`` and ``/v1/{scopeId}/users``.

Passwords are the host's own users' passwords (checked with the host's login
throttle); each user belongs to one account (scope).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bolt_host.plugin import BoltError, check_login, errors

from .accounts import public_account
from .kapua import (
    KapuaError,
    illegal_argument,
    iso,
    kapua_json,
    list_result,
    not_found,
    unauthenticated,
    unauthorized,
    user_id,
)
from .web import backend_of, caller, json_body, kapua_endpoint, page, require_admin, scope_for, writer_in_scope


@kapua_endpoint
async def login(request: Request) -> Response:
    backend = backend_of(request)
    body = await json_body(request, "authenticationCredentials")
    name = body.get("username", body.get("user"))
    try:
        user = check_login(request, backend.host, name, body.get("password"))
    except BoltError as exc:
        if exc.code == errors.RATE_LIMITED:
            raise KapuaError(429, "TOO_MANY_REQUESTS", exc.message) from exc
        raise unauthenticated("Invalid username or password") from exc
    scope = backend.accounts.scope_of_user(user)
    if scope is None:
        raise unauthenticated(f"User {user['name']} belongs to no device account")
    return kapua_json(backend.tokens.issue(user["name"], scope))


@kapua_endpoint
async def refresh(request: Request) -> Response:
    backend = backend_of(request)
    body = await json_body(request, "refreshTokenCredentials")
    return kapua_json(backend.tokens.refresh(body.get("tokenId"), body.get("refreshToken")))


@kapua_endpoint
async def logout(request: Request) -> Response:
    who = caller(request)
    backend_of(request).tokens.invalidate(who.token_id)
    return Response(status_code=204)


@kapua_endpoint
async def login_info(request: Request) -> Response:
    who = caller(request)
    token = request.headers["authorization"].split(" ", 1)[1].strip()
    row = backend_of(request).tokens.verify(token)
    access = {
        "type": "accessToken",
        "id": row["id"],
        "scopeId": row["scopeId"],
        "userId": user_id(row["user"]),
        "tokenId": token,
        "createdOn": row["createdOn"],
        "expiresOn": iso(row["expires"]),
        "refreshExpiresOn": iso(row["refreshExpires"]),
    }
    return kapua_json({"type": "loginInfo", "accessToken": access, "accessPermission": [], "rolePermission": [],
                       "user": who.user, "isAdmin": who.is_admin})


# accounts ---------------------------------------------------------------------
@kapua_endpoint
async def list_accounts(request: Request) -> Response:
    who = caller(request)
    scope = scope_for(who, request.path_params["scopeId"], "account", "read")
    items, more = page(request, [public_account(a) for a in backend_of(request).accounts.children(scope)])
    return kapua_json(list_result("accountListResult", items, limit_exceeded=more))


@kapua_endpoint
async def create_account(request: Request) -> Response:
    _, scope = writer_in_scope(request, "account")
    body = await json_body(request, "accountCreator")
    organization = {
        key[len("organization"):][:1].lower() + key[len("organization") + 1 :]: value
        for key, value in body.items()
        if key.startswith("organization") and isinstance(value, str)
    }
    organization.setdefault("name", str(body.get("name") or ""))
    account = backend_of(request).accounts.create(scope, body.get("name"), organization)
    return kapua_json(public_account(account), 201)


@kapua_endpoint
async def get_account(request: Request) -> Response:
    who = caller(request)
    scope = scope_for(who, request.path_params["scopeId"], "account", "read")
    accounts = backend_of(request).accounts
    account = accounts.get(request.path_params["accountId"])
    if account is None or (account["id"] != scope and account["scopeId"] != scope):
        raise not_found("account", request.path_params["accountId"])
    return kapua_json(public_account(account))


# users ------------------------------------------------------------------------
@kapua_endpoint
async def create_user(request: Request) -> Response:
    """Create a host user that belongs to account ``scopeId`` (the caller's or a child of it)."""
    who = caller(request)
    backend = backend_of(request)
    target = who.scope if request.path_params["scopeId"] == "_" else request.path_params["scopeId"]
    account = backend.accounts.get(target)
    if account is None or (account["id"] != who.scope and account["scopeId"] != who.scope):
        raise unauthorized("user", "write", request.path_params["scopeId"])
    require_admin(who, "user", "write", target)
    body = await json_body(request, "userCreator")
    password = body.get("password")
    try:
        user = backend.host.users.create(body.get("name"), password, display_name=body.get("displayName"),
                                         email=body.get("email"))
    except BoltError as exc:
        raise illegal_argument("userCreator", body.get("name"), exc.message) from exc
    backend.accounts.add_member(target, user["name"])
    return kapua_json(_public_user(user, target), 201)


def _public_user(user: dict[str, Any], scope: str) -> dict[str, Any]:
    return {
        "type": "user",
        "id": user_id(user["name"]),
        "scopeId": scope,
        "name": user["name"],
        "displayName": user.get("displayName") or user["name"],
        "status": "DISABLED" if user.get("isBlocked") else "ENABLED",
        "userType": "INTERNAL",
        "createdOn": user.get("dateCreated") or iso(),
    }


def routes() -> list[Route]:
    return [
        Route("/v1/authentication/user", login, methods=["POST"]),
        Route("/v1/authentication/refresh", refresh, methods=["POST"]),
        Route("/v1/authentication/logout", logout, methods=["POST"]),
        Route("/v1/authentication/info", login_info, methods=["GET"]),
        Route("/v1/{scopeId}/accounts", list_accounts, methods=["GET"]),
        Route("/v1/{scopeId}/accounts", create_account, methods=["POST"]),
        Route("/v1/{scopeId}/accounts/{accountId}", get_account, methods=["GET"]),
        Route("/v1/{scopeId}/users", create_user, methods=["POST"]),
    ]
