"""Per-app data (``/api/db``), visibility checks, app grants, public files and events."""

from __future__ import annotations

import asyncio
import json
import mimetypes
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.events import is_reserved_event_name
from bolt_host.services.manifest import inside, validate_app_name
from bolt_host.web.auth import actor, host_of, require_admin, require_app, require_user
from bolt_host.web.envelope import flag, ok, read_body, require_str

EVENT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_./")


# /api/db ---------------------------------------------------------------------------
def _db_app(request: Request) -> str:
    who = require_app(request)
    assert who.app is not None
    return who.app


async def db_operation(request: Request) -> Response:
    """Run find, findone, insert, update, replace or remove on the calling app's collection."""
    app = _db_app(request)
    body = await read_body(request)
    collection, operation = request.path_params["collection"], request.path_params["operation"]
    databases = host_of(request).appdb
    query = body.get("query")
    if operation == "find":
        return ok(databases.find(app, collection, query, body.get("map") or body.get("projection")))
    if operation == "findone":
        return ok(databases.find_one(app, collection, query, body.get("map") or body.get("projection")))
    if operation == "insert":
        return ok(databases.insert(app, collection, body.get("object")), status=201)
    if operation == "update":
        changed = databases.update(
            app, collection, query, body.get("values"), flag(body, "upsert"), flag(body, "multi")
        )
        return ok({"matched": changed})
    if operation == "replace":
        return ok({"matched": databases.replace(app, collection, query, body.get("object"), flag(body, "upsert"))})
    if operation == "remove":
        return ok({"removed": databases.remove(app, collection, query if query is not None else None)})
    raise BoltError(errors.ENDPOINT_NOT_FOUND, f"Unknown db operation {operation!r}")


async def db_drop_collection(request: Request) -> Response:
    """Drop one of the calling app's collections."""
    app = _db_app(request)
    host_of(request).appdb.drop_collection(app, request.path_params["collection"])
    return ok({"dropped": request.path_params["collection"]})


async def db_drop_all(request: Request) -> Response:
    """Drop every collection of the calling app."""
    app = _db_app(request)
    host_of(request).appdb.drop_app(app)
    return ok({"dropped": app})


# checks and grants -------------------------------------------------------------------
async def visible_apps(request: Request) -> Response:
    """Apps the user may see (admins see all; controlled apps need a grant)."""
    who = await require_user(request, "checks.read")
    user = request.path_params["user"]
    if who.user_name != user and not who.is_admin and not who.app_system:
        raise BoltError(errors.NO_ADMIN_RIGHT, "Only admins may ask about other users")
    return ok(host_of(request).visibility.visible_apps(user))


async def has_permission(request: Request) -> Response:
    """Whether a user's roles grant an app's declared permission: ``{app, permission, user?}``."""
    who = await require_user(request, "checks.read")
    body = await read_body(request)
    app = require_str(body, "app", errors.APP_NAME_MISSING)
    permission = require_str(body, "permission", errors.PERMISSION_NAME_MISSING)
    user = body.get("user") or who.user_name
    if not isinstance(user, str) or not user:
        raise BoltError(errors.NOT_LOGGED_IN, "Name the user, or call as one")
    result = host_of(request).visibility.has_permission(app, permission, user)
    return ok({"app": app, "permission": permission, "user": user, "result": result})


async def list_app_roles(request: Request) -> Response:
    """App-role grants (``?app=``)."""
    await require_user(request, "grants.read")
    return ok(host_of(request).visibility.app_roles(request.query_params.get("app")))


async def grant_app_role(request: Request) -> Response:
    """Grant an app to a role (admin): ``{app, role, permissions?}``."""
    who = await require_admin(request, "grants.write")
    body = await read_body(request)
    grant = host_of(request).visibility.grant_role(
        require_str(body, "app", errors.APP_NAME_MISSING),
        require_str(body, "role", errors.ROLE_NAME_MISSING),
        body.get("permissions"),
        by=who.user_name,
    )
    return ok(grant, status=201)


