"""Running apps: start, stop, restart, live contexts, logs (the ``/x/<app>`` proxy is in proxy.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.app_runtime import CONTEXT_FIELDS
from bolt_host.services.start_batch import start_each
from bolt_host.web.auth import (
    Actor,
    actor,
    host_of,
    require_caller,
    require_operator,
    require_user,
)
from bolt_host.web.envelope import OK_HEAD, OK_TAIL, ok, ok_enveloped, read_body

log = logging.getLogger("bolt_host.web")

MAX_NAMES = 1000  # apps in one bulk start or stop


async def _app_names(request: Request) -> list[str] | None:
    """``{names: [...]}`` of a bulk call, or None when the body names one app (``{name}``)."""
    require_caller(request)  # credentials first: an anonymous caller learns nothing about the body
    body = await read_body(request)
    if "names" not in body:
        return None
    names = body["names"]
    if (
        not isinstance(names, list)
        or not 0 < len(names) <= MAX_NAMES
        or not all(isinstance(name, str) and name for name in names)
        or len({name.lower() for name in names}) != len(names)
    ):
        raise BoltError(errors.BAD_REQUEST, f"'names' must be a list of 1 to {MAX_NAMES} different app names")
    return names


async def _app_name(request: Request) -> str:
    body = await read_body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BoltError(errors.APP_NAME_MISSING)
    return name


async def _operands(request: Request, action: str) -> tuple[list[str], bool]:
    """The apps a start or stop is about, as installed (names in any case), every one checked
    before anything happens.  Stopping an app that is not installed is Bolt's 420: nothing of
    that name runs."""
    listed = await _app_names(request)
    bulk = listed is not None
    names = listed if listed is not None else [await _app_name(request)]
    host = host_of(request)
    found = []
    for name in names:
        await require_operator(request, action, name)
        installed = host.apps.installed_name(name)
        if installed is None:
            code = errors.APP_NOT_RUNNING if action == "apps.stop" else errors.APP_NOT_FOUND
            raise BoltError(code, f"No app named {name!r} is installed")
        found.append(installed)
    return found, bulk


async def _for_each(
    names: list[str], run: Callable[[str], Awaitable[dict[str, Any]]], done: str, at_once: int
) -> dict[str, Any]:
    """Run ``run`` for every app, ``at_once`` at a time (0: all, :mod:`start_batch`):
    ``{done: [contexts], failed: {name: {code, message}}}``."""
    return _outcomes(names, await start_each(names, run, at_once), done)


def _outcomes(names: list[str], results: list[dict[str, Any] | BaseException], done: str) -> dict[str, Any]:
    """``{done: [contexts], failed: {name: {code, message}}}`` from each app's context or error."""
    contexts, failed = [], {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BoltError):
            failed[name] = {"code": result.code, "message": result.message}
        elif isinstance(result, BaseException):
            log.error("bulk %s of %s failed", done, name, exc_info=result)
            failed[name] = {"code": errors.UNKNOWN, "message": "Internal error"}
        else:
            contexts.append(result)
    return {done: contexts, "failed": failed}


async def start(request: Request) -> Response:
    """Start an app, ``{name}``: its context once ready (idempotent).  Or start several at once,
    ``{names: [...]}``: ``{started: [contexts], failed: {name: {code, message}}}``."""
    names, bulk = await _operands(request, "apps.start")
    host = host_of(request)
    if not bulk:
        return ok(await host.supervisor.start_app(host.apps.require(names[0])))

    async def start_one(name: str) -> dict[str, Any]:
        return await host.supervisor.start_app(host.apps.require(name))

    return ok(await _for_each(names, start_one, "started", host.settings.start_concurrency))


async def stop(request: Request) -> Response:
    """Stop an app, ``{name}``: its context once its process tree is gone (420 if not running).
    Or several at once, ``{names: [...]}``: ``{stopped: [contexts], failed: {...}}``."""
    names, bulk = await _operands(request, "apps.stop")
    host = host_of(request)
    by = _who(actor(request))
    if not bulk:
        return ok(await host.supervisor.stop_app(names[0], by=by))
    with host.events.held():  # the stops' events go out right after the answer, in order
        stopped = await host.supervisor.stop_apps(names, by=by)
    return ok(_outcomes(names, stopped, "stopped"))


RESTART_MODES = ("stop-start", "rolling")


