"""Kapua's shapes: ids, timestamps, error bodies and JSON answers.

Errors use Kapua's ``exceptionInfo`` body ``{type, httpErrorCode, message,
kapuaErrorCode, ...}`` (see ``commons-rest/errors``); device-management
failures are 500s with typed bodies that Kapua's OpenAPI does not list.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response


def new_id() -> str:
    """A Kapua-looking id: 8 random bytes, base64url without padding (e.g. ``WyczTs_GuDM``)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(8)).rstrip(b"=").decode()


def scope_id(number: int) -> str:
    """Kapua's short id of a numbered account: 1 -> ``AQ``, 2 -> ``Ag``."""
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def iso(moment: float | None = None) -> str:
    """``2019-11-15T11:27:24.857Z``"""
    when = datetime.now(UTC) if moment is None else datetime.fromtimestamp(moment, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ms(millis: Any) -> str:
    try:
        return iso(float(millis) / 1000.0)
    except (TypeError, ValueError):
        return iso()


def kapua_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def list_result(kind: str, items: list[dict[str, Any]], total: int | None = None, limit_exceeded: bool = False) -> dict:
    """A ``kapuaListResult``.  Kapua sends ``limitExceeded``; its OpenAPI requires the
    misspelt ``limitedExceeded``, so both are sent."""
    body: dict[str, Any] = {
        "type": kind,
        "limitExceeded": limit_exceeded,
        "limitedExceeded": limit_exceeded,
        "size": len(items),
        "items": items,
    }
    if total is not None:
        body["totalCount"] = total
    return body


class KapuaError(Exception):
    """An error answered in Kapua's body.  ``extra`` adds the typed fields."""

    def __init__(
        self, status: int, code: str, message: str, kind: str = "kapuaErrorInfo",
        headers: dict[str, str] | None = None, **extra: Any,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.code = code
        self.message = message
        self.kind = kind
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "httpErrorCode": self.status,
            "message": self.message,
            "kapuaErrorCode": self.code,
            **self.extra,
        }

    def response(self) -> Response:
        response = kapua_json(self.body(), self.status)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        response.headers.update(self.headers)
        return response


def unauthenticated(message: str = "No valid access token: log in at /v1/authentication/user") -> KapuaError:
    return KapuaError(401, "UNAUTHENTICATED", message, kind="unauthenticatedExceptionInfo")


def unauthorized(domain: str, action: str, scope: str) -> KapuaError:
    return KapuaError(
        403,
        "SUBJECT_UNAUTHORIZED",
        f"The current subject has not the required permission {domain}:{action}:{scope} to perform this operation",
        kind="subjectUnauthorizedExceptionInfo",
        permission=f"{domain}:{action}:{scope}",
    )


def not_found(entity_type: str, entity_id: str) -> KapuaError:
    return KapuaError(
        404,
        "ENTITY_NOT_FOUND",
        f"The entity of type {entity_type} with id/name {entity_id} was not found.",
        kind="entityNotFoundExceptionInfo",
        entityType=entity_type,
        entityId=entity_id,
    )


def optimistic_lock(entity_type: str, entity_id: str) -> KapuaError:
    return KapuaError(
        409,
        "OPTIMISTIC_LOCKING",
        f"The {entity_type} {entity_id} was changed by someone else: read it again (its optlock) and retry.",
        kind="kapuaErrorInfo",
    )


def method_not_allowed(method: str, path: str, allowed: list[str]) -> KapuaError:
    return KapuaError(405, "METHOD_NOT_ALLOWED", f"The method {method} is not allowed on {path}.",
                      headers={"Allow": ", ".join(allowed)})


def unknown_path(path: str) -> KapuaError:
    return KapuaError(404, "NOT_FOUND", f"No resource at {path}.")


def illegal_argument(name: str, value: Any, why: str = "") -> KapuaError:
    shown = "" if value is None else str(value)[:200]
    message = f"An illegal value was provided for the argument {name}: {shown}."
    if why:
        message += f" {why}"
    return KapuaError(
        400,
        "ILLEGAL_ARGUMENT",
        message,
        kind="illegalArgumentExceptionInfo",
        argumentName=name,
        argumentValue=shown,
    )


def illegal_null(name: str) -> KapuaError:
    return KapuaError(
        400,
        "ILLEGAL_NULL_ARGUMENT",
        f"An illegal null value was provided for the argument {name}.",
        kind="illegalNullArgumentExceptionInfo",
        argumentName=name,
    )


def not_connected(device_id: str, client_id: str) -> KapuaError:
    return KapuaError(
        409,
        "DEVICE_NOT_CONNECTED",
        f"The device {client_id} ({device_id}) is not connected: the request cannot be sent.",
        kind="deviceNotConnectedExceptionInfo",
        deviceId=device_id,
    )


def timed_out(timeout_ms: int) -> KapuaError:
    return KapuaError(
        500,
        "TIMEOUT",
        f"The device did not answer within the timeout of {timeout_ms} ms.",
        kind="deviceManagementTimeoutExceptionInfo",
        timeout=timeout_ms,
    )


def send_failed(reason: str) -> KapuaError:
    return KapuaError(
        500,
        "SEND_ERROR",
        f"The request could not be sent to the device: {reason}",
        kind="deviceManagementSendExceptionInfo",
    )


def device_refused(code: int, message: str) -> KapuaError:
    return KapuaError(
        500,
        "RESPONSE_CODE",
        f"The device answered with an error: {code} {message}".rstrip(),
        kind="deviceManagementResponseCodeExceptionInfo",
        responseCode=code,
        errorMessage=message,
    )


def user_id(name: str) -> str:
    """A kapuaId for a host user name (user names may hold characters ids cannot)."""
    return base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()
