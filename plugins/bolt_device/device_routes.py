"""``/v1/{scopeId}/devices/...``: devices, their packages and operations (Kapua's REST),
and ``/v1/device-packages/{offerId}``, where devices download the manager's own apps."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from bolt_host.plugin import BoltError, basic_credentials

from . import fleet, queries
from .devices import public_device
from .kapua import illegal_argument, kapua_json, not_found, unauthenticated
from .offers import ROUTE as OFFERS_ROUTE
from .operations import public_notification, public_operation
from .web import (
    backend_of,
    caller,
    json_body,
    kapua_endpoint,
    scope_for,
    timeout_ms,
    writer_in_scope,
)

STATUSES = ("CONNECTED", "DISCONNECTED", "MISSING", "NULL")
KAPUA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


MATCHED_BY_TERM = ("clientId", "displayName", "serialNumber", "modelId", "modelName", "firmwareVersion",
                   "osVersion", "applicationFrameworkVersion", "connectionIp")


@kapua_endpoint
async def list_devices(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device", "read")
    params = request.query_params
    query = queries.from_params(params, queries.DEVICE_ATTRIBUTES, sortable=True)
    if query.sort is None:
        query.sort = ("clientId", queries.ASCENDING)
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise illegal_argument("status", status, f"Expected one of {', '.join(STATUSES)}.")
    if params.get("clientId") is not None:
        query.predicates.append(queries.equal("clientId", params["clientId"]))
    if status is not None:
        query.predicates.append(queries.equal("connection.status", status))
    tag = params.get("tagId")
    if tag is not None:
        if not KAPUA_ID.fullmatch(tag):
            raise illegal_argument("tagId", tag, "Expected a Kapua id (base64url).")
        query.predicates.append(lambda body: tag in body.get("tagIds", []))  # devices carry no tags yet
    term = params.get("matchTerm")
    if term is not None:
        query.predicates.append(lambda body: any(str(body.get(f) or "").startswith(term) for f in MATCHED_BY_TERM))
    devices = [public_device(d) for d in backend_of(request).devices.list(scope)]
    return kapua_json(query.result("deviceListResult", devices))


@kapua_endpoint
async def create_device(request: Request) -> Response:
    who, scope = writer_in_scope(request, "device")
    body = await json_body(request, "deviceCreator")
    devices = backend_of(request).devices
    device = devices.register(scope, body, created_by=who.scope)
    await devices.saved()
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
    return backend.manager.stages.after_sending(kapua_json(public_operation(operation)), operation["operationId"])


@kapua_endpoint
async def uninstall(request: Request) -> Response:
    who, backend, device = _device_to_change(request)
    checked = fleet.validate_uninstall(await json_body(request, fleet.UNINSTALL))
    operation = await fleet.start_uninstall(backend, device, checked, who.scope, timeout_ms(request))
    return backend.manager.stages.after_sending(kapua_json(public_operation(operation)), operation["operationId"])


def _device_to_change(request: Request) -> tuple[Any, Any, dict[str, Any]]:
    """The admin caller, the backend and the device the path names, for a package operation."""
    who, scope = writer_in_scope(request, "device_management")
    backend = backend_of(request)
    return who, backend, fleet.require_device(backend, scope, request.path_params["deviceId"])


def _filtered(request: Request, attributes: frozenset[str]) -> queries.Query:
    query = queries.from_params(request.query_params, attributes)
    resource = request.query_params.get("resource")
    if resource:
        query.predicates.append(queries.equal("resource", resource))
    return query


@kapua_endpoint
async def list_operations(request: Request) -> Response:
    scope = scope_for(caller(request), request.path_params["scopeId"], "device_management_registry", "read")
    backend = backend_of(request)
    device = fleet.require_device(backend, scope, request.path_params["deviceId"])
    query = _filtered(request, queries.OPERATION_ATTRIBUTES)
    found = [public_operation(o) for o in backend.operations.list(scope, device["id"])]
    return kapua_json(query.result("deviceManagementOperationListResult", found))


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
    query = _filtered(request, queries.NOTIFICATION_ATTRIBUTES)
    found = [public_notification(n) for n in backend.operations.notifications(operation)]  # type: ignore[attr-defined]
    return kapua_json(query.result("managementOperationNotificationListResult", found))


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
