"""The ``/x/<app>/...`` proxy: HTTP requests to a running app's own server, streamed both ways.

Framing follows RFC 9112 section 6.3: when ``Transfer-Encoding`` is present it decides
the length, so a ``Content-Length`` next to it is dropped in both directions (forwarding
both is how requests get smuggled, and an app answering with both left clients waiting
for bytes that never came).  Forwarding headers are the host's alone: whatever
``X-Forwarded-*`` or ``Forwarded`` a client sent is removed before the host sets its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.lazy import lazy_module
from bolt_host.services.traffic import Lease
from bolt_host.web.auth import Actor, actor, host_of

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy_module("httpx")  # imported when first used

log = logging.getLogger("bolt_host.web")

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}
# Credentials meant for the host never reach an app through the proxy.
HOST_COOKIE_PREFIXES = ("bolt_", "JSESSIONID=")  # host and store-backend cookies
STRIPPED_REQUEST_HEADERS = {"cookie", "authorization", "x-bolt-app-token", "x-bolt-user-token", "x-csrf-token"}
# Set by the host only; a client's own would reach the app as if the host had vouched for it.
FORWARDING_HEADERS = {"forwarded", "x-real-ip"}
FORWARDING_PREFIX = "x-forwarded-"

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def proxy(request: Request) -> Response:
    """Forward a request to a running app's own server, streaming both ways.

    Callers must be authenticated and allowed to see the app.  Host credentials
    (session cookies, Basic, tokens) are stripped before the request reaches the app.
    """
    name = request.path_params["name"]
    login = _login_redirect(request)
    if login is not None:
        return login
    check_proxy_access(request, name)  # cookie writes: actor() applied the cross-origin check
    lease = lease_port(request, name)  # held until the answer's last byte: a drain waits for it
    upstream, lease = await _send(request, name, lease)
    done = BackgroundTask(_close, upstream, lease)
    response = StreamingResponse(_relay(upstream, name, lease), status_code=upstream.status_code, background=done)
    response.raw_headers = app_response_headers(upstream.headers.raw)
    return response


async def _send(request: Request, name: str, lease: Lease) -> tuple[httpx.Response, Lease]:
    """Send the request to the leased port: the app's answer (headers read, body streaming)
    and the lease it holds.  A port that refuses the connection is taken out of the rotation,
    and a request without a body (nothing of it reached the app) goes once more to another
    instance.  On failure the lease is released here."""
    host = host_of(request)
    supervisor = host.supervisor
    path = request.path_params.get("path", "")
    query = "?" + request.url.query if request.url.query else ""
    chunked = "transfer-encoding" in request.headers
    headers = app_request_headers(request, name, drop={"content-length"} if chunked else ())
    client: httpx.AsyncClient = host.proxy_client
    has_body = "content-length" in request.headers or chunked
    tried: set[int] = set()
    try:
        while True:
            content = request.stream() if has_body else None  # a GET goes out without a chunked empty body
            url = f"http://127.0.0.1:{lease.port}/{path}{query}"
            upstream_request = client.build_request(request.method, url, headers=headers, content=content)
            try:
                return await client.send(upstream_request, stream=True), lease
            except httpx.ConnectError:
                supervisor.refused(lease.port)
                tried.add(lease.port)
                retry = None if has_body else supervisor.lease(name)
                if retry is None or retry.port in tried:  # every instance refused
                    if retry is not None:
                        retry.release()
                    raise
                lease.release()
                lease = retry
    except httpx.TimeoutException as exc:
        lease.release()
        raise BoltError(
            errors.APP_GATEWAY_TIMEOUT, f"App {name!r} did not answer in time ({type(exc).__name__})"
        ) from exc
    except httpx.HTTPError as exc:
        lease.release()
        raise BoltError(errors.APP_BAD_GATEWAY, f"App {name!r} gave no valid answer ({type(exc).__name__})") from exc
    except BaseException:
        lease.release()
        raise


async def _relay(upstream: httpx.Response, name: str, lease: Lease) -> Any:
    """The app's body as it comes; an app that breaks off mid-body ends the client's connection
    too (re-raised), so a cut-off answer never looks complete."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("app %s broke off its answer through the proxy: %s", name, type(exc).__name__)
        raise
    finally:
        lease.release()


async def _close(upstream: httpx.Response, lease: Lease) -> None:
    try:
        await upstream.aclose()
    finally:
        lease.release()  # also when the body was never read (a client gone before it)


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


