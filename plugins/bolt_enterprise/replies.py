"""The store's own answer format: ``{"error": bool, "message": ...}`` and friends.

WSO2's legacy store answered everything with HTTP 200 and signalled failure
only in the body.  Here the body keeps that shape (``error: true`` plus a
message) but the HTTP status mirrors the outcome, so a failure is never a 200.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bolt_host.errors import BoltError
from bolt_host.web.envelope import trace_id_var

log = logging.getLogger("bolt_enterprise")

Handler = Callable[[Request], Awaitable[Response]]


class EnterpriseError(Exception):
    """A failure with the HTTP status the store answers it with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    @classmethod
    def from_bolt(cls, err: BoltError) -> EnterpriseError:
        headers = {}
        if "retryAfter" in err.details:
            headers["Retry-After"] = str(int(err.details["retryAfter"]))
        return cls(err.http_status, err.message, headers)


def reply(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers)


def done(message: str, status: int = 200, **extra: Any) -> JSONResponse:
    """A success in the WSO2 user-API shape."""
    return reply({"error": False, "message": message, **extra}, status)


def failure(err: EnterpriseError) -> JSONResponse:
    return reply({"error": True, "message": err.message}, err.status, err.headers or None)


def store_endpoint(handler: Handler) -> Handler:
    """Answer the handler's failures in the store format (the core would use the Bolt envelope)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except EnterpriseError as exc:
            err = exc
        except BoltError as exc:
            err = EnterpriseError.from_bolt(exc)
        log.warning(
            "trace=%s enterprise %s %s -> %s %s", trace_id_var.get(), request.method, request.url.path,
            err.status, err.message,
        )
        return failure(err)

    return endpoint