async def revoke_app_role(request: Request) -> Response:
    """Revoke an app from a role (admin): ``{app, role}``."""
    await require_admin(request, "grants.write")
    body = await read_body(request)
    removed = host_of(request).visibility.revoke_role(
        require_str(body, "app", errors.APP_NAME_MISSING), require_str(body, "role", errors.ROLE_NAME_MISSING)
    )
    return ok({"removed": removed})


# public files ---------------------------------------------------------------------------
# A public file is served from the host's origin, so a page or SVG among them would run with
# the rights of whoever opens it (the admin's session, the dashboard's DOM).  The sandbox
# makes it a unique origin: its scripts run but reach nothing of the host's.  Public files
# are anonymous anyway, so any origin may read them (the sandboxed page's own fetches too).
PUBLIC_FILE_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads",
    "Access-Control-Allow-Origin": "*",
}


async def public_file(request: Request) -> Response:
    """A file from an app's public folder (no auth, like a static site)."""
    app = request.path_params["app"]
    try:
        validate_app_name(app)
    except BoltError as exc:
        raise BoltError(errors.ENDPOINT_NOT_FOUND, "No such public file") from exc
    folder = host_of(request).settings.data_dir / "public" / app
    relative = request.path_params.get("path") or "index.html"
    try:
        target = inside(folder, relative, errors.ENDPOINT_NOT_FOUND)
    except BoltError as exc:
        raise BoltError(errors.ENDPOINT_NOT_FOUND, "No such public file") from exc
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        raise BoltError(errors.ENDPOINT_NOT_FOUND, "No such public file")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, headers=PUBLIC_FILE_HEADERS)


# events -----------------------------------------------------------------------------------
async def publish_event(request: Request) -> Response:
    """Publish an event as the calling app: ``{body}``; the publisher is the app."""
    who = require_app(request)
    name = request.path_params["name"]
    if not name or len(name) > 100 or not set(name) <= EVENT_NAME_CHARS:
        raise BoltError(errors.BAD_REQUEST, "Event names use lowercase letters, digits and - _ . /")
    if is_reserved_event_name(name):
        raise BoltError(errors.EVENT_NAME_RESERVED, f"The event name {name!r} is the host's; apps may not publish it")
    body = await read_body(request)
    assert who.app is not None  # require_app: an app token was sent and is known
    event = await host_of(request).publish(name, body.get("body"), publisher=who.app)
    return ok({"id": event.id, "name": event.name, "publisher": event.publisher})


async def event_stream(request: Request) -> Response:
    """Server-sent events of everything the host publishes (admins and system apps)."""
    who = actor(request)
    if not (who.is_admin or who.app_system):
        await require_admin(request, "events.read")
    host = host_of(request)

    async def stream() -> Any:
        async with host.events.stream() as queue:
            yield ": connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(15):  # not wait_for: it can swallow the disconnect's cancel
                        event = await queue.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return
                data = json.dumps(event.to_dict(), default=str)
                yield f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


routes = [
    Route("/api/db/{collection}/{operation}", db_operation, methods=["POST"]),
    Route("/api/db/{collection}", db_drop_collection, methods=["DELETE"]),
    Route("/api/db", db_drop_all, methods=["DELETE"]),
    Route("/api/checks/visible-apps/{user}", visible_apps, methods=["GET"]),
    Route("/api/checks/has-permission", has_permission, methods=["POST"]),
    Route("/api/app-roles", list_app_roles, methods=["GET"]),
    Route("/api/app-roles", grant_app_role, methods=["POST"]),
    Route("/api/app-roles", revoke_app_role, methods=["DELETE"]),
    Route("/api/events/stream", event_stream, methods=["GET"]),
    Route("/api/events/{name:path}", publish_event, methods=["POST"]),
    Route("/public/{app}/{path:path}", public_file, methods=["GET"]),
    Route("/public/{app}", public_file, methods=["GET"]),
]
