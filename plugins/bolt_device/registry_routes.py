"""Kapua's query, count, update and delete routes of the device registry and the device
management registry (operations and their notifications), and the device inventory:

* ``POST /v1/{scopeId}/devices/_query`` / ``_count``, ``PUT`` / ``DELETE .../devices/{deviceId}``;
* ``POST .../operations/_query`` / ``_count``, ``DELETE .../operations/{operationId}``;
* ``GET`` / ``DELETE .../notifications/{notificationId}``, ``POST .../notifications/_query`` / ``_count``;
* ``GET .../devices/{deviceId}/inventory/packages``.

Query bodies follow :mod:`bolt_device.queries`.  Reads need any token of the scope,
changes a host admin of it (checked before anything is looked up).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import fleet, queries
from .devices import public_device
from .kapua import kapua_json, not_found
from .operations import public_notification, public_operation
from .web import (
    Caller,
    backend_of,
    caller,
    json_body,
    kapua_endpoint,
    require_admin,
    scope_for,
    timeout_ms,
)

REGISTRY = "device_management_registry"


def _writer(request: Request, domain: str) -> tuple[Caller, str]:
    who = caller(request)
    scope = scope_for(who, request.path_params["scopeId"], domain, "write")
    require_admin(who, domain, "write", scope)
    return who, scope


def _device(request: Request, scope: str) -> dict[str, Any]:
    return fleet.require_device(backend_of(request), scope, request.path_params["deviceId"])


def _operation(request: Request, scope: str) -> dict[str, Any]:
    device = _device(request, scope)
    operation = backend_of(request).operations.get(scope, device["id"], request.path_params["operationId"])
    if operation is None:
        raise not_found("deviceManagementOperation", request.path_params["operationId"])
    return operation


def _reader_scope(request: Request, domain: str) -> str:
    return scope_for(caller(request), request.path_params["scopeId"], domain, "read")


# devices ----------------------------------------------------------------------
def _devices(request: Request, scope: str) -> list[dict[str, Any]]:
    return [public_device(d) for d in backend_of(request).devices.list(scope)]


@kapua_endpoint
async def query_devices(request: Request) -> Response:
    scope = _reader_scope(request, "device")
    query = queries.from_body(await json_body(request, "deviceQuery"), "deviceQuery", queries.DEVICE_ATTRIBUTES)
    return kapua_json(query.result("deviceListResult", _devices(request, scope)))


@kapua_endpoint
async def count_devices(request: Request) -> Response:
    scope = _reader_scope(request, "device")
    query = queries.from_body(await json_body(request, "deviceQuery"), "deviceQuery", queries.DEVICE_ATTRIBUTES)
    return kapua_json(query.count(_devices(request, scope)))


@kapua_endpoint
async def update_device(request: Request) -> Response:
    who, scope = _writer(request, "device")
    device = _device(request, scope)
    body = await json_body(request, "device")
    devices = backend_of(request).devices
    updated = devices.update(device, body, who.scope)
    await devices.saved()
    return kapua_json(public_device(updated))


@kapua_endpoint
async def delete_device(request: Request) -> Response:
    _, scope = _writer(request, "device")
    devices = backend_of(request).devices
    devices.delete(_device(request, scope))
    await devices.saved()
    return Response(status_code=204)


@kapua_endpoint
async def inventory_packages(request: Request) -> Response:
    """The device's deployment packages (asked from the device, as ``GET .../packages``)."""
    scope = _reader_scope(request, "device_management")
    backend = backend_of(request)
    device = _device(request, scope)
    wait = timeout_ms(request)
    packages = await fleet.list_packages(backend, device, wait)
    return kapua_json(inventory(packages["devicePackage"]))


def inventory(packages: list[Any]) -> dict[str, Any]:
    """Kapua's ``deviceInventoryDeploymentPackages`` from ``devicePackage`` entries."""
    found = []
    for package in packages:
        if not isinstance(package, dict):
            continue
        bundles = ((package.get("bundleInfos") or {}).get("bundleInfo")) or []
        found.append({
            "name": str(package.get("name", "")),
            "version": str(package.get("version", "")),
            "packageBundles": [
                {"id": str(index), "name": str(b.get("name", "")), "version": str(b.get("version", "")),
                 "status": str(b.get("status") or "INSTALLED"), "signed": False}
                for index, b in enumerate(bundles) if isinstance(b, dict)
            ],
        })
    return {"type": "deviceInventoryDeploymentPackages", "deploymentPackages": found}


