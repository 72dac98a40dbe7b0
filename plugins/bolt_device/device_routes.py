"""``/v1/{scopeId}/devices/...``: devices, their packages and operations (Kapua's REST),
and ``/v1/device-packages/{offerId}``, where devices download the manager's own apps."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from bolt_host.plugin import BoltError, basic_credentials

from . import fleet
from .devices import public_device
from .kapua import illegal_argument, kapua_json, list_result, not_found, unauthenticated
from .offers import ROUTE as OFFERS_ROUTE
from .operations import public_notification, public_operation
from .web import (
    backend_of,
    caller,
    json_body,
    kapua_endpoint,
    page,
    scope_for,
    timeout_ms,
    writer_in_scope,
)

STATUSES = ("CONNECTED", "DISCONNECTED", "MISSING", "NULL")


@kapua_endpoint
async def list_devices(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device", "read")
    devices = backend_of(request).devices.list(scope)
    client_id = request.query_params.get("clientId")
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise illegal_argument("status", status, f"Expected one of {', '.join(STATUSES)}.")
    devices = [
        d for d in devices
        if (client_id is None or d["clientId"] == client_id) and (status is None or d["connectionStatus"] == status)
    ]
    items, more = page(request, [public_device(d) for d in devices])
    return kapua_json(list_result("deviceListResult", items, total=len(devices), limit_exceeded=more))


@kapua_endpoint
async def create_device(request: Request) -> Response:
    who, scope = writer_in_scope(request, "device")
    body = await json_body(request, "deviceCreator")
    device = backend_of(request).devices.register(scope, body, created_by=who.scope)
    return kapua_json(public_device(device), 201)


@kapua_endpoint
async def get_device(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device", "read")
    return kapua_json(public_device(fleet.require_device(backend_of(request), scope, request.path_params["deviceId"])))


@kapua_endpoint
async def list_packages(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device_management", "read")
    backend = backend_of(request)
    device = fleet.require_device(backend, scope, request.path_params["deviceId"])
    wait = timeout_ms(request)
    return kapua_json(await fleet.list_packages(backend, device, wait))


@kapua_endpoint
async def download(request: Request) -> Response:
    who, backend, device = _device_to_change(request)
    checked = fleet.validate_download(await json_body(request, fleet.REQUEST))
    operation = await fleet.start_download(backend, device, checked, who.scope, timeout_ms(request))
    return kapua_json(public_operation(operation))


@kapua_endpoint
async def uninstall(request: Request) -> Response:
    who, backend, device = _device_to_change(request)
    checked = fleet.validate_uninstall(await json_body(request, fleet.UNINSTALL))
    operation = await fleet.start_uninstall(backend, device, checked, who.scope, timeout_ms(request))
    return kapua_json(public_operation(operation))


def _device_to_change(request: Request) -> tuple[Any, Any, dict[str, Any]]:
    """The admin caller, the backend and the device the path names, for a package operation."""
    who, scope = writer_in_scope(request, "device_management")
    backend = backend_of(request)
    return who, backend, fleet.require_device(backend, scope, request.path_params["deviceId"])


@kapua_endpoint
async def list_operations(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device_management_registry", "read")
    backend = backend_of(request)
    device = fleet.require_device(backend, scope, request.path_params["deviceId"])
    found = backend.operations.list(scope, device["id"], request.query_params.get("resource"))
    items, more = page(request, [public_operation(o) for o in found])
    return kapua_json(list_result("deviceManagementOperationListResult", items, total=len(found), limit_exceeded=more))


def _operation(request: Request, action: str = "read") -> tuple[dict, object]:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device_management_registry", action)
    backend = backend_of(request)
    device = fleet.require_device(backend, scope, request.path_params["deviceId"])
    operation = backend.operations.get(scope, device["id"], request.path_params["operationId"])
    if operation is None:
        raise not_found("deviceManagementOperation", request.path_params["operationId"])
    return operation, backend


@kapua_endpoint
async def get_operation(request: Request) -> Response:
    operation, _ = _operation(request)
    return kapua_json(public_operation(operation))


@kapua_endpoint
async def list_notifications(request: Request) -> Response:
    operation, backend = _operation(request)
    found = backend.operations.notifications(operation, request.query_params.get("resource"))  # type: ignore[attr-defined]
    items, more = page(request, [public_notification(n) for n in found])
    return kapua_json(
        list_result("managementOperationNotificationListResult", items, total=len(found), limit_exceeded=more)
    )


@kapua_endpoint
async def offered_package(request: Request) -> Response:
    """A package the manager offered one device: HTTP Basic with the offer's id and password."""
    backend = backend_of(request)
    header = request.headers.get("authorization", "")
    try:
        user, password = basic_credentials(header) if header.lower().startswith("basic ") else ("", "")
    except BoltError:
        user, password = "", ""
    offer = backend.offers.get(request.path_params["offerId"], user, password)
    if offer is None:
        refused = unauthenticated("Unknown or expired package offer, or wrong credentials").response()
        refused.headers["WWW-Authenticate"] = 'Basic realm="device packages"'
        return refused
    return FileResponse(offer.path, media_type="application/gzip", filename=f"{offer.id}.tgz")


def routes() -> list[Route]:
    base = "/v1/{scopeId}/devices"
    one = base + "/{deviceId}"
    return [
        Route(OFFERS_ROUTE + "/{offerId}", offered_package, methods=["GET"]),
        Route(base, list_devices, methods=["GET"]),
        Route(base, create_device, methods=["POST"]),
        Route(one, get_device, methods=["GET"]),
        Route(one + "/packages", list_packages, methods=["GET"]),
        Route(one + "/packages/_download", download, methods=["POST"]),
        Route(one + "/packages/_uninstall", uninstall, methods=["POST"]),
        Route(one + "/operations", list_operations, methods=["GET"]),
        Route(one + "/operations/{operationId}", get_operation, methods=["GET"]),
        Route(one + "/operations/{operationId}/notifications", list_notifications, methods=["GET"]),
    ]
