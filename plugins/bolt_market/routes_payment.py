"""Payment routes (filled in by the payment flow)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .envelope import failure, market_route


@market_route
async def _todo(request: Request) -> Response:
    return failure(503, "Payments are not available yet")


legacy_status = status = purchase = submit_signature = fetch_signature_callback = _todo
frontend_start = start_polling = resend_vc = states = _todo