# operations -------------------------------------------------------------------
def _operations(request: Request, scope: str) -> list[dict[str, Any]]:
    device = _device(request, scope)
    return [public_operation(o) for o in backend_of(request).operations.list(scope, device["id"])]


async def _operation_query(request: Request) -> tuple[queries.Query, list[dict[str, Any]]]:
    scope = _reader_scope(request, REGISTRY)
    body = await json_body(request, "deviceManagementOperationQuery")
    query = queries.from_body(body, "deviceManagementOperationQuery", queries.OPERATION_ATTRIBUTES)
    return query, _operations(request, scope)


@kapua_endpoint
async def query_operations(request: Request) -> Response:
    query, found = await _operation_query(request)
    return kapua_json(query.result("deviceManagementOperationListResult", found))


@kapua_endpoint
async def count_operations(request: Request) -> Response:
    query, found = await _operation_query(request)
    return kapua_json(query.count(found))


@kapua_endpoint
async def delete_operation(request: Request) -> Response:
    _, scope = _writer(request, REGISTRY)
    operations = backend_of(request).operations
    operations.delete(_operation(request, scope))
    await operations.saved()
    return Response(status_code=204)


# notifications ----------------------------------------------------------------
def _notifications(request: Request, scope: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    operation = _operation(request, scope)
    found = backend_of(request).operations.notifications(operation)
    return operation, [public_notification(n) for n in found]


async def _notification_query(request: Request) -> tuple[queries.Query, list[dict[str, Any]]]:
    scope = _reader_scope(request, REGISTRY)
    body = await json_body(request, "managementOperationNotificationQuery")
    query = queries.from_body(body, "managementOperationNotificationQuery", queries.NOTIFICATION_ATTRIBUTES)
    _, found = _notifications(request, scope)
    return query, found


@kapua_endpoint
async def query_notifications(request: Request) -> Response:
    query, found = await _notification_query(request)
    return kapua_json(query.result("managementOperationNotificationListResult", found))


@kapua_endpoint
async def count_notifications(request: Request) -> Response:
    query, found = await _notification_query(request)
    return kapua_json(query.count(found))


def _notification(request: Request, scope: str) -> tuple[dict[str, Any], dict[str, Any]]:
    operation = _operation(request, scope)
    wanted = request.path_params["notificationId"]
    note = backend_of(request).operations.notification(operation, wanted)
    if note is None:
        raise not_found("managementOperationNotification", wanted)
    return operation, note


@kapua_endpoint
async def get_notification(request: Request) -> Response:
    _, note = _notification(request, _reader_scope(request, REGISTRY))
    return kapua_json(public_notification(note))


@kapua_endpoint
async def delete_notification(request: Request) -> Response:
    _, scope = _writer(request, REGISTRY)
    operation, note = _notification(request, scope)
    operations = backend_of(request).operations
    operations.delete_notification(operation, note["id"])
    await operations.saved()
    return Response(status_code=204)


def routes() -> list[Route]:
    base = "/v1/{scopeId}/devices"
    one = base + "/{deviceId}"
    operation = one + "/operations/{operationId}"
    return [
        Route(base + "/_query", query_devices, methods=["POST"]),
        Route(base + "/_count", count_devices, methods=["POST"]),
        Route(one, update_device, methods=["PUT"]),
        Route(one, delete_device, methods=["DELETE"]),
        Route(one + "/inventory/packages", inventory_packages, methods=["GET"]),
        Route(one + "/operations/_query", query_operations, methods=["POST"]),
        Route(one + "/operations/_count", count_operations, methods=["POST"]),
        Route(operation, delete_operation, methods=["DELETE"]),
        Route(operation + "/notifications/_query", query_notifications, methods=["POST"]),
        Route(operation + "/notifications/_count", count_notifications, methods=["POST"]),
        Route(operation + "/notifications/{notificationId}", get_notification, methods=["GET"]),
        Route(operation + "/notifications/{notificationId}", delete_notification, methods=["DELETE"]),
    ]