async def restart(request: Request) -> Response:
    """Restart an app: ``{name, mode?}``.  ``mode: "rolling"`` keeps the running process serving
    until the new one is ready (a plain restart for apps with ``bolt.rolling: false``)."""
    require_caller(request)
    name = await _app_name(request)
    mode = (await read_body(request)).get("mode", "stop-start")
    if mode not in RESTART_MODES:
        raise BoltError(errors.BAD_REQUEST, f"'mode' must be one of {list(RESTART_MODES)}")
    await require_operator(request, "apps.restart", name)
    host = host_of(request)
    app = host.apps.require(name)
    return ok(await host.supervisor.restart_app(app, by=_who(actor(request)), rolling=mode == "rolling"))


restart.openapi = {  # type: ignore[attr-defined]
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "mode": {"enum": list(RESTART_MODES)}},
                }
            }
        },
    }
}


def _who(caller: Actor) -> str | None:
    """How the app's log names the caller of a stop or restart."""
    if caller.user_name and caller.app:
        return f"{caller.user_name} via app {caller.app}"
    return caller.user_name or (f"app {caller.app}" if caller.app else None)


async def live(request: Request) -> Response:
    """Contexts of running apps, with cpu, memory and uptime of the whole tree (``?fields=`` for fewer members)."""
    await require_user(request, "apps.read")
    return ok_enveloped(host_of(request).supervisor.contexts_json(_context_fields(request), OK_HEAD, OK_TAIL))


live.openapi = {  # type: ignore[attr-defined]
    "parameters": [
        {
            "name": "fields",
            "in": "query",
            "required": False,
            "description": "Comma-separated context members to return, e.g. name,status,pid (default: all)",
            "schema": {"type": "string"},
        }
    ]
}


def _context_fields(request: Request) -> frozenset[str] | None:
    """``?fields=name,status,pid``: the context members a listing returns (None: all)."""
    return _fields_of_query(request.scope["query_string"])


@functools.lru_cache(maxsize=64)
def _fields_of_query(query_string: bytes) -> frozenset[str] | None:
    """The fields a query string selects, read as Starlette reads it, once per distinct query:
    a poller sends the same one each time, and parsing it was a tenth of a light call's Python.
    A refused query raises, which is not cached."""
    raw = QueryParams(query_string).get("fields")
    if not raw:
        return None
    fields = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = fields - CONTEXT_FIELDS
    if unknown or not fields:
        which = f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""
        known = ", ".join(sorted(CONTEXT_FIELDS))
        raise BoltError(errors.BAD_REQUEST, f"'fields' takes context members separated by commas: {known}{which}")
    return fields


def _int_param(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise BoltError(errors.BAD_REQUEST, f"'{key}' must be a non-negative integer")
    return int(raw)


def _time_param(request: Request, key: str) -> float | None:
    raw = request.query_params.get(key)
    if raw in (None, ""):
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BoltError(errors.BAD_REQUEST, f"'{key}' must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def logs(request: Request) -> Response:
    """An app's log by character range (``?start=&end=``), or its last lines (``?lines=N``, from
    about ``?since=<ISO time>``), or followed as server-sent events."""
    from bolt_host.services.applogs import follow, read_range, select_lines

    name = request.path_params["name"]
    await require_operator(request, "apps.logs", name)
    host = host_of(request)
    path = host.supervisor.log_path(host.apps.require(name)["name"])
    lines, since = _int_param(request, "lines"), _time_param(request, "since")
    if lines is not None or since is not None:
        text, total = await asyncio.to_thread(select_lines, path, lines, since)
        return PlainTextResponse(text, headers={"X-TEXT-SIZE": str(total)}, media_type="text/plain; charset=utf-8")
    start_at = _int_param(request, "start") or 0
    if request.query_params.get("follow") == "true":

        async def events() -> Any:
            async for chunk in follow(path, start_at):
                yield f"data: {json.dumps(chunk)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, more, total = await asyncio.to_thread(read_range, path, start_at, _int_param(request, "end"))
    return PlainTextResponse(
        text,
        headers={"X-MORE-DATA": "true" if more else "false", "X-TEXT-SIZE": str(total)},
        media_type="text/plain; charset=utf-8",
    )


routes = [
    Route("/api/apps/@live", live, methods=["GET"]),
    Route("/api/apps/start", start, methods=["POST"]),
    Route("/api/apps/stop", stop, methods=["POST"]),
    Route("/api/apps/restart", restart, methods=["POST"]),
    Route("/api/apps/{name}/logs", logs, methods=["GET"]),
]
