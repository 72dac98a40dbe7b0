"""A read-only npm-protocol registry over a :class:`PackageFolder` (``bolt-host registry serve DIR``).

Routes, as npm and the host's registry client use them: ``GET /-/ping``,
``GET /-/v1/search?text=...``, ``GET /<name>`` (the packument; ``@scope%2fname`` or
``@scope/name``), ``GET /<name>/<version-or-tag>`` and ``GET /<name>/-/<file>.tgz``.
Anything else (publish, unpublish, login) answers 405: the folder is the only way in.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bolt_host.services.package_folder import PackageFolder

READ_METHODS = ["GET", "HEAD"]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
SEARCH_MAX = 250


def create_registry_app(folder: PackageFolder, public_url: str | None = None) -> Starlette:
    """The registry app; tarball URLs use ``public_url`` or else the URL each request came to."""

    def base_url(request: Request) -> str:
        return (public_url or str(request.base_url)).rstrip("/")

    async def ping(request: Request) -> Response:
        return JSONResponse({})

    async def search(request: Request) -> Response:
        hits = folder.search(request.query_params.get("text", ""))
        start = _bounded(request.query_params.get("from"), 0, 10_000)
        size = _bounded(request.query_params.get("size"), 20, SEARCH_MAX)
        objects = [{"package": hit, "score": {"final": 1.0, "detail": {}}, "searchScore": 1.0}
                   for hit in hits[start : start + size]]
        return JSONResponse({"objects": objects, "total": len(hits), "time": _now()})

    async def package_path(request: Request) -> Response:
        if request.method not in READ_METHODS:
            return _error(405, "this registry is read-only: add packages to its folder")
        name, rest = _split(request.path_params["path"])
        package = folder.packages().get(name)
        if package is None:
            return _error(404, f"no package {name!r}")
        if not rest:
            return JSONResponse(package.packument(base_url(request)))
        if rest[0] == "-" and len(rest) == 2:
            entry = next((v for v in package.versions.values() if v.filename == rest[1]), None)
            if entry is None:
                return _error(404, f"no tarball {rest[1]!r} of {name}")
            return Response(entry.tarball, media_type="application/octet-stream")
        if len(rest) == 1:
            version = package.dist_tags().get(rest[0], rest[0])
            if version in package.versions:
                return JSONResponse(package.version_document(version, base_url(request)))
            return _error(404, f"no version or tag {rest[0]!r} of {name}")
        return _error(404, "not found")

    async def not_allowed(request: Request) -> Response:
        return _error(405, "this registry is read-only: add packages to its folder")

    return Starlette(
        routes=[
            Route("/-/ping", ping, methods=READ_METHODS),
            Route("/-/v1/search", search, methods=READ_METHODS),
            Route("/-/{rest:path}", not_allowed, methods=ALL_METHODS),
            Route("/{path:path}", package_path, methods=ALL_METHODS),
        ]
    )


def _split(path: str) -> tuple[str, list[str]]:
    """``@scope/name/-/file.tgz`` -> (``@scope/name``, [``-``, ``file.tgz``])."""
    parts = [part for part in path.split("/") if part]
    cut = 2 if parts and parts[0].startswith("@") else 1
    return "/".join(parts[:cut]), parts[cut:]


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _bounded(value: str | None, default: int, high: int) -> int:
    try:
        return max(0, min(int(value) if value else default, high))
    except ValueError:
        return default


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
