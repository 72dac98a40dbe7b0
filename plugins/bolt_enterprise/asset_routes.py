"""``/store/apis/v1/assets/{type}[/{provider}[/{name}[/{version}]]]``: store assets (admin).

As in the seed, an admin's HTTP Basic credentials suffice (no login needed);
the store session works too.  Lists page with ``?start=`` (default 0) and
``?count=`` (default 10); a start past the end or a count of 0 gives ``[]``,
a negative or non-numeric value is a 400.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .access import require_admin
from .assets import asset_type, check_type, non_negative, page, provider_of, store_asset
from .context import enterprise_of
from .replies import EnterpriseError, reply, store_endpoint

DEFAULT_COUNT = 10


def _matching(request: Request) -> list[dict[str, Any]]:
    params = request.path_params
    kind = check_type(params["type"])
    provider, name, version = params.get("provider"), params.get("name"), params.get("version")
    return [
        app for app in enterprise_of(request).host.apps.list()
        if asset_type(app) == kind
        and (provider is None or provider_of(app) == provider)
        and (name is None or app["name"] == name)
        and (version is None or app["version"] == version)
    ]


@store_endpoint
async def list_assets(request: Request) -> Response:
    """Assets of a type, optionally of one provider and one name; paged by ``start`` and ``count``."""
    await require_admin(request, "enterprise.assets.read")
    start = non_negative(request.query_params.get("start"), "start", 0)
    count = non_negative(request.query_params.get("count"), "count", DEFAULT_COUNT)
    base_url = enterprise_of(request).base_url
    return reply([store_asset(app, base_url) for app in page(_matching(request), start, count)])


@store_endpoint
async def get_asset(request: Request) -> Response:
    """One asset by type, provider, name and version."""
    await require_admin(request, "enterprise.assets.read")
    found = _matching(request)
    if not found:
        raise EnterpriseError(404, "no matching asset found")
    return reply(store_asset(found[0], enterprise_of(request).base_url))
