"""Pure ASGI middleware: trace ids and access log, body caps, safety net, headers."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.web.envelope import error_content, new_trace_id, trace_id_var

log = logging.getLogger("bolt_host.web")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
HTML_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    ),
]


# Apps' own pages (through the proxy) and public files: their content policy is theirs (the
# dashboard's would block an app's inline scripts); public files carry a sandbox of their own.
APP_CONTENT_PREFIXES = ("/x/", "/public/")


# A plugin's renderer for host-level errors on its paths (see ``register_error_formats``).
FormatFor = Callable[[str], Callable[[int, BoltError], dict[str, Any]] | None]


class RequestContextMiddleware:
    """Gives each request a trace id, logs one line per request and turns any
    unexpected exception into a code-1000 envelope (never a bare 500 page)."""

    def __init__(self, app: ASGIApp, format_for: FormatFor | None = None) -> None:
        self.app = app
        self.format_for = format_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = new_trace_id()
        token = trace_id_var.set(trace_id)
        started = time.perf_counter()
        status = {"code": 0, "sent": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-trace-id", trace_id.encode()))
                headers.extend(SECURITY_HEADERS)
                html = any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and not scope["path"].startswith(APP_CONTENT_PREFIXES):
                    headers.extend(HTML_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            full = _disk_full(exc)
            if full is not None:
                log.error("trace=%s %s %s: disk full: %s", trace_id, scope["method"], scope["path"], full)
                err = BoltError(
                    errors.STORAGE_FULL,
                    "No space left on the host's disk; the change was not saved. Free some space and try again.",
                    user_title="Disk full",
                )
            else:
                log.exception("trace=%s unhandled error on %s %s", trace_id, scope["method"], scope["path"])
                err = BoltError(errors.UNKNOWN, "Internal error")
            if not status["sent"]:
                await _send_envelope(send_wrapper, err, trace_id, err.http_status, _renderer(self.format_for, scope))
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "trace=%s %s %s -> %s (%.1f ms)",
                trace_id,
                scope["method"],
                scope["path"],
                status["code"],
                elapsed,
            )
            trace_id_var.reset(token)


class HostHeaderMiddleware:
    """Answers only for the host names it serves (DNS rebinding: a page on evil.example whose
    name resolves to 127.0.0.1 must not reach the host, the dashboard or the apps)."""

    def __init__(
        self, app: ASGIApp, names: frozenset[str] | None, format_for: FormatFor | None = None
    ) -> None:
        self.app = app
        self.names = names
        self.format_for = format_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.names is None or _host_name(scope) in self.names:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake completes (a 403)
            await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            return
        err = BoltError(errors.HOST_NOT_ALLOWED, "The Host header names no host this server answers for")
        await _send_envelope(send, err, trace_id_var.get(), err.http_status, _renderer(self.format_for, scope))


def _host_name(scope: Scope) -> str | None:
    """The name in the ``Host`` header, without its port (``[::1]:4000`` -> ``::1``)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            text: str = value.decode("latin-1").strip().lower()
            if text.startswith("["):
                return text[1 : text.find("]")] if "]" in text else None
            return text.rpartition(":")[0] if ":" in text else text
    return None


class BodyLimitMiddleware:
    """Refuses request bodies over a cap (413 in the envelope) before reading them."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], format_for: FormatFor | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.format_for = format_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            err = BoltError(errors.PAYLOAD_TOO_LARGE, f"Request body is over the limit of {limit} bytes")
            await _send_envelope(send, err, trace_id_var.get(), 413, _renderer(self.format_for, scope))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BoltError(errors.PAYLOAD_TOO_LARGE, f"Request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``exc`` (itself or what it was raised from), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and (
            exc.errno in (errno.ENOSPC, errno.EDQUOT) or f"[Errno {errno.ENOSPC}]" in str(exc)  # shutil.Error lists
        ):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _renderer(format_for: FormatFor | None, scope: Scope) -> Callable[[int, BoltError], dict[str, Any]] | None:
    return format_for(scope["path"]) if format_for is not None else None


def _error_body(err: BoltError, trace_id: str, status: int, render: Callable[[int, BoltError], Any] | None) -> Any:
    """The plugin's rendering of ``err`` where one claimed the path, else the Bolt envelope."""
    if render is not None:
        try:
            return render(status, err)
        except Exception:
            log.exception("trace=%s the error renderer %r failed; answering in the Bolt envelope", trace_id, render)
    return error_content(err, trace_id)


async def _send_envelope(
    send: Send, err: BoltError, trace_id: str, status: int, render: Callable[[int, BoltError], Any] | None = None
) -> None:
    import json

    body = json.dumps(_error_body(err, trace_id, status, render)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
