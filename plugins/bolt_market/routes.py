"""Every Market route, under ``/app-store/api/v2``, plus a catch-all answering 404/405 in the envelope."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from . import routes_market as data
from . import routes_ops as ops
from . import routes_settings as settings
from .envelope import PREFIX, Handler, failure


def _r(path: str, endpoint: Handler, method: str) -> Route:
    return Route(PREFIX + path, endpoint, methods=[method])


def _table() -> list[Route]:
    from . import dashboard
    from . import routes_payment as pay

    return [
        _r("/market/hash", data.market_hash, "GET"),
        _r("/market/data", data.market_data, "GET"),
        _r("/market/state", data.market_state, "GET"),
        _r("/market/statesimple", data.market_state_simple, "GET"),
        _r("/market/debug-memory", settings.debug_memory, "GET"),
        _r("/apps", data.apps_info, "POST"),
        _r("/apps/version-history", data.version_history, "POST"),
        _r("/apps/upload", data.upload, "POST"),
        _r("/apps/open", ops.open_app, "POST"),
        _r("/apps/resume", ops.resume, "POST"),
        _r("/apps/stop", ops.stop, "POST"),
        _r("/apps/{id}/payment-status", pay.legacy_status, "GET"),
        _r("/apps/{id}/package", data.app_package, "GET"),
        _r("/apps/{id}/config", data.update_app_config, "PUT"),
        _r("/apps/{id}/install", ops.install, "POST"),
        _r("/apps/{id}/install", ops.cancel, "DELETE"),
        _r("/apps/{id}/clone", ops.clone, "POST"),
        _r("/apps/{id}/upgrade", ops.upgrade, "PUT"),
        _r("/apps/{id}", ops.uninstall, "DELETE"),
        _r("/local-apps/delete", data.delete_local_app, "DELETE"),
        _r("/settings/system-status", settings.system_status, "GET"),
        _r("/settings/market-source", settings.list_sources, "GET"),
        _r("/settings/market-source", settings.add_source, "POST"),
        _r("/settings/market-source/{id}", settings.delete_source, "DELETE"),
        _r("/settings/market-settings", settings.get_settings, "GET"),
        _r("/settings/market-settings", settings.put_settings, "PUT"),
        _r("/logs", settings.logs, "GET"),
        _r("/runtime/state", settings.runtime_state, "GET"),
        _r("/runtime/dashboard", dashboard.dashboard, "GET"),
        _r("/runtime/dashboard-app", dashboard.dashboard_app, "GET"),
        _r("/diagnostic", settings.diagnostic, "GET"),
        _r("/reload", settings.reload, "POST"),
        _r("/cleanup", settings.cleanup, "POST"),
        _r("/sources/{source}/apps/{id}/payment-status", pay.status, "GET"),
        _r("/sources/{source}/apps/{id}/purchase", pay.purchase, "POST"),
        _r("/sources/{source}/apps/{id}/restore-purchase", pay.restore_purchase, "POST"),
        _r("/payment/submit-signature", pay.submit_signature, "POST"),
        _r("/payment/fetch-signature-callback", pay.fetch_signature_callback, "POST"),
        _r("/payment/frontend-start", pay.frontend_start, "POST"),
        _r("/payment/start-polling", pay.start_polling, "POST"),
        _r("/payment/resend-vc", pay.resend_vc, "POST"),
        _r("/payment/states", pay.states, "GET"),
    ]


def routes() -> list[Route]:
    table = _table()

    async def not_found(request: Request) -> Response:
        if any(route.matches(request.scope)[0] == Match.PARTIAL for route in table):
            return failure(405, f"Method {request.method} is not allowed on {request.url.path}")
        return failure(404, f"Not found: {request.url.path}")

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return [*table, Route(PREFIX + "/{rest:path}", not_found, methods=methods)]
