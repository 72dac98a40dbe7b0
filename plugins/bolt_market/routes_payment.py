"""Payment routes (see :mod:`payments` for the state machine).

``X-Forwarded-Host`` is required where the real service requires it (to build
the LarePass callback URLs): 400 ``"X-Forwarded-Host header is required"``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import host_of

from .calls import market_call
from .envelope import MarketError, bool_field, market_route, reply, text_field
from .identity import MarketUser, require_market_user
from .market import Market, market_of
from .payments import frontend_status, row_status

MAX_FRONTEND_DATA = 8 * 1024


def _forwarded_host(request: Request) -> str:
    value = request.headers.get("x-forwarded-host", "").strip()
    if not value:
        raise MarketError(400, "X-Forwarded-Host header is required")
    return value


@market_route
async def status(request: Request) -> Response:
    _forwarded_host(request)
    user = await require_market_user(request, "market.payment")
    market = market_of(host_of(request))
    source = request.path_params["source"]
    entry = await market.payments.entry(source, request.path_params["id"])
    return reply(market.payments.status(user.name, source, entry), "App payment status retrieved successfully")


@market_route
async def legacy_status(request: Request) -> Response:
    _forwarded_host(request)
    user = await require_market_user(request, "market.payment")
    market = market_of(host_of(request))
    source, entry = await market.payments.find_any_source(request.path_params["id"])
    return reply(market.payments.status(user.name, source, entry), "App payment status retrieved successfully")


@market_route
async def purchase(request: Request) -> Response:
    forwarded = _forwarded_host(request)
    user = await require_market_user(request, "market.purchase")
    market = market_of(host_of(request))
    source = request.path_params["source"]
    entry = await market.payments.entry(source, request.path_params["id"])
    return reply(await market.payments.purchase(user.name, source, entry, forwarded), "OK")


@market_route
async def restore_purchase(request: Request) -> Response:
    _forwarded_host(request)
    user, body, market = await market_call(request, "market.purchase", body_required=False)
    source = request.path_params["source"]
    entry = await market.payments.entry(source, request.path_params["id"])
    token = text_field(body, "receipt", "vc", required=False, limit=16384)
    await market.payments.restore(user.name, source, entry, token)
    return reply(market.payments.status(user.name, source, entry), "Purchase restored successfully")


def _signed_answer(row: dict[str, Any], user: str, token: str) -> dict[str, Any]:
    sign_body = {k: row.get(k) for k in ("user", "app_id", "source", "product_id")}
    return {"jws": token, "sign_body": json.dumps(sign_body, sort_keys=True), "user": user,
            "status": row_status(row)}


@market_route
async def submit_signature(request: Request) -> Response:
    _forwarded_host(request)
    user, body, market = await market_call(request, "market.payment")
    token = text_field(body, "jws", limit=16384)
    row = market.payments.accept_signature(user.name, token)
    return reply(_signed_answer(row, user.name, token), "Signature submission processed successfully")


@market_route
async def fetch_signature_callback(request: Request) -> Response:
    user, body, market = await market_call(request, "market.payment")
    token = text_field(body, "jws", required=False, limit=16384)
    if not bool_field(body, "signed") or not token:
        market.payments.decline_signature(user.name, token)
        return reply({"status": "signature_no_record", "user": user.name, "jws_present": bool(token)},
                     "Fetch signature callback processed")
    row = market.payments.accept_signature(user.name, token)
    answer = _signed_answer(row, user.name, token)
    return reply({"status": answer["status"], "user": user.name, "jws_present": True},
                 "Fetch signature callback processed")


async def _payment_call(request: Request) -> tuple[MarketUser, dict[str, Any], Market, str, str]:
    """``(caller, body, market, source, app id)`` for the payment calls the frontend makes."""
    _forwarded_host(request)
    user, body, market = await market_call(request, "market.payment")
    source, app_id = text_field(body, "source_id", "source"), text_field(body, "app_id")
    return user, body, market, source or "", app_id or ""


@market_route
async def frontend_start(request: Request) -> Response:
    user, body, market, source, app_id = await _payment_call(request)
    data = body.get("frontend_data")
    if data is not None and len(json.dumps(data)) > MAX_FRONTEND_DATA:
        raise MarketError(400, "frontend_data is limited to 8 KiB")
    market.payments.frontend_started(user.name, source, app_id, body.get("product_id"), data)
    return reply({"app_id": app_id, "source": source, "user": user.name, "frontend_data": data},
                 "Frontend payment state updated")


@market_route
async def start_polling(request: Request) -> Response:
    user, body, market, source, app_id = await _payment_call(request)
    tx_hash = text_field(body, "tx_hash", "txHash")
    receipt = text_field(body, "receipt", "vc", required=False, limit=16384)
    product_id = body.get("product_id")
    entry = await market.payments.entry(source, app_id)
    market.payments.signed_row(user.name, source, app_id, product_id)
    row = await market.payments.confirm(user.name, source, entry, tx_hash, receipt)
    current = frontend_status(row, entry)
    data = {"success": current == "purchased", "message": row.get("error") or current, "status": current}
    return reply(data, "Payment polling started successfully")


@market_route
async def resend_vc(request: Request) -> Response:
    user, body, market = await market_call(request, "market.payment")
    product_id = text_field(body, "product_id", "productId")
    await market.payments.resend(user.name, product_id)
    return reply({"product_id": product_id}, "VC resent to LarePass successfully")


@market_route
async def states(request: Request) -> Response:
    user = await require_market_user(request, "market.payment")
    market = market_of(host_of(request))
    rows = market.payments.records(None if user.is_admin else user.name)
    return reply({"states": rows, "total": len(rows)}, "Payment states retrieved successfully")
