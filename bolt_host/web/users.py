"""Bolt's users and roles API: ``/api/users`` and ``/api/roles``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.users import public_user
from bolt_host.web.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    actor,
    check_login,
    host_of,
    require_admin,
    require_user,
)
from bolt_host.web.envelope import flag, ok, read_body, require_str


async def list_users(request: Request) -> Response:
    """List users, filtered by query criteria (``?roles=admin``)."""
    await require_user(request, "users.read")
    return ok(host_of(request).users.list(dict(request.query_params)))


async def current_user(request: Request) -> Response:
    """The logged-in user."""
    who = actor(request)
    if who.user is None:
        raise BoltError(errors.NOT_LOGGED_IN)
    return ok({**public_user(who.user), "isAdmin": who.is_admin})


async def get_user(request: Request) -> Response:
    """One user by name."""
    await require_user(request, "users.read")
    user = host_of(request).users.get(request.path_params["name"])
    if user is None:
        raise BoltError(errors.USER_NOT_FOUND)
    return ok(public_user(user))


async def create_user(request: Request) -> Response:
    """Create a user (admin): ``{name, password, roles?, displayName?, email?}``."""
    await require_admin(request, "users.create")
    body = await read_body(request)
    host = host_of(request)
    user = host.users.create(
        body.get("name"), body.get("password"), body.get("roles"), body.get("displayName"), body.get("email")
    )
    await host.publish("user-created", user)
    return ok(user, status=201)


async def login(request: Request) -> Response:
    """Log in with ``{name, password}``: sets the session cookie, returns the user and a user token."""
    body = await read_body(request)
    host = host_of(request)
    user = check_login(request, host, body.get("name"), body.get("password"))
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        host.sessions.end(old)  # a new session id at every login
    session = host.sessions.create(user["name"])
    host.users.record_visit(user["name"])
    token = host.sessions.issue_token(session)
    response = ok(
        {
            "user": {**public_user(user), "isAdmin": host.users.is_admin(user)},
            "token": token,
            "csrfToken": session.csrf,
            "expires": int(session.expires),
        }
    )
    max_age = int(session.expires - __import__("time").time())
    secure = host.settings.url.startswith("https://")
    response.set_cookie(SESSION_COOKIE, session.id, max_age=max_age, httponly=True, samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, samesite="strict", secure=secure)
    await host.publish("user-logged-in", {"name": user["name"]})
    return response


async def logout(request: Request) -> Response:
    """End the session (cookie, and every user token issued with it)."""
    host = host_of(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    who = None
    try:
        who = actor(request)
    except BoltError as exc:
        if exc.code != errors.NOT_LOGGED_IN:
            raise  # a forged logout (no CSRF token: a page on another port of this machine) ends nothing
        who = None  # an ended or unknown session: clearing the cookies is all there is to do
    if session_id:
        host.sessions.end(session_id)
    token = request.headers.get("x-bolt-user-token")
    if who is not None and who.via == "token" and token:
        host.sessions.end_for_token(token)
    response = ok({"loggedOut": True})
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


async def change_password(request: Request) -> Response:
    """Change one's own password: ``{password, newPassword}``; ends the other sessions."""
    who = actor(request)
    if who.user is None:
        raise BoltError(errors.NOT_LOGGED_IN)
    body = await read_body(request)
    host = host_of(request)
    check_login(request, host, who.user["name"], body.get("password"))
    host.users.set_password(who.user["name"], body.get("newPassword"))
    host.sessions.end_all_for(who.user["name"])
    return ok({"changed": True})


async def set_user_roles(request: Request) -> Response:
    """Replace a user's roles (admin): ``{roles: [...]}``."""
    await require_admin(request, "users.update")
    body = await read_body(request)
    host = host_of(request)
    user = host.users.set_roles(request.path_params["name"], body.get("roles"))
    await host.publish("user-updated", user)
    return ok(user)


async def delete_user(request: Request) -> Response:
    """Delete a user (admin)."""
    await require_admin(request, "users.delete")
    host = host_of(request)
    name = request.path_params["name"]
    user = host.users.delete(name)
    host.sessions.end_all_for(user["name"])  # as stored: the path may name the user in another case
    await host.publish("user-deleted", user)
    return ok(user)


async def list_roles(request: Request) -> Response:
    """List roles."""
    await require_user(request, "roles.read")
    return ok(host_of(request).users.roles())


async def create_role(request: Request) -> Response:
    """Create a role (admin): ``{name, isAdmin?, description?}``."""
    await require_admin(request, "roles.create")
    body = await read_body(request)
    role = host_of(request).users.create_role(
        require_str(body, "name", errors.ROLE_NAME_MISSING), flag(body, "isAdmin"), body.get("description", "")
    )
    return ok(role, status=201)


routes = [
    Route("/api/users", list_users, methods=["GET"]),
    Route("/api/users", create_user, methods=["POST"]),
    Route("/api/users/@current", current_user, methods=["GET"]),
    Route("/api/users/login", login, methods=["POST"]),
    Route("/api/users/logout", logout, methods=["POST"]),
    Route("/api/users/change-password", change_password, methods=["POST"]),
    Route("/api/users/{name}", get_user, methods=["GET"]),
    Route("/api/users/{name}", delete_user, methods=["DELETE"]),
    Route("/api/users/{name}/roles", set_user_roles, methods=["PUT"]),
    Route("/api/roles", list_roles, methods=["GET"]),
    Route("/api/roles", create_role, methods=["POST"]),
]
