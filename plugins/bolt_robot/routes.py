"""HTTP routes of the robot App Store API (``/app_store/...``), in the robot's own format.

Answers are plain JSON (no Bolt envelope); errors that are not per-package are
``{"detail": "..."}`` as FastAPI writes them, which robot clients already parse.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from bolt_host.plugin import BoltError, host_of, jsondepth, require_admin

from .answers import ROBOT, RobotError
from .firmware import queue_firmware
from .jobs import Outcome, queue_downloads, queue_installs, queue_uninstalls
from .packages import list_firmware, list_packages
from .route_table import PREFIX
from .state import Robot
from .uploads import install_local_file, receive_upload

JOB_GROUPS = {"download": ("download",), "install": ("install", "uninstall", "firmware")}
CATALOG_WAIT = 10.0  # seconds a first package listing waits for the first catalog refresh
TASK_FIELDS = ("id", "status", "module", "version", "create_time", "start_time", "end_time")
SKIPPED_HEADER = "X-Skipped-Packages"  # what a partly successful request left out, as JSON
SKIPPED_COUNT_HEADER = "X-Skipped-Count"
SKIPPED_HEADER_MAX = 4096  # characters; clients read response headers into small buffers
Handler = Callable[[Request], Awaitable[Response]]


def robot_of(request: Request) -> Robot:
    return host_of(request).state["robot"]


async def authorize(request: Request) -> None:
    """Return if the caller may go on, else raise the refusal.

    Every route needs the host's admin or, when ``BOLT_ROBOT_SECRET`` is set, a
    ``Secret`` header equal to it (checked in constant time).  A wrong secret is
    refused at once, even next to valid host credentials.
    """
    robot = robot_of(request)
    supplied = request.headers.get("secret")
    if robot.secret is not None and supplied is not None:
        if hmac.compare_digest(supplied.encode(), robot.secret.encode()):
            return
        raise RobotError("invalid Secret", 401)
    try:
        action = "robot.read" if request.method == "GET" else "robot.write"  # for permission_allowed plugins
        await require_admin(request, action, request.url.path)
    except BoltError as exc:
        raise RobotError(exc.message, exc.http_status if exc.http_status in (401, 403) else 401) from None


def guarded(handler: Handler) -> Handler:
    """Check access first (failing closed); refusals and request errors answer ``{"detail"}``."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        await authorize(request)
        return await handler(request)

    return ROBOT.endpoint(endpoint)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = jsondepth.loads(await request.body())
    except ValueError:
        raise RobotError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RobotError("the body must be a JSON object")
    return body


async def package_names(request: Request) -> list[Any]:
    packages = (await json_body(request)).get("packages")
    if not isinstance(packages, list) or not packages:
        raise RobotError("'packages' must be a non-empty list of module names")
    return packages


def outcome(result: Outcome) -> JSONResponse:
    """201 with only the queued modules (as in the seed), or 400 with the reasons if nothing was queued.

    What a partly successful request skipped goes into the ``X-Skipped-Packages``
    header (a JSON object, same values as the 400 body), so the 201 body keeps
    the seed's ``{name: {task_id, version}}`` shape.
    """
    queued, skipped = result
    if not queued:
        return JSONResponse(skipped, status_code=400)
    return JSONResponse(queued, status_code=201, headers=skipped_headers(skipped))


def skipped_headers(skipped: dict[str, Any]) -> dict[str, str]:
    """The skipped modules as headers; past ``SKIPPED_HEADER_MAX`` the last ones are left out (the count says)."""
    if not skipped:
        return {}
    shown: dict[str, Any] = {}
    for name, reason in skipped.items():
        if len(json.dumps({**shown, name: reason})) > SKIPPED_HEADER_MAX:
            break
        shown[name] = reason
    return {SKIPPED_HEADER: json.dumps(shown), SKIPPED_COUNT_HEADER: str(len(skipped))}


# ---------------------------------------------------------------- packages


def _listing(name: str, make_list: Callable[[Robot], Any], doc: str) -> Handler:
    """A GET of a list the catalog feeds: waits (bounded) for the catalog's first refresh."""

    async def listing(request: Request) -> Response:
        robot = robot_of(request)
        await robot.host.catalog.ready(timeout=CATALOG_WAIT)
        return JSONResponse(make_list(robot))

    listing.__name__, listing.__doc__ = name, doc
    return guarded(listing)


def _queueing(name: str, queue: Callable[[Robot, list[Any]], Outcome], doc: str) -> Handler:
    """A POST of ``{"packages": [...]}`` that queues one task per package."""

    async def queueing(request: Request) -> Response:
        return outcome(queue(robot_of(request), await package_names(request)))

    queueing.__name__, queueing.__doc__ = name, doc
    return guarded(queueing)


