"""Everything else under ``/v1``: Kapua's error body instead of the host's envelope.

A Kapua client parses ``{type, httpErrorCode, message, kapuaErrorCode}`` on
every answer, so an unknown or unimplemented path or method answers it too:
401 for a caller without a valid token (before anything about the path is
said, as Kapua's auth filter does), then 405 with ``Allow`` when another
``/v1`` route has that path, else 404.  The route is registered last and
matches every method, so it wins over Starlette's own 404/405.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from .kapua import KapuaError, method_not_allowed, unknown_path
from .web import caller, kapua_endpoint

PATH = "/v1/{rest:path}"
# Every method a client may send (Starlette gives a function route GET only unless told).
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def allowed_methods(request: Request) -> list[str]:
    """The methods the other routes accept for this path (none: the path is unknown)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if not isinstance(route, Route) or route.path == PATH:
            continue
        match, _ = route.matches({**request.scope, "method": "\0"})  # any path match is PARTIAL
        if match != Match.NONE and route.methods:
            methods |= route.methods
    return sorted(methods)


@kapua_endpoint
async def unknown(request: Request) -> Response:
    caller(request)  # 401 without a valid token
    methods = allowed_methods(request)
    if not methods:
        raise unknown_path(request.url.path)
    raise method_not_allowed(request.method, request.url.path, methods)


def routes() -> list[Route]:
    return [Route(PATH, unknown, methods=METHODS)]


def render_error(status: int, error: object) -> dict[str, object]:
    """Kapua's body for the errors the host answers itself under /v1 (413, 500)."""
    code = {413: "ILLEGAL_ARGUMENT"}.get(status, "INTERNAL_ERROR")
    return KapuaError(status, code, str(getattr(error, "message", "") or error)).body()
