"""Running apps: start, stop, restart, live contexts, logs, and the ``/x/<app>`` proxy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.web.auth import (
    Actor,
    actor,
    host_of,
    require_caller,
    require_operator,
    require_user,
)
from bolt_host.web.envelope import ok, ok_encoded, read_body

log = logging.getLogger("bolt_host.web")

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}
# Credentials meant for the host never reach an app through the proxy.
HOST_COOKIE_PREFIXES = ("bolt_", "JSESSIONID=")  # host and store-backend cookies
STRIPPED_REQUEST_HEADERS = {"cookie", "authorization", "x-bolt-app-token", "x-bolt-user-token", "x-csrf-token"}


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
        or len(set(names)) != len(names)
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
    """The apps a start or stop is about, every one checked before anything happens."""
    listed = await _app_names(request)
    bulk = listed is not None
    names = listed if listed is not None else [await _app_name(request)]
    host = host_of(request)
    for name in names:
        await require_operator(request, action, name)
        host.apps.require(name)
    return names, bulk


async def _for_each(names: list[str], run: Callable[[str], Awaitable[dict[str, Any]]], done: str) -> dict[str, Any]:
    """Run ``run`` for every app at once: ``{done: [contexts], failed: {name: {code, message}}}``."""
    results = await asyncio.gather(*(run(name) for name in names), return_exceptions=True)
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
    return ok(await _for_each(names, lambda name: host.supervisor.start_app(host.apps.require(name)), "started"))


async def stop(request: Request) -> Response:
    """Stop an app, ``{name}``: its context once its process tree is gone (420 if not running).
    Or several at once, ``{names: [...]}``: ``{stopped: [contexts], failed: {...}}``."""
    names, bulk = await _operands(request, "apps.stop")
    supervisor = host_of(request).supervisor
    by = _who(actor(request))
    if not bulk:
        return ok(await supervisor.stop_app(names[0], by=by))
    return ok(await _for_each(names, lambda name: supervisor.stop_app(name, by=by), "stopped"))


async def restart(request: Request) -> Response:
    """Restart an app: ``{name}``."""
    require_caller(request)
    name = await _app_name(request)
    await require_operator(request, "apps.restart", name)
    host = host_of(request)
    app = host.apps.require(name)
    return ok(await host.supervisor.restart_app(app, by=_who(actor(request))))


def _who(caller: Actor) -> str | None:
    """How the app's log names the caller of a stop or restart."""
    if caller.user_name and caller.app:
        return f"{caller.user_name} via app {caller.app}"
    return caller.user_name or (f"app {caller.app}" if caller.app else None)


async def live(request: Request) -> Response:
    """Contexts of running apps, with cpu, memory and uptime of the whole tree."""
    await require_user(request, "apps.read")
    return ok_encoded(host_of(request).supervisor.contexts_json())


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
    host.apps.require(name)
    path = host.supervisor.log_path(name)
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


async def proxy(request: Request) -> Response:
    """Forward a request to a running app's own server, streaming both ways.

    Callers must be authenticated and allowed to see the app.  Host credentials
    (session cookies, Basic, tokens) are stripped before the request reaches the app.
    """
    host = host_of(request)
    name = request.path_params["name"]
    login = _login_redirect(request)
    if login is not None:
        return login
    _check_proxy_access(request, name)
    context = host.supervisor.context(name)
    if not context or context.get("status") != "running" or not context.get("port"):
        raise BoltError(errors.APP_NOT_RUNNING, f"App {name!r} is not running a server")
    path = request.path_params.get("path", "")
    url = f"http://127.0.0.1:{context['port']}/{path}"
    if request.url.query:
        url += "?" + request.url.query
    headers = [
        (k, v)
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in STRIPPED_REQUEST_HEADERS
    ]
    app_cookies = _app_cookies(request.headers.get("cookie", ""))
    if app_cookies:
        headers.append(("cookie", app_cookies))
    headers.append(("x-forwarded-prefix", f"/x/{name}"))
    user_token = _user_token_for_system_app(request, host, name)
    if user_token:
        headers.append(("x-bolt-user-token", user_token))
    client: httpx.AsyncClient = host.proxy_client
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    content = request.stream() if has_body else None  # a GET goes out without a chunked empty body
    upstream_request = client.build_request(request.method, url, headers=headers, content=content)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        raise BoltError(errors.APP_NOT_RUNNING, f"App {name!r} did not answer: {type(exc).__name__}") from exc
    response = StreamingResponse(
        upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
    )
    response.raw_headers = app_response_headers(upstream.headers.raw)
    return response


def app_response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An app's response headers as sent (repeated ones like Set-Cookie stay apart), without
    hop-by-hop headers and without cookies that would set or replace the host's own."""
    kept = []
    for key, value in raw:
        lowered = key.lower().decode("latin-1")
        if lowered in HOP_BY_HOP:
            continue
        if lowered == "set-cookie" and value.decode("latin-1").lstrip().startswith(HOST_COOKIE_PREFIXES):
            continue
        kept.append((key.lower(), value))
    return kept


def _login_redirect(request: Request) -> Response | None:
    """A logged-out browser opening a page goes to the dashboard's log-in, and comes back after.

    Only a page load (GET or HEAD accepting ``text/html``) by a caller with no credentials at
    all; API clients keep their 401, and a logged-in user without the right keeps the 403.
    """
    if request.method not in ("GET", "HEAD") or "text/html" not in request.headers.get("accept", ""):
        return None
    who = actor(request)
    if who.user is not None or who.app is not None:
        return None
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/?{urlencode({'next': back})}", status_code=303)


def _check_proxy_access(request: Request, name: str) -> None:
    who = actor(request)
    if who.user is None and who.app is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in to use apps through the host")
    if who.is_admin or who.app_system or who.app == name:
        return
    host = host_of(request)
    if who.user is None or name not in {a["name"] for a in host.visibility.visible_apps(who.user["name"])}:
        raise BoltError(errors.NO_START_RIGHT, f"You may not use app {name!r}")


def _user_token_for_system_app(request: Request, host: Any, name: str) -> str | None:
    """System apps act for the logged-in user, so they get a user token (never a password)."""
    app = host.apps.get(name)
    who = actor(request)
    if not app or not app.get("system") or who.user is None:
        return None
    if who.via == "token":
        return request.headers.get("x-bolt-user-token")
    if who.via == "session" and who.session_id:
        session = host.sessions.get(who.session_id)
        return host.sessions.issue_token(session) if session else None
    return None


def _app_cookies(header: str) -> str:
    """The cookie header without the host's own session cookies (core and store backends)."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and not part.strip().startswith(HOST_COOKIE_PREFIXES)
    ]
    return "; ".join(kept)


PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

routes = [
    Route("/api/apps/@live", live, methods=["GET"]),
    Route("/api/apps/start", start, methods=["POST"]),
    Route("/api/apps/stop", stop, methods=["POST"]),
    Route("/api/apps/restart", restart, methods=["POST"]),
    Route("/api/apps/{name}/logs", logs, methods=["GET"]),
    Route("/x/{name}/{path:path}", proxy, methods=PROXY_METHODS),
    Route("/x/{name}", proxy, methods=PROXY_METHODS),
]
