"""A loose-file plugin used by the tests: a route, an event recorder, a permission rule."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bolt_host import hookimpl

seen_events: list[str] = []


async def greet(request: Request) -> JSONResponse:
    """Say hello."""
    return JSONResponse({"hello": request.query_params.get("name", "world")})


@hookimpl
def register_routes(host):
    return [Route("/greet", greet, methods=["GET"])]


@hookimpl
def on_event(host, event):
    seen_events.append(event.name)


@hookimpl
def permission_allowed(host, actor, action, resource):
    if action == "roles.read" and actor and actor.get("user") == "admin":
        return False
    return None
