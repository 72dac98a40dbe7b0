"""The store's own answer format: ``{"error": bool, "message": ...}`` and friends.

WSO2's legacy store answered everything with HTTP 200 and signalled failure
only in the body.  Here the body keeps that shape (``error: true`` plus a
message) but the HTTP status mirrors the outcome, so a failure is never a 200.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bolt_host.plugin import BoltError, ErrorFormat, PluginError, retry_after_headers

Handler = Callable[[Request], Awaitable[Response]]


class EnterpriseError(PluginError):
    """A failure with the HTTP status the store answers it with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers=headers)

    @classmethod
    def from_bolt(cls, err: BoltError) -> EnterpriseError:
        return cls(err.http_status, err.message, retry_after_headers(err))


STORE = ErrorFormat(lambda status, message, data: {"error": True, "message": message}, "enterprise")


def reply(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers)


def done(message: str, status: int = 200, **extra: Any) -> JSONResponse:
    """A success in the WSO2 user-API shape."""
    return reply({"error": False, "message": message, **extra}, status)


def failure(err: EnterpriseError) -> Response:
    return STORE.failure(err.status, err.message, headers=err.headers)


def store_endpoint(handler: Handler) -> Handler:
    """Answer the handler's failures in the store format (the core would use the Bolt envelope)."""
    return STORE.endpoint(handler)
