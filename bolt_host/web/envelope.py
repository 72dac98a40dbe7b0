"""Bolt's response envelope, request bodies, and trace ids.

Success: ``{"code": 0, "body": ...}``.  Failure: ``{"code": N, "error":
{"message": ...}, "errorUserTitle", "errorUserMessage", "errorTraceId"}``
with the HTTP status mirroring the outcome.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bolt_host import errors, jsondepth
from bolt_host.errors import BoltError

log = logging.getLogger("bolt_host.web")

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("bolt_trace_id", default="-")


def new_trace_id() -> str:
    return secrets.token_hex(8)


def ok(body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    content: dict[str, Any] = {"code": errors.OK}
    if body is not None:
        content["body"] = body
    return JSONResponse(content, status_code=status, headers=headers)


OK_HEAD, OK_TAIL = b'{"code":0,"body":', b"}"  # a success envelope around a body encoded elsewhere


def ok_enveloped(content: bytes, status: int = 200) -> Response:
    """Success whose JSON, envelope included (:data:`OK_HEAD` body :data:`OK_TAIL`), is already made:
    hot read paths encode parts once and join them with the envelope in one copy."""
    return Response(content, status_code=status, media_type="application/json")


def error_content(err: BoltError, trace_id: str) -> dict[str, Any]:
    error: dict[str, Any] = {"message": err.message}
    if err.details:
        error["details"] = err.details
    return {
        "code": err.code,
        "error": error,
        "errorUserTitle": err.user_title,
        "errorUserMessage": err.user_message,
        "errorTraceId": trace_id,
    }


def error_response(err: BoltError, status: int | None = None) -> JSONResponse:
    trace_id = trace_id_var.get()
    log.warning(
        "trace=%s error code=%s status=%s message=%s",
        trace_id,
        err.code,
        status or err.http_status,
        err.message,
    )
    headers = {"Retry-After": str(int(err.details["retryAfter"]))} if "retryAfter" in err.details else None
    return JSONResponse(error_content(err, trace_id), status_code=status or err.http_status, headers=headers)


async def bolt_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BoltError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = BoltError(errors.ENDPOINT_NOT_FOUND, f"Could not find specified endpoint '{request.url.path}'")
    elif exc.status_code == 405:
        err = BoltError(
            errors.ENDPOINT_NOT_FOUND,
            f"Method {request.method} is not allowed on '{request.url.path}'",
        )
    else:
        err = BoltError(errors.BAD_REQUEST, str(exc.detail))
    return error_response(err, status=exc.status_code)


async def read_body(request: Request) -> dict[str, Any]:
    """The request body as a dict: JSON object, form-encoded or empty.

    Anything else is a clear 400 in the envelope.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return _form_to_dict(raw.decode("utf-8", errors="replace"))
    try:
        data = jsondepth.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BoltError(errors.BAD_REQUEST, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BoltError(errors.BAD_REQUEST, "Request body must be a JSON object")
    return data


def _form_to_dict(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.endswith("[]"):
            result.setdefault(key[:-2], []).append(value)
        elif key in result:
            existing = result[key]
            result[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[key] = value
    return result


def require_str(body: dict[str, Any], key: str, code: int = errors.BAD_REQUEST) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BoltError(code, f"'{key}' is required and must be a non-empty string")
    return value


def flag(body: dict[str, Any], key: str, default: bool = False) -> bool:
    """A boolean field given as JSON true/false or the strings "true"/"false"."""
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    if value is None:
        return default
    raise BoltError(errors.BAD_REQUEST, f"'{key}' must be true or false")
