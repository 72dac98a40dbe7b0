"""The indexed router picks the route Starlette's linear match picks, for every route of the live app.

The app is the real one (core and the four store backends).  For each route a path it
matches is made from its pattern (parameters filled in), then every method and the
WebSocket scope is asked of both: Starlette's loop over all routes (first full match, else
first partial one) and :class:`IndexedRouter`'s candidates.  Paths no route matches, and
trailing-slash variants, are asked too: the index hands them to Starlette's full loop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Match, Route, WebSocketRoute

from bolt_host import errors
from bolt_host.app import create_app
from bolt_host.testing import RunningHost, settings_for_tests
from bolt_host.web.route_index import ANY, IndexedRouter, RouteIndex, route_key

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SAMPLES = {"path": "a/b.txt", "int": "7", "float": "1.5", "uuid": "00000000-0000-0000-0000-000000000001"}


def linear_pick(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    """Starlette's Router.app choice: the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def sample_path(pattern: str) -> str:
    return re.sub(r"\{(\w+)(?::(\w+))?\}", lambda m: SAMPLES.get(m.group(2) or "", f"x-{m.group(1)}"), pattern)


def scopes_for(path: str) -> list[dict[str, Any]]:
    base = {"path": path, "root_path": "", "query_string": b"", "headers": []}
    return [{**base, "type": "http", "method": method} for method in METHODS] + [{**base, "type": "websocket"}]


def test_every_live_route_is_picked_as_starlette_picks_it(tmp_path: Path) -> None:
    app = create_app(settings_for_tests(tmp_path / "data"))
    assert isinstance(app.router, IndexedRouter)
    routes = list(app.routes)
    assert len(routes) > 100  # the store backends' routes are there
    index = RouteIndex(routes)
    paths = {sample_path(route.path) for route in routes if isinstance(route, Route | WebSocketRoute)}
    paths |= {path + "/" for path in list(paths)} | {path.rstrip("/") or "/" for path in list(paths)}
    paths |= {"/", "/nothing/here", "/api", "/api/", "/api/apps", "/api/apps/app-1/logs", "/x", "/x/", "/-/"}
    narrowed = 0
    for path in sorted(paths):
        candidates = index.candidates(path)
        narrowed += len(candidates) < len(routes)
        for scope in scopes_for(path):
            expected = linear_pick(routes, scope)
            assert linear_pick(candidates, scope) is expected, (path, scope["type"], scope.get("method"))
    assert narrowed > len(paths) * 0.9  # the index does narrow most lookups


def test_route_keys() -> None:
    def key(path: str) -> Any:
        return route_key(Route(path, lambda request: None))

    assert key("/api/apps/@live") == ("api", "apps")
    assert key("/api/apps/{name}") == ("api", "apps")
    assert key("/x/{name}/{path:path}") == ("x", ANY)
    assert key("/files/v{version}") == ("files", ANY)
    assert key("/dashboard") == ("dashboard", None)
    assert key("/{path:path}") is None
    assert key("/") is None


async def test_requests_reach_their_routes_through_the_app(bolt: RunningHost) -> None:
    live = await bolt.admin.get("/api/apps/@live")
    assert live.status_code == 200 and live.json()["code"] == 0
    missing = await bolt.admin.get("/api/apps/no-such-app")
    assert missing.json()["code"] == errors.APP_NOT_FOUND  # /api/apps/{name} answered: Bolt's "not installed"
    wrong_method = await bolt.admin.request("PATCH", "/api/apps/@live")
    assert wrong_method.status_code == 405
    unknown = await bolt.admin.get("/no/such/endpoint")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"].startswith("Could not find")


def test_a_parameter_in_the_second_segment_keeps_its_place_before_fixed_routes() -> None:
    def endpoint(request: Any) -> None:
        return None

    routes: list[BaseRoute] = [
        Route("/api/{kind}/list", endpoint, methods=["GET"]),
        Route("/api/apps/{name}", endpoint, methods=["POST"]),
        Route("/api/apps/list", endpoint, methods=["GET"]),
        Route("/{anything:path}", endpoint, methods=["PUT"]),
    ]
    index = RouteIndex(routes)
    for path in ("/api/apps/list", "/api/users/list", "/api/apps/x", "/api/apps", "/other/list", "/"):
        for scope in scopes_for(path):
            assert linear_pick(index.candidates(path), scope) is linear_pick(routes, scope), (path, scope)
