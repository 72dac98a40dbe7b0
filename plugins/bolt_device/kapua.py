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

from bolt_host.plugin import BoltError, ErrorFormat, PluginError


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


class KapuaError(PluginError):
    """An error answered in Kapua's body.  ``extra`` adds the typed fields."""

    def __init__(
        self, status: int, code: str, message: str, kind: str = "kapuaErrorInfo",
        headers: dict[str, str] | None = None, **extra: Any,
    ) -> None:
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
        super().__init__(status, message, {"type": kind, "kapuaErrorCode": code, **extra}, dict(headers or {}))
        self.code = code

    @classmethod
    def from_bolt(cls, err: BoltError) -> KapuaError:
        """A core error (bad body, no rights...) as Kapua would answer it."""
        status = err.http_status if 400 <= err.http_status < 500 else 500
        return cls(status, "ILLEGAL_ARGUMENT" if status == 400 else "INTERNAL_ERROR", err.message)

    def body(self) -> dict[str, Any]:
        return kapua_body(self.status, self.message, self.data)

    def response(self) -> Response:
        return KAPUA.failure(self.status, self.message, self.data, self.headers)


def kapua_body(status: int, message: str, data: dict[str, Any]) -> dict[str, Any]:
    """``{type, httpErrorCode, message, kapuaErrorCode, ...typed fields}``."""
    fields = dict(data)
    kind, code = fields.pop("type"), fields.pop("kapuaErrorCode")
    return {"type": kind, "httpErrorCode": status, "message": message, "kapuaErrorCode": code, **fields}


KAPUA = ErrorFormat(kapua_body, "kapua", from_bolt=KapuaError.from_bolt)


# Kapua's error codes: (HTTP status, the ``type`` of its error body).
_ERRORS = {
    "UNAUTHENTICATED": (401, "unauthenticatedExceptionInfo"),
    "SUBJECT_UNAUTHORIZED": (403, "subjectUnauthorizedExceptionInfo"),
    "ENTITY_NOT_FOUND": (404, "entityNotFoundExceptionInfo"),
    "ILLEGAL_ARGUMENT": (400, "illegalArgumentExceptionInfo"),
    "ILLEGAL_NULL_ARGUMENT": (400, "illegalNullArgumentExceptionInfo"),
    "DEVICE_NOT_CONNECTED": (409, "deviceNotConnectedExceptionInfo"),
    "TIMEOUT": (500, "deviceManagementTimeoutExceptionInfo"),
    "SEND_ERROR": (500, "deviceManagementSendExceptionInfo"),
    "RESPONSE_CODE": (500, "deviceManagementResponseCodeExceptionInfo"),
}


def kapua_error(code: str, message: str, **extra: Any) -> KapuaError:
    status, kind = _ERRORS[code]
    return KapuaError(status, code, message, kind=kind, **extra)


def unauthenticated(message: str = "No valid access token: log in at /v1/authentication/user") -> KapuaError:
    return kapua_error("UNAUTHENTICATED", message)


def unauthorized(domain: str, action: str, scope: str) -> KapuaError:
    permission = f"{domain}:{action}:{scope}"
    message = f"The current subject has not the required permission {permission} to perform this operation"
    return kapua_error("SUBJECT_UNAUTHORIZED", message, permission=permission)


def not_found(entity_type: str, entity_id: str) -> KapuaError:
    message = f"The entity of type {entity_type} with id/name {entity_id} was not found."
    return kapua_error("ENTITY_NOT_FOUND", message, entityType=entity_type, entityId=entity_id)


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
    return kapua_error("ILLEGAL_ARGUMENT", message, argumentName=name, argumentValue=shown)


def illegal_null(name: str) -> KapuaError:
    message = f"An illegal null value was provided for the argument {name}."
    return kapua_error("ILLEGAL_NULL_ARGUMENT", message, argumentName=name)


def not_connected(device_id: str, client_id: str, connection_status: str, disabled: bool = False) -> KapuaError:
    if disabled:  # Kapua's broker refuses a DISABLED device's connection, so it is never CONNECTED
        message = f"The device {client_id} ({device_id}) is DISABLED: no request is sent to it."
    else:
        message = f"The device {client_id} ({device_id}) is not connected: the request cannot be sent."
    return kapua_error("DEVICE_NOT_CONNECTED", message, deviceId=device_id, connectionStatus=connection_status)


def timed_out(timeout_ms: int) -> KapuaError:
    message = f"The device did not answer within the timeout of {timeout_ms} ms."
    return kapua_error("TIMEOUT", message, timeout=timeout_ms)


def send_failed(reason: str) -> KapuaError:
    return kapua_error("SEND_ERROR", f"The request could not be sent to the device: {reason}")


def device_refused(code: int, message: str) -> KapuaError:
    text = f"The device answered with an error: {code} {message}".rstrip()
    return kapua_error("RESPONSE_CODE", text, responseCode=code, errorMessage=message)


def user_id(name: str) -> str:
    """A kapuaId for a host user name (user names may hold characters ids cannot)."""
    return base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()
