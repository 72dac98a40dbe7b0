"""Tasks over HTTP: list, show, read the log, cancel; and registry installs run as tasks.

``POST /api/apps/install-task`` queues an ``install`` task around
``host.apps.install_registry`` so a client (the CLI, the dashboard) can follow
the download's progress with ``GET /api/tasks/{id}`` instead of holding one
long request open.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.app_installs import optional_version
from bolt_host.services.manifest import app_name_for
from bolt_host.services.tasks import TaskHandle
from bolt_host.web.auth import host_of, require_admin, require_caller, require_installer
from bolt_host.web.envelope import error_response, flag, ok, read_body

FILTERS = ("kind", "status", "module")
INSTALL_FIELDS = {"name", "version", "system", "upgrade", "installScripts"}
DOWNLOAD_SHARE = 0.8  # of an install task's progress bar; extracting and swapping in take the rest


def _task_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not raw.isdigit():
        raise BoltError(errors.ENDPOINT_NOT_FOUND, f"No task {raw!r}")
    return int(raw)


def _require_task(request: Request) -> dict[str, Any]:
    task_id = _task_id(request)
    record = host_of(request).tasks.get(task_id)
    if record is None:
        raise BoltError(errors.ENDPOINT_NOT_FOUND, f"No task {task_id}")
    return record


def _int_param(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise BoltError(errors.BAD_REQUEST, f"'{key}' must be a non-negative integer")
    return int(raw)


async def list_tasks(request: Request) -> Response:
    """Tasks, newest first, filtered by ``?kind=&status=&module=`` (admin)."""
    await require_admin(request, "tasks.read")
    unknown = set(request.query_params) - set(FILTERS)
    if unknown:
        raise BoltError(errors.BAD_REQUEST, f"Unknown filters: {', '.join(sorted(unknown))}")
    criteria = {key: request.query_params[key] for key in FILTERS if request.query_params.get(key)}
    return ok(host_of(request).tasks.list(**criteria))


async def get_task(request: Request) -> Response:
    """One task: ``{id, kind, status, module, version, progress, error, result, ...}`` (admin)."""
    await require_admin(request, "tasks.read")
    return ok(_require_task(request))


async def task_log(request: Request) -> Response:
    """A task's log by character range (``?start=&end=``), with ``X-MORE-DATA`` and ``X-TEXT-SIZE``."""
    await require_admin(request, "tasks.read")
    record = _require_task(request)
    start, end = _int_param(request, "start") or 0, _int_param(request, "end")
    if end is not None and end < start:
        raise BoltError(errors.BAD_REQUEST, "'end' must not be before 'start'")
    text, more, total = host_of(request).tasks.read_log(record["id"], start, end)
    return PlainTextResponse(
        text,
        headers={"X-MORE-DATA": "true" if more else "false", "X-TEXT-SIZE": str(total)},
        media_type="text/plain; charset=utf-8",
    )


async def cancel_task(request: Request) -> Response:
    """Cancel a queued task, or ask a running one to stop (admin); returns the record."""
    await require_admin(request, "tasks.cancel", request.path_params["id"])
    record = _require_task(request)
    return ok(host_of(request).tasks.cancel(record["id"]))


async def remove_task(request: Request) -> Response:
    """Forget a finished task and delete its log (admin); 409 while it is queued or running."""
    await require_admin(request, "tasks.remove", request.path_params["id"])
    record = _require_task(request)
    try:
        host_of(request).tasks.remove(record["id"])
    except ValueError as exc:
        return error_response(BoltError(errors.BAD_REQUEST, str(exc)), status=409)
    return ok(record)


async def install_task(request: Request) -> Response:
    """Queue a registry install ``{name, version?, system?, upgrade?}``; returns the task (201)."""
    require_caller(request)
    body = await read_body(request)
    await require_installer(request, "apps.install", body.get("name"))
    unknown = set(body) - INSTALL_FIELDS
    if unknown:
        raise BoltError(errors.BAD_REQUEST, f"Unknown fields: {', '.join(sorted(unknown))}")
    host = host_of(request)
    package = body.get("name")
    app_name = app_name_for(package)
    version = optional_version(body.get("version"))
    system = flag(body, "system") if "system" in body else None
    upgrade = flag(body, "upgrade")
    run_scripts = flag(body, "installScripts")
    host.apps.require_registry()
    if not upgrade and host.apps.get(app_name):
        raise BoltError(errors.APP_NAME_TAKEN, f"An app named {app_name!r} is already installed; use upgrade")

    async def job(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== installing {package}{'@' + version if version else ''} from the registry")
        seen = {"last": -1.0}

        def progress(received: int, total: int | None) -> None:
            task.check_cancelled()
            if total:
                fraction = min(received / total, 1.0)
                task.progress(fraction * DOWNLOAD_SHARE)
                if fraction - seen["last"] >= 0.25 or fraction >= 1.0 > seen["last"]:
                    seen["last"] = fraction
                    task.log(f"=== downloaded {received} of {total} bytes")

        app = await host.apps.install_registry(
            package, version, system, upgrade, progress=progress, run_scripts=run_scripts
        )
        task.log(f"=== installed {app['name']} {app['version']}")
        return {"name": app["name"], "version": app["version"], "system": app.get("system", False)}

    record = host.tasks.submit(
        "install",
        app_name,
        version,
        job,
        dedupe_key=f"install:{app_name}",
        meta={"package": package, "source": "registry", "system": system, "upgrade": upgrade},
    )
    return ok(record, status=201)


routes = [
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route("/api/tasks/{id}", get_task, methods=["GET"]),
    Route("/api/tasks/{id}", remove_task, methods=["DELETE"]),
    Route("/api/tasks/{id}/log", task_log, methods=["GET"]),
    Route("/api/tasks/{id}/cancel", cancel_task, methods=["POST"]),
    Route("/api/apps/install-task", install_task, methods=["POST"]),
]
