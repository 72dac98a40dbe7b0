"""``create_app(settings)``: the Starlette app; its lifespan starts and stops the Host."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from bolt_host.config import Settings
from bolt_host.errors import BoltError
from bolt_host.host import Host
from bolt_host.plugins import PluginLoadError
from bolt_host.web import core_routes
from bolt_host.web.connections import guarded_protocol, guarded_websocket
from bolt_host.web.envelope import bolt_error_handler, http_error_handler
from bolt_host.web.meta import iter_endpoints
from bolt_host.web.middleware import BodyLimitMiddleware, HostHeaderMiddleware, RequestContextMiddleware
from bolt_host.web.route_index import IndexedRouter

CORE = "bolt_host"


def create_app(
    settings: Settings,
    plugins: Iterable[object] = (),
    host: Host | None = None,
    on_ready: Callable[[Host], None] | None = None,
) -> Starlette:
    """Build the host, collect core and plugin routes, and wrap them in the middleware."""
    host = host or Host(settings, plugins=plugins)
    routes = collect_routes(host)
    host.error_formats = collect_error_formats(host)
    host.large_body_prefixes.extend(collect_upload_paths(host))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await host.start()
        if on_ready is not None:
            on_ready(host)
        try:
            yield
        finally:
            await host.stop()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware, format_for=host.error_format_for),
            Middleware(HostHeaderMiddleware, names=host.settings.host_names, format_for=host.error_format_for),
            Middleware(BodyLimitMiddleware, limit_for=host.body_limit_for, format_for=host.error_format_for),
        ],
        exception_handlers={BoltError: bolt_error_handler, HTTPException: http_error_handler},
        lifespan=lifespan,
    )
    app.router = IndexedRouter(routes, lifespan=lifespan)  # Starlette's, trying only the routes that can match
    app.state.host = host
    host.app = app
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn must serve the app (``bolt-host serve`` and the tests' live servers).

    uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default: any local process could
    then name its own client address, and the login throttle keys on it.  Forwarded
    headers count only with ``BOLT_TRUST_PROXY``, behind a proxy that sets them.  Slow
    clients are bounded by :mod:`bolt_host.web.connections`.
    """
    protocol = guarded_protocol(
        settings.header_timeout_seconds, settings.max_connections_per_ip, settings.body_idle_timeout_seconds
    )
    return {
        "proxy_headers": settings.trust_proxy,
        "server_header": False,
        "http": protocol,
        "ws": guarded_websocket,
        "ws_max_size": settings.max_ws_message_bytes,
    }


def collect_routes(host: Host) -> list[BaseRoute]:
    """Core routes first, then each plugin's; a path+method claimed twice is an error."""
    owners: dict[tuple[str, str], str] = {}
    routes: list[BaseRoute] = core_routes()
    _claim(owners, routes, CORE)
    for plugin, contributed in reversed(host.hooks.each_now("register_routes")):  # in registration order
        contributed = list(contributed or [])
        _claim(owners, contributed, plugin)
        routes.extend(contributed)
    return routes


def collect_upload_paths(host: Host) -> list[str]:
    """Every plugin's ``register_upload_paths`` prefixes; each must be an absolute path prefix."""
    prefixes: list[str] = []
    for plugin, contributed in reversed(host.hooks.each_now("register_upload_paths")):
        for prefix in contributed or []:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise PluginLoadError(f"plugin {plugin!r}: register_upload_paths must return \"/path/prefix\" strings")
            prefixes.append(prefix)
    return prefixes


def collect_error_formats(host: Host) -> list[tuple[str, Any]]:
    """Every plugin's ``(prefix, render)`` claim, longest prefix first; a prefix claimed twice is an error."""
    owners: dict[str, str] = {}
    formats: list[tuple[str, Any]] = []
    for plugin, contributed in reversed(host.hooks.each_now("register_error_formats")):
        for prefix, render in contributed or []:
            if not isinstance(prefix, str) or not prefix.startswith("/") or not callable(render):
                raise PluginLoadError(f"plugin {plugin!r}: register_error_formats must return "
                                      "(\"/path/prefix\", render) pairs")
            if prefix in owners:
                raise PluginLoadError(f"error format for {prefix} is claimed by both {owners[prefix]!r} "
                                      f"and {plugin!r}")
            owners[prefix] = plugin
            formats.append((prefix, render))
    return sorted(formats, key=lambda item: len(item[0]), reverse=True)


def _claim(owners: dict[tuple[str, str], str], routes: list[Any], owner: str) -> None:
    for path, method, _endpoint in iter_endpoints(routes):
        key = (path, method)
        if key in owners and owners[key] != owner:
            raise PluginLoadError(f"route {method} {path} is registered by both {owners[key]!r} and {owner!r}")
        owners[key] = owner