@guarded
async def get_packages(request: Request) -> Response:
    """Every known or installed package, with its status; ``?install=true`` adds each one's
    install preview (outside the seed's ``Package`` type, so only when asked)."""
    with_install = _install_wanted(request)
    robot = robot_of(request)
    await robot.host.catalog.ready(timeout=CATALOG_WAIT)
    return JSONResponse(list_packages(robot, with_install=with_install))


def _install_wanted(request: Request) -> bool:
    value = request.query_params.get("install", "false").lower()
    if value not in ("true", "false"):
        raise RobotError("'install' must be true or false")
    return value == "true"


@guarded
async def refresh_store(request: Request) -> Response:
    """Refresh the catalog in the background; poll the package list to see the result."""
    robot_of(request).host.catalog.refresh_soon()
    return JSONResponse({"status": 200})


download_packages = _queueing("download_packages", queue_downloads, "Queue downloads of the named packages.")
install_packages = _queueing("install_packages", queue_installs, "Queue installs of the named packages.")
uninstall_packages = _queueing("uninstall_packages", queue_uninstalls, "Queue uninstalls of the named packages.")


@guarded
async def install_local(request: Request) -> Response:
    """Install a tarball from the upload staging folder: ``{"filename": ...}``."""
    filename = (await json_body(request)).get("filename")
    status, body = await install_local_file(robot_of(request), filename)
    return JSONResponse(body, status_code=status)


@guarded
async def upload_local(request: Request) -> Response:
    """Put a tarball into the staging folder (multipart field ``file``, or a raw body)."""
    robot = robot_of(request)
    stored = await receive_upload(robot, request)
    robot.host.catalog.refresh_soon()
    return JSONResponse(stored, status_code=201)


# ---------------------------------------------------------------- firmware


get_firmware = _listing("get_firmware", list_firmware, "Every firmware package, with the version flashed.")
install_firmware = _queueing("install_firmware", queue_firmware, "Queue flashes of the named firmware packages.")


# ---------------------------------------------------------------- jobs


def _group(request: Request) -> str:
    group = request.path_params["group"]
    if group not in JOB_GROUPS:
        raise RobotError(f"unknown job type {group!r}; use download or install")
    return group


def _base_url(request: Request) -> str:
    public = host_of(request).settings.public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/")


@guarded
async def list_tasks(request: Request) -> Response:
    """Tasks of the group, newest first, each with the URL of its log."""
    group = _group(request)
    tasks = robot_of(request).host.tasks
    records = sorted(
        (r for kind in JOB_GROUPS[group] for r in tasks.list(kind=kind)), key=lambda r: r["id"], reverse=True
    )
    base = _base_url(request)
    return JSONResponse(
        [
            {**{key: r[key] for key in TASK_FIELDS}, "url": f"{base}{PREFIX}/jobs/{group}/tasks/{r['id']}/log"}
            for r in records
        ]
    )


def _task(request: Request) -> dict[str, Any] | None:
    group = _group(request)
    try:
        task_id = int(request.path_params["task_id"])
    except ValueError:
        return None
    record = robot_of(request).host.tasks.get(task_id)
    return record if record is not None and record["kind"] in JOB_GROUPS[group] else None


def _position(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RobotError(f"'{name}' must be a character index") from None
    if number < 0:
        raise RobotError(f"'{name}' must not be negative")
    return number


async def _log_range(request: Request) -> tuple[int, int | None]:
    """``start``/``end`` from the query, a POST body (older clients) or a ``Range: a-b`` header."""
    source: dict[str, Any] = dict(request.query_params)
    if request.method == "POST" and await request.body():
        source = await json_body(request)
    elif "start" not in source and "end" not in source and request.headers.get("range"):
        first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
        source = {"start": first.strip(), "end": last.strip()}
    start = _position(source.get("start"), "start") or 0
    end = _position(source.get("end"), "end")
    return start, (None if end == 0 else end)  # end=0 meant "to the end" in older docs


@guarded
async def task_log(request: Request) -> Response:
    """Characters [start, end) of a task log, with X-MORE-DATA and X-TEXT-SIZE."""
    record = _task(request)
    if record is None:
        raise RobotError("task not found", 404)
    start, end = await _log_range(request)
    text, more, total = robot_of(request).host.tasks.read_log(record["id"], start, end)
    headers = {"X-MORE-DATA": "true" if more else "false", "X-TEXT-SIZE": str(total)}
    return PlainTextResponse(text, headers=headers, media_type="text/plain; charset=utf-8")


@guarded
async def cancel_task(request: Request) -> Response:
    """bolt-host extension: cancel a queued task, or ask a running one to stop."""
    record = _task(request)
    if record is None:
        raise RobotError("task not found", 404)
    after = robot_of(request).host.tasks.cancel(record["id"])
    return JSONResponse({key: after[key] for key in TASK_FIELDS}, status_code=201)
