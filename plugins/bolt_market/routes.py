"""Every Market route, under ``/app-store/api/v2``, plus a catch-all answering 404/405 in the envelope."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from bolt_host.plugin import lazy_endpoint

from .envelope import PREFIX, failure


def _r(path: str, handler: str, method: str) -> Route:
    """``handler`` is ``module.function`` in this package: the module (with the Market's operations,
    payments and views behind it) is imported at the first request for one of its routes."""
    module, _, function = handler.rpartition(".")
    return Route(PREFIX + path, lazy_endpoint(f"{__package__}.{module}:{function}"), methods=[method])


def _table() -> list[Route]:
    return [
        _r("/market/hash", "routes_market.market_hash", "GET"),
        _r("/market/data", "routes_market.market_data", "GET"),
        _r("/market/state", "routes_market.market_state", "GET"),
        _r("/market/statesimple", "routes_market.market_state_simple", "GET"),
        _r("/market/debug-memory", "routes_settings.debug_memory", "GET"),
        _r("/apps", "routes_market.apps_info", "POST"),
        _r("/apps/version-history", "routes_market.version_history", "POST"),
        _r("/apps/upload", "routes_market.upload", "POST"),
        _r("/apps/open", "routes_ops.open_app", "POST"),
        _r("/apps/resume", "routes_ops.resume", "POST"),
        _r("/apps/stop", "routes_ops.stop", "POST"),
        _r("/apps/{id}/payment-status", "routes_payment.legacy_status", "GET"),
        _r("/apps/{id}/package", "routes_market.app_package", "GET"),
        _r("/apps/{id}/config", "routes_market.update_app_config", "PUT"),
        _r("/apps/{id}/install", "routes_ops.install", "POST"),
        _r("/apps/{id}/install", "routes_ops.cancel", "DELETE"),
        _r("/apps/{id}/clone", "routes_ops.clone", "POST"),
        _r("/apps/{id}/upgrade", "routes_ops.upgrade", "PUT"),
        _r("/apps/{id}", "routes_ops.uninstall", "DELETE"),
        _r("/local-apps/delete", "routes_market.delete_local_app", "DELETE"),
        _r("/settings/system-status", "routes_settings.system_status", "GET"),
        _r("/settings/market-source", "routes_settings.list_sources", "GET"),
        _r("/settings/market-source", "routes_settings.add_source", "POST"),
        _r("/settings/market-source/{id}", "routes_settings.delete_source", "DELETE"),
        _r("/settings/market-settings", "routes_settings.get_settings", "GET"),
        _r("/settings/market-settings", "routes_settings.put_settings", "PUT"),
        _r("/logs", "routes_settings.logs", "GET"),
        _r("/runtime/state", "routes_settings.runtime_state", "GET"),
        _r("/runtime/dashboard", "dashboard.dashboard", "GET"),
        _r("/runtime/dashboard-app", "dashboard.dashboard_app", "GET"),
        _r("/diagnostic", "routes_settings.diagnostic", "GET"),
        _r("/reload", "routes_settings.reload", "POST"),
        _r("/cleanup", "routes_settings.cleanup", "POST"),
        _r("/sources/{source}/apps/{id}/payment-status", "routes_payment.status", "GET"),
        _r("/sources/{source}/apps/{id}/purchase", "routes_payment.purchase", "POST"),
        _r("/sources/{source}/apps/{id}/restore-purchase", "routes_payment.restore_purchase", "POST"),
        _r("/payment/submit-signature", "routes_payment.submit_signature", "POST"),
        _r("/payment/fetch-signature-callback", "routes_payment.fetch_signature_callback", "POST"),
        _r("/payment/frontend-start", "routes_payment.frontend_start", "POST"),
        _r("/payment/start-polling", "routes_payment.start_polling", "POST"),
        _r("/payment/resend-vc", "routes_payment.resend_vc", "POST"),
        _r("/payment/states", "routes_payment.states", "GET"),
    ]


def routes() -> list[Route]:
    table = _table()

    async def not_found(request: Request) -> Response:
        if any(route.matches(request.scope)[0] == Match.PARTIAL for route in table):
            return failure(405, f"Method {request.method} is not allowed on {request.url.path}")
        return failure(404, f"Not found: {request.url.path}")

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return [*table, Route(PREFIX + "/{rest:path}", not_found, methods=methods)]
