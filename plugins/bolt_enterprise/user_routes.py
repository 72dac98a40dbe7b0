"""Store users: ``/store/apis/user/{login,logout,register,exists}`` over the host's users.

Unlike WSO2, a wrong password is a failure (401 with a failure message), every
login failure has the same message whether or not the name exists, and the
only way to ask whether a name exists is ``exists``, which is rate limited
per client with the host's login throttle.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import check_login, client_key, host_of, read_body

from .access import STORE_COOKIE, STORE_COOKIE_PATH, check_write, require_admin
from .replies import EnterpriseError, done, store_endpoint


@store_endpoint
async def login(request: Request) -> Response:
    """Log in to the store: ``{"username", "password"}`` (JSON or form); sets the JSESSIONID cookie."""
    check_write(request, None)
    body = await read_body(request)
    host = host_of(request)
    user = check_login(request, host, body.get("username"), body.get("password"))
    old = request.cookies.get(STORE_COOKIE)
    if old:
        host.sessions.end(old)  # a new session id at every login
    session = host.sessions.create(user["name"])
    host.users.record_visit(user["name"])
    response = done(
        f"User {user['name']} logged in successfully",
        username=user["name"],
        isAdmin=host.users.is_admin(user),
        csrfToken=session.csrf,
        expires=int(session.expires),
    )
    response.set_cookie(
        STORE_COOKIE,
        session.id,
        max_age=int(session.expires - time.time()),
        path=STORE_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=host.settings.url.startswith("https://"),
    )
    await host.publish("user-logged-in", {"name": user["name"], "via": "enterprise"})
    return response


@store_endpoint
async def logout(request: Request) -> Response:
    """Log out of the store: ends the JSESSIONID session."""
    host = host_of(request)
    session_id = request.cookies.get(STORE_COOKIE)
    session = host.sessions.get(session_id)
    if session_id:
        host.sessions.end(session_id)
    message = f"User {session.user} logged out successfully" if session else "There was no store session to end"
    response = done(message)
    response.delete_cookie(STORE_COOKIE, path=STORE_COOKIE_PATH)
    return response


@store_endpoint
async def register(request: Request) -> Response:
    """Add a store user (admin only): ``{"username", "password"}``; the user gets the guest role."""
    await require_admin(request, "users.create")
    body = await read_body(request)
    host = host_of(request)
    user = host.users.create(body.get("username"), body.get("password"))
    await host.publish("user-created", user)
    return done(f"User {user['name']} registered", status=201, showWorkflowMsg=False)


@store_endpoint
async def exists(request: Request) -> Response:
    """Whether a user name is taken: ``{"username"}``; rate limited per client like login."""
    check_write(request, None)
    host = host_of(request)
    key = f"exists:{client_key(request)}"
    wait = host.login_throttle.retry_after(key)
    if wait > 0:
        seconds = int(wait) + 1
        raise EnterpriseError(
            429, f"Too many user-name checks; try again in {seconds} s", {"Retry-After": str(seconds)}
        )
    host.login_throttle.failed(key)  # every check counts towards the lock, as a failed login does
    body = await read_body(request)
    name = body.get("username")
    if not isinstance(name, str) or not name:
        raise EnterpriseError(400, "'username' is missing")
    taken = host.users.get(name) is not None
    return done(f"User name {name} is taken" if taken else f"User name {name} is free", exists=taken)
