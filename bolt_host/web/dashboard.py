"""The admin dashboard: its static files (``/`` and ``/dashboard/...``) and ``GET /api/system``.

The dashboard is plain HTML, CSS and JavaScript modules in ``bolt_host/web/static``
(no build step, nothing fetched from elsewhere); it uses only the public JSON API.
"""

from __future__ import annotations

import mimetypes
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.lazy import lazy_module
from bolt_host.services.manifest import fits_filesystem
from bolt_host.services.registry import display_url
from bolt_host.services.system_cpu import SystemCpu
from bolt_host.web.auth import host_of, require_admin
from bolt_host.web.envelope import ok

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_module("psutil")  # about 0.9 MB: imported only when the dashboard's host figures are read

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


async def root(request: Request) -> Response:
    """The host's front page: the admin dashboard."""
    return RedirectResponse("/dashboard/", status_code=307)


async def dashboard_file(request: Request) -> Response:
    """A file of the dashboard (``/dashboard/`` is its page; routes inside it use the URL's #fragment)."""
    relative = request.path_params.get("path") or "index.html"
    target = _static_file(relative)
    media_type = MEDIA_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def dashboard_redirect(request: Request) -> Response:
    return RedirectResponse("/dashboard/", status_code=307)


def _static_file(relative: str) -> Path:
    missing = BoltError(errors.ENDPOINT_NOT_FOUND, f"No dashboard file {relative[:80]!r}")
    parts = relative.split("/")
    if "\0" in relative or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise missing
    if not fits_filesystem(STATIC_DIR / relative):
        raise missing
    root = STATIC_DIR.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise missing
    return target


async def system(request: Request) -> Response:
    """The machine and the host: CPU, memory, disk of the data dir, version, uptime, app counts (admin)."""
    await require_admin(request, "system.read")
    return ok(system_info(host_of(request)))


def system_info(host: Any) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    data_dir = host.settings.data_dir
    disk = psutil.disk_usage(str(data_dir))
    me = psutil.Process(os.getpid())
    with me.oneshot():
        host_process = {"pid": me.pid, "memory": me.memory_info().rss, "threads": me.num_threads()}
    contexts = host.supervisor.contexts()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "version": host.version,
        "uptime": round(host.uptime, 3),
        "startedAt": host.started_at,
        "time": time.time(),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "url": host.settings.url,
        "registry": display_url(host.settings.registry) if host.settings.registry else None,  # no credentials
        "cpu": {"percent": SYSTEM_CPU.percent(), "count": os.cpu_count() or 1, "load": load},
        "memory": {
            "total": memory.total,
            "available": memory.available,
            "used": memory.total - memory.available,
            "percent": memory.percent,
        },
        "disk": {
            "path": str(data_dir),
            "total": disk.total,
            "used": disk.used,
            "free": disk.free,
            "percent": disk.percent,
        },
        "process": host_process,
        "apps": {
            "installed": len(host.apps.list()),
            "running": sum(1 for c in contexts if c.get("status") == "running"),
        },
    }


SYSTEM_CPU = SystemCpu()  # the first reading starts the measuring window

routes = [
    Route("/", root, methods=["GET"]),
    Route("/dashboard", dashboard_redirect, methods=["GET"]),
    Route("/dashboard/{path:path}", dashboard_file, methods=["GET"]),
    Route("/api/system", system, methods=["GET"]),
]
