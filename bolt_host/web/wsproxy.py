"""WebSocket through ``/x/<app>/...``: the handshake checked like an HTTP request, then frames
relayed both ways until either side ends.

* Who may connect: the proxy's own rules (a user who may see the app, the app itself, a
  system app), with the host's credentials stripped and its forwarding headers set.
* Cross-origin: a browser always sends ``Origin`` with a handshake, and cookies ride along,
  so a page elsewhere could otherwise talk to an app as the viewer.  A handshake from
  another origin, or marked ``Sec-Fetch-Site`` cross-site or same-site, is refused.
* A refused handshake is answered with the API's error as an HTTP response (the ASGI
  denial extension), not a bare 403.
* Messages are capped at ``max_ws_message_bytes`` both ways (close code 1009); close codes
  and reasons are passed on; when one side ends, or the app stops, the other is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.lazy import lazy_module
from bolt_host.web.auth import Actor, host_of, trusted_origins
from bolt_host.web.envelope import error_response, new_trace_id, trace_id_var
from bolt_host.web.origin import from_this_origin
from bolt_host.web.proxy import app_request_headers, check_proxy_access, lease_port

if TYPE_CHECKING:
    import websockets.asyncio.client as ws_client
    import websockets.exceptions as ws_errors
    from websockets.asyncio.client import ClientConnection
else:  # the client side is imported at the first proxied WebSocket
    ws_client = lazy_module("websockets.asyncio.client")
    ws_errors = lazy_module("websockets.exceptions")

log = logging.getLogger("bolt_host.web")

HANDSHAKE_HEADERS = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}
# Codes a close frame may not carry (RFC 6455 7.4.1): an abnormal end is passed on as 1011.
UNSENDABLE_CODES = {1004, 1005, 1006, 1015}
OPEN_TIMEOUT = 10.0  # seconds for the app to accept the handshake


def require_same_origin_socket(connection: HTTPConnection, who: Actor) -> None:
    """A WebSocket handshake from a page of this origin, or from no browser at all (the host's
    one cross-origin check, :mod:`bolt_host.web.origin`; the handshake is a GET, so it is asked
    here rather than by the method rule)."""
    if not from_this_origin(connection, trusted_origins(host_of(connection))):  # type: ignore[arg-type]
        raise BoltError(
            errors.CSRF_FAILED,
            "WebSocket connections through /x/ must come from a page of this origin",
            user_title="Request refused",
        )


async def ws_proxy(websocket: WebSocket) -> None:
    trace = trace_id_var.set(new_trace_id())
    try:
        await _serve(websocket)
    finally:
        trace_id_var.reset(trace)


async def _serve(websocket: WebSocket) -> None:
    name = websocket.path_params["name"]
    try:
        check_proxy_access(websocket, name, require_same_origin_socket)
        lease = lease_port(websocket, name)  # the socket sticks to this process; a drain waits for it
    except BoltError as exc:
        await _deny(websocket, error_response(exc))
        return
    try:
        upstream = await _open_upstream(websocket, name, lease.port)
        if upstream is None:
            return
        await websocket.accept(subprotocol=upstream.subprotocol)
        try:
            await _relay(websocket, upstream)
        finally:
            await upstream.close()
    finally:
        lease.release()


async def _open_upstream(websocket: WebSocket, name: str, port: int) -> ClientConnection | None:
    """The connection to the app, or None once the client has been answered with why not."""
    path = websocket.path_params.get("path", "")
    query = websocket.url.query
    url = f"ws://127.0.0.1:{port}/{path}" + (f"?{query}" if query else "")
    headers = [(k, v) for k, v in app_request_headers(websocket, name) if k.lower() not in HANDSHAKE_HEADERS]
    limit = host_of(websocket).settings.max_ws_message_bytes  # type: ignore[arg-type]
    try:
        return await ws_client.connect(
            url,
            additional_headers=headers,
            subprotocols=websocket.scope.get("subprotocols") or None,
            max_size=limit,
            open_timeout=OPEN_TIMEOUT,
            proxy=None,
            user_agent_header=None,
        )
    except ws_errors.InvalidStatus as exc:  # the app itself refused the handshake: its answer goes back
        answer = exc.response
        log.info("app %s refused a WebSocket handshake with HTTP %s", name, answer.status_code)
        await _deny(websocket, Response(answer.body or b"", status_code=answer.status_code))
    except TimeoutError:
        await _deny(websocket, error_response(BoltError(
            errors.APP_GATEWAY_TIMEOUT, f"App {name!r} did not accept the WebSocket in time")))
    except (OSError, ws_errors.InvalidHandshake) as exc:
        await _deny(websocket, error_response(BoltError(
            errors.APP_BAD_GATEWAY, f"App {name!r} gave no valid WebSocket answer ({type(exc).__name__})")))
    return None


async def _deny(websocket: WebSocket, response: Response) -> None:
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # a server without the denial extension: a plain refusal
        await websocket.close(code=1008)


async def _relay(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Frames both ways until one side ends; that side's close code goes to the other."""
    to_app = asyncio.create_task(_client_to_app(websocket, upstream))
    to_client = asyncio.create_task(_app_to_client(websocket, upstream))
    try:
        await asyncio.wait({to_app, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_app, to_client):
            task.cancel()
        for task in (to_app, to_client):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _client_to_app(websocket: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code") or 1000
            await upstream.close(_sendable(code), message.get("reason") or "")
            return
        data: Any = message.get("text") if message.get("text") is not None else message.get("bytes")
        try:
            await upstream.send(data)
        except ws_errors.ConnectionClosed:
            return  # the other task passes the app's close on


async def _app_to_client(websocket: WebSocket, upstream: ClientConnection) -> None:
    try:
        async for data in upstream:
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)
    except ws_errors.ConnectionClosed:
        pass
    except WebSocketDisconnect:
        return
    code, reason = _close_of(upstream)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason)


def _close_of(upstream: ClientConnection) -> tuple[int, str]:
    """How the app's side ended: the close we sent it first (a message over the cap: 1009), else
    the close it sent, else 1011 (it went away without one)."""
    protocol = upstream.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and not protocol.close_rcvd_then_sent:
        return _sendable(sent.code), sent.reason
    if received is not None:
        return _sendable(received.code), received.reason
    return 1011, "the app's connection ended without a close"


def _sendable(code: int) -> int:
    return 1011 if code in UNSENDABLE_CODES or not 1000 <= code <= 4999 else code


routes = [
    WebSocketRoute("/x/{name}/{path:path}", ws_proxy),
    WebSocketRoute("/x/{name}", ws_proxy),
]
