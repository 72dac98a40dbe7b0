"""The Market envelope ``{success, message, data}`` on every answer, errors included.

Handlers raise :class:`MarketError` (or let a host ``BoltError`` through); the
:func:`market_route` wrapper turns either into the envelope with the HTTP
status the Olares Market uses (400, 401, 403, 404, 413, 422, 500, 503).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, overload

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bolt_host.plugin import BoltError, ErrorFormat, PluginError, errors, read_json_body

PREFIX = "/app-store/api/v2"
MAX_JSON_BYTES = 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]

# Host error codes whose meaning is "who are you" or "not allowed"; the rest map by HTTP class.
_AUTH_CODES = {
    errors.NOT_LOGGED_IN,
    errors.LOGIN_FAILED,
    errors.CREDENTIALS_MISSING,
    errors.APP_TOKEN_UNKNOWN,
    errors.APP_TOKEN_MISSING,
}
_FORBIDDEN_CODES = {errors.NO_ADMIN_RIGHT, errors.CSRF_FAILED, errors.NOT_SYSTEM_APP, errors.NO_START_RIGHT}


class MarketError(PluginError):
    """A refused request: ``status`` and ``message`` go into the envelope, ``data`` too when given."""

    def __init__(self, status: int, message: str, data: Any = None) -> None:
        super().__init__(status, message, data)


def reply_content(data: Any, message: str, success: bool) -> dict[str, Any]:
    # The Go service omits a nil data field (``omitempty``); so do we.
    content: dict[str, Any] = {"success": success, "message": message}
    if data is not None:
        content["data"] = data
    return content


def reply(data: Any = None, message: str = "OK", status: int = 200, success: bool = True) -> JSONResponse:
    return JSONResponse(reply_content(data, message, success), status_code=status)


def failure(status: int, message: str, data: Any = None) -> JSONResponse:
    return reply(data, message, status=status, success=False)


def host_error_body(status: int, err: BoltError) -> dict[str, Any]:
    """An error the host answers before the plugin runs (413 body cap, 500 safety net), as an envelope."""
    return {"success": False, "message": err.message}


def status_for_bolt_error(err: BoltError) -> int:
    if err.code in _AUTH_CODES:
        return 401
    if err.code in _FORBIDDEN_CODES:
        return 403
    if err.code == errors.PAYLOAD_TOO_LARGE:
        return 413
    if err.code == errors.RATE_LIMITED:
        return 429
    status = err.http_status
    if status == 404:
        return 404
    return 500 if status >= 500 else 400


MARKET = ErrorFormat(
    lambda status, message, data: reply_content(data, message, success=False),
    "market",
    status_for=status_for_bolt_error,
    internal_error="Internal server error",
)


def market_route(handler: Handler) -> Handler:
    """Wrap ``handler`` so that every outcome, failures included, is a Market envelope."""
    return MARKET.endpoint(handler)


async def read_json(request: Request, required: bool = False) -> dict[str, Any]:
    """The JSON object in the body ({} when empty and not ``required``); 400 otherwise."""
    body = await read_json_body(request, MAX_JSON_BYTES, MarketError)
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise MarketError(400, "Invalid request body: a JSON object is required")
    return body


@overload
def text_field(body: dict[str, Any], *names: str, required: Literal[True] = True, limit: int = 256) -> str: ...
@overload
def text_field(body: dict[str, Any], *names: str, required: bool, limit: int = 256) -> str | None: ...
def text_field(body: dict[str, Any], *names: str, required: bool = True, limit: int = 256) -> str | None:
    """The first of ``names`` present in ``body`` as a non-empty string (several spellings allowed)."""
    for name in names:
        value = body.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise MarketError(400, f"'{name}' must be a string of at most {limit} characters")
        return value
    if required:
        raise MarketError(400, f"Missing required field: {names[0]}")
    return None


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise MarketError(400, f"'{name}' must be true or false")


def int_query(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MarketError(400, f"'{name}' must be an integer") from None
    if value < low:
        raise MarketError(400, f"'{name}' must be at least {low}")
    return min(value, high) if high is not None else value


def float_query(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise MarketError(400, f"'{name}' must be a Unix timestamp") from None
