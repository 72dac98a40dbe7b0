"""Routes about the host itself: health, loaded plugins, the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bolt_host.lazy import resolved_endpoint
from bolt_host.plugins import plugin_infos
from bolt_host.web.auth import host_of
from bolt_host.web.envelope import ok

_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")

ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code"],
    "properties": {
        "code": {"type": "integer"},
        "body": {},
        "error": {"type": "object", "properties": {"message": {"type": "string"}}},
        "errorUserTitle": {"type": "string"},
        "errorUserMessage": {"type": "string"},
        "errorTraceId": {"type": "string"},
    },
}

ENVELOPE_CONTENT: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/BoltEnvelope"}}}
# read_body() takes a JSON object or a form; the fields each route reads are in its summary and docs/api.md.
BODY_CONTENT: dict[str, Any] = {
    "application/json": {"schema": {"type": "object"}},
    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
}
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


async def health(request: Request) -> Response:
    """Liveness: version and uptime (no auth)."""
    host = host_of(request)
    isolation = host.isolation.summary() if host.isolation is not None else {"mode": "off"}
    return ok({"status": "ok", "version": host.version, "uptime": round(host.uptime, 3), "isolation": isolation})


async def plugins(request: Request) -> Response:
    """Loaded plugins: name, version, origin and the hooks each implements (no auth)."""
    return JSONResponse(plugin_infos(host_of(request).pm))


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document describing every route, plugin routes included."""
    return JSONResponse(build_openapi(request.app.routes, host_of(request).version))


def build_openapi(routes: list[BaseRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint in iter_endpoints(routes):
        operation = _operation(path, method, endpoint)
        paths.setdefault(_openapi_path(path), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "bolt-host", "version": version},
        "components": {
            "schemas": {"BoltEnvelope": ENVELOPE_SCHEMA},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "userToken": {"type": "apiKey", "in": "header", "name": "X-Bolt-User-Token"},
                "appToken": {"type": "apiKey", "in": "header", "name": "X-Bolt-App-Token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "bolt_session"},
            },
        },
        "paths": dict(sorted(paths.items())),
    }


def iter_endpoints(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every (path, method, endpoint) reachable through ``routes``, mounts included."""
    found: list[tuple[str, str, Any]] = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                found.append((prefix + route.path, method, route.endpoint))
        elif isinstance(route, Mount) and route.routes:
            found.extend(iter_endpoints(list(route.routes), prefix + route.path))
    return found


def _openapi_path(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _speaks_envelope(path: str, endpoint: Any) -> bool:
    """Core ``/api/*`` routes (and health) answer Bolt's envelope; plugins answer their API's format."""
    core = str(getattr(endpoint, "__module__", "")).startswith("bolt_host.")
    return core and (path.startswith("/api/") or path == "/-/health")


def _operation(path: str, method: str, endpoint: Any) -> dict[str, Any]:
    endpoint = resolved_endpoint(endpoint)  # a backend's handler imported at its first request: its docstring
    doc = (getattr(endpoint, "__doc__", None) or "").strip()
    summary = doc.splitlines()[0] if doc else f"{method} {path}"
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_')}",
        "responses": {"default": {"description": "Bolt envelope or the store API's own format"}},
    }
    if _speaks_envelope(path, endpoint):
        # JSON answers are the envelope; text answers (logs) and event streams are not described.
        operation["responses"] = {"default": {"description": "Bolt envelope", "content": ENVELOPE_CONTENT}}
        if method in BODY_METHODS:
            operation["requestBody"] = {"required": False, "content": BODY_CONTENT}
    extra = getattr(endpoint, "openapi", None)
    if isinstance(extra, dict):
        operation.update(extra)
    params = [
        {"name": m.group(1), "in": "path", "required": True, "schema": {"type": "string"}}
        for m in _PARAM.finditer(path)
    ]
    if params:
        operation["parameters"] = params
    return operation


routes = [
    Route("/-/health", health, methods=["GET"]),
    Route("/-/plugins", plugins, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