def lease_port(connection: HTTPConnection, name: str) -> Lease:
    """The port of the process serving ``name`` now, held until the caller releases it."""
    lease = host_of(connection).supervisor.lease(name)  # type: ignore[arg-type]
    if lease is None:
        raise BoltError(errors.APP_NOT_RUNNING, f"App {name!r} is not running a server")
    return lease


def app_request_headers(connection: HTTPConnection, name: str, drop: Collection[str] = ()) -> list[tuple[str, str]]:
    """The client's headers as the app may see them, then the host's forwarding headers."""
    named = _connection_tokens(connection.headers.getlist("connection"))
    headers = [
        (k, v)
        for k, v in connection.headers.items()
        if not _hop_or_host_only(k.lower(), named) and k.lower() not in STRIPPED_REQUEST_HEADERS
        and k.lower() not in drop
    ]
    app_cookies = _app_cookies(connection.headers.get("cookie", ""))
    if app_cookies:
        headers.append(("cookie", app_cookies))
    headers.extend(_forwarding_headers(connection, name))
    user_token = _user_token_for_system_app(connection, name)
    if user_token:
        headers.append(("x-bolt-user-token", user_token))
    return headers


def _forwarding_headers(connection: HTTPConnection, name: str) -> list[tuple[str, str]]:
    scheme = "https" if connection.url.scheme in ("https", "wss") else "http"
    found = [("x-forwarded-prefix", f"/x/{name}"), ("x-forwarded-proto", scheme)]
    if connection.headers.get("host"):
        found.append(("x-forwarded-host", connection.headers["host"]))
    if connection.client is not None:
        found.append(("x-forwarded-for", connection.client.host))
    return found


def app_response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An app's response headers as sent (repeated ones like Set-Cookie stay apart), without
    hop-by-hop headers, without a Content-Length beside Transfer-Encoding, and without
    cookies that would set or replace the host's own."""
    lowered = [(key.lower().decode("latin-1"), value) for key, value in raw]
    chunked = any(key == "transfer-encoding" for key, _ in lowered)
    named = _connection_tokens([value.decode("latin-1") for key, value in lowered if key == "connection"])
    kept = []
    for key, value in lowered:
        if key in HOP_BY_HOP or key in named or (chunked and key == "content-length"):
            continue
        if key == "set-cookie" and value.decode("latin-1").lstrip().startswith(HOST_COOKIE_PREFIXES):
            continue
        kept.append((key.encode("latin-1"), value))
    return kept


def _hop_or_host_only(key: str, named: set[str]) -> bool:
    return key in HOP_BY_HOP or key in named or key in FORWARDING_HEADERS or key.startswith(FORWARDING_PREFIX)


def _connection_tokens(values: list[str]) -> set[str]:
    """Header names a ``Connection`` header lists: hop-by-hop for this connection only."""
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def check_proxy_access(
    connection: HTTPConnection, name: str, same_origin: Callable[[Any, Actor], None] | None = None
) -> None:
    """A caller who may use app ``name``; ``same_origin`` checks cross-site use where ``actor``
    does not (a WebSocket handshake is a GET)."""
    who = actor(connection)  # type: ignore[arg-type]
    if who.user is None and who.app is None:
        raise BoltError(errors.NOT_LOGGED_IN, "Log in to use apps through the host")
    if same_origin is not None:
        same_origin(connection, who)
    if who.is_admin or who.app_system or who.app == name:
        return
    host = host_of(connection)  # type: ignore[arg-type]
    if who.user is None or name not in {a["name"] for a in host.visibility.visible_apps(who.user["name"])}:
        raise BoltError(errors.NO_START_RIGHT, f"You may not use app {name!r}")


def _user_token_for_system_app(connection: HTTPConnection, name: str) -> str | None:
    """System apps act for the logged-in user, so they get a user token (never a password)."""
    host = host_of(connection)  # type: ignore[arg-type]
    app = host.apps.get(name)
    who = actor(connection)  # type: ignore[arg-type]
    if not app or not app.get("system") or who.user is None:
        return None
    if who.via == "token":
        return connection.headers.get("x-bolt-user-token")
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


routes = [
    Route("/x/{name}/{path:path}", proxy, methods=PROXY_METHODS),
    Route("/x/{name}", proxy, methods=PROXY_METHODS),
]
