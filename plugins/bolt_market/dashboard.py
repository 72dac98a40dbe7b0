"""Dashboards (filled in later)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .envelope import failure, market_route


@market_route
async def dashboard(request: Request) -> Response:
    return failure(503, "not yet")


dashboard_app = dashboard
