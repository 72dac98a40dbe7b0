"""The start every Market write handler shares: who calls (checked first, failing closed), then the body."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from bolt_host.plugin import host_of

from .envelope import read_json
from .identity import MarketUser, require_market_admin, require_market_user
from .market import Market, market_of


async def market_call(
    request: Request, action: str, resource: str | None = None, *, admin: bool = False, body_required: bool = True
) -> tuple[MarketUser, dict[str, Any], Market]:
    """``(caller, JSON body, market)``: the caller is checked before the body is read."""
    check = require_market_admin if admin else require_market_user
    user = await check(request, action, resource)
    body = await read_json(request, required=body_required)
    return user, body, market_of(host_of(request))
