"""Route lookup by the path's first two segments instead of trying every route in turn.

Starlette's router tries each route's regular expression in order until one matches: with
the four store backends that is 149 routes, so a request to a backend's path (or to
``/api/apps/{name}``, which comes after all of them) ran a hundred matches or more before its
own.  :class:`IndexedRouter` first narrows the routes to those that can match the request's
first two path segments (a route's literal beginning says which), keeping their order, and
runs Starlette's own loop over them: the first full match, else the first partial one (405),
is the route Starlette's full loop would pick, since a route left out cannot match at all.
When none matches, Starlette's full loop runs (its trailing-slash redirect and its 404).
"""

from __future__ import annotations

from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

ANY = object()  # a route's second segment is a parameter: any second segment may match


def route_key(route: BaseRoute) -> tuple[str, Any] | None:
    """The first two path segments every path the route matches begins with (``ANY`` for a
    second one it does not fix, None for the second of a one-segment path); None when the
    first one is not fixed either (the route is a candidate for every path)."""
    if type(route) not in (Route, WebSocketRoute):
        return None  # mounts, hosts, others: matched as Starlette matches them, always tried
    path: str = route.path  # type: ignore[attr-defined]
    if "{" not in path:  # an exact path
        segments = path.split("/")[1:]
        return (segments[0], segments[1] if len(segments) > 1 else None) if segments[0] else None
    fixed = path[: path.index("{")].split("/")[1:-1]  # segments complete before the first parameter
    if not fixed:
        return None
    return (fixed[0], fixed[1] if len(fixed) > 1 else ANY)


def request_key(path: str) -> tuple[str, str | None]:
    segments = path.split("/", 3)
    return segments[1] if len(segments) > 1 else "", segments[2] if len(segments) > 2 else None


class RouteIndex:
    """The routes that may match each first-two-segment key, in their original order."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.size = len(routes)
        keyed = [(index, route, route_key(route)) for index, route in enumerate(routes)]
        self._everywhere = [route for _, route, key in keyed if key is None]
        self._by_key: dict[tuple[str, Any], list[BaseRoute]] = {}
        for key in {key for _, _, key in keyed if key is not None}:
            first, second = key
            self._by_key[key] = [
                route
                for _, route, other in keyed
                if other is None or other == key or (second is not None and other == (first, ANY))
            ]

    def candidates(self, path: str) -> list[BaseRoute]:
        first, second = request_key(path)
        found = self._by_key.get((first, second))
        if found is None and second is not None:
            found = self._by_key.get((first, ANY))
        return found if found is not None else self._everywhere


class IndexedRouter(Router):
    """Starlette's router, trying only the routes that can match (see the module docstring)."""

    _index: RouteIndex | None = None

    def index(self) -> RouteIndex:
        if self._index is None or self._index.size != len(self.routes):
            self._index = RouteIndex(list(self.routes))
        return self._index

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await super().app(scope, receive, send)
            return
        scope.setdefault("router", self)
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.index().candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = route, child_scope
        if partial is not None:
            scope["route"] = partial[0]
            scope.update(partial[1])
            await partial[0].handle(scope, receive, send)
            return
        await super().app(scope, receive, send)  # Starlette's own loop: its redirect and its 404
