"""Answers in a backend's own format: its error class, its route wrapper, JSON bodies, trace ids.

A store backend that speaks another API declares its error format once::

    class StoreError(PluginError): ...

    STORE = ErrorFormat(lambda status, message, data: {"ok": False, "why": message}, StoreError)

and wraps each handler with ``STORE.endpoint``: a ``StoreError`` raised inside becomes
that body with its status, a core ``BoltError`` (from ``require_admin``, ``read_body``...)
too, through ``status_for`` (the Bolt error's own HTTP status unless told otherwise).
The ``register_error_formats`` hook covers the errors the host answers before any route
runs (413 body cap, 500 safety net).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bolt_host import jsondepth
from bolt_host.errors import BoltError
from bolt_host.web.envelope import trace_id_var

log = logging.getLogger("bolt_host.plugin")

Handler = Callable[[Request], Awaitable[Response]]
Render = Callable[[int, str, Any], Any]


def current_trace_id() -> str:
    """The trace id of the request being handled (``errorTraceId`` and the log lines carry it)."""
    return trace_id_var.get()


class PluginError(Exception):
    """A refused request, answered in the backend's format: HTTP ``status``, ``message``, optional
    ``data`` for the body and ``headers`` for the response."""

    def __init__(
        self, status: int, message: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = headers or {}


def retry_after_headers(err: BoltError) -> dict[str, str]:
    """``Retry-After`` for a throttled login, as the core sends it."""
    return {"Retry-After": str(int(err.details["retryAfter"]))} if "retryAfter" in err.details else {}


class ErrorFormat:
    """How one backend answers failures.

    ``render(status, message, data)`` returns the JSON body.  ``status_for(err)`` maps a
    core :class:`BoltError` to the backend's status (default: the error's own); a backend
    whose errors carry more than a status (codes, headers) gives ``from_bolt(err)`` instead,
    returning its own :class:`PluginError`.
    ``internal_error`` set: any other exception is logged and answered as a 500 with that
    message in the backend's format (otherwise it reaches the host's safety net).
    """

    def __init__(
        self,
        render: Render,
        name: str,
        status_for: Callable[[BoltError], int] | None = None,
        internal_error: str | None = None,
        from_bolt: Callable[[BoltError], PluginError] | None = None,
    ) -> None:
        self.render = render
        self.name = name
        self.status_for = status_for or (lambda err: err.http_status)
        self.internal_error = internal_error
        self.from_bolt = from_bolt

    def failure(self, status: int, message: str, data: Any = None, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(self.render(status, message, data), status_code=status, headers=headers or None)

    def from_exception(self, exc: PluginError | BoltError) -> PluginError:
        if isinstance(exc, PluginError):
            return exc
        if self.from_bolt is not None:
            return self.from_bolt(exc)
        return PluginError(self.status_for(exc), exc.message, headers=retry_after_headers(exc))

    def endpoint(self, handler: Handler) -> Handler:
        """``handler`` with every failure answered in this format (and logged with the trace id)."""

        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except (PluginError, BoltError) as exc:
                err = self.from_exception(exc)
            except Exception:
                if self.internal_error is None:
                    raise
                log.exception("%s handler %s failed on %s %s", self.name, handler.__name__, request.method,
                              request.url.path)
                err = PluginError(500, self.internal_error)
            log.warning("trace=%s %s %s %s -> %s %s", current_trace_id(), self.name, request.method,
                        request.url.path, err.status, err.message)
            return self.failure(err.status, err.message, err.data, err.headers)

        return wrapped


async def read_json_body(request: Request, limit: int, refuse: Callable[[int, str], Exception]) -> Any:
    """The request's JSON value (None for an empty body), at most ``limit`` bytes.

    ``refuse(status, message)`` builds the backend's exception for a body over the cap
    (413) or one that is not JSON (400).  The host's body limit still applies on top.
    """
    raw = await request.body()
    if len(raw) > limit:
        raise refuse(413, "Request body too large")
    if not raw.strip():
        return None
    try:
        return jsondepth.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(400, f"Invalid request body: {exc}") from None
