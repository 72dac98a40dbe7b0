"""The manager's device-management actions, shared by the REST routes and the
``install_on_device`` / ``list_devices`` hooks: validation, operations, requests.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .backend import DeviceBackend
from .devices import require_reachable
from .downloads import display_uri, parse_hash
from .kapua import KapuaError, illegal_argument, illegal_null, not_found, timed_out
from .manager import reply_error
from .offers import ROUTE as OFFERS_ROUTE
from .offers import OfferError
from .operations import FAILED

REQUEST = "packageDownloadRequest"
UNINSTALL = "packageUninstallRequest"


def require_device(backend: DeviceBackend, scope: str, device_id: str) -> dict[str, Any]:
    device = backend.devices.get(scope, device_id)
    if device is None:
        raise not_found("device", device_id)
    return device


def _text(body: dict[str, Any], key: str, what: str, limit: int, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise illegal_null(f"{what}.{key}")
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise illegal_argument(f"{what}.{key}", value, f"Expected a non-empty string of at most {limit} characters.")
    return value


def _bool(body: dict[str, Any], key: str, what: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise illegal_argument(f"{what}.{key}", value, "Expected true or false.")
    return value


def _delay(body: dict[str, Any], what: str) -> int:
    value = body.get("rebootDelay", 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 24 * 3600 * 1000:
        raise illegal_argument(f"{what}.rebootDelay", value, "Expected milliseconds, 0 or more.")
    return value


def validate_download(body: dict[str, Any]) -> dict[str, Any]:
    """The checked request (Kapua's rules: uri, name and version required; uri <= 2048, others <= 256)."""
    uri = _text(body, "uri", REQUEST, 2048) or ""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise illegal_argument(f"{REQUEST}.uri", uri, "Expected an http or https URL.")
    file_hash = _text(body, "fileHash", REQUEST, 256, required=False)
    if file_hash:
        try:
            parse_hash(file_hash)
        except ValueError as exc:
            raise illegal_argument(f"{REQUEST}.fileHash", file_hash, str(exc)) from exc
    file_type = body.get("fileType", "DEPLOYMENT_PACKAGE")
    if file_type not in (None, "DEPLOYMENT_PACKAGE"):
        raise illegal_argument(f"{REQUEST}.fileType", file_type, "Only DEPLOYMENT_PACKAGE (app tarballs) works.")
    options = body.get("advancedOptions")
    if options is not None and not isinstance(options, dict):
        raise illegal_argument(f"{REQUEST}.advancedOptions", options, "Expected an object.")
    return {
        "uri": uri,
        "name": _text(body, "name", REQUEST, 256),
        "version": _text(body, "version", REQUEST, 256),
        "fileHash": file_hash,
        "install": _bool(body, "install", REQUEST, True),
        "reboot": _bool(body, "reboot", REQUEST, False),
        "rebootDelay": _delay(body, REQUEST),
        "username": _text(body, "username", REQUEST, 256, required=False),
        "password": _text(body, "password", REQUEST, 1024, required=False),
    }


def validate_uninstall(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _text(body, "name", UNINSTALL, 256),
        "version": _text(body, "version", UNINSTALL, 256),
        "reboot": _bool(body, "reboot", UNINSTALL, False),
        "rebootDelay": _delay(body, UNINSTALL),
    }


async def _send(
    backend: DeviceBackend, device: dict[str, Any], resource: str, properties: dict[str, Any],
    metrics: dict[str, Any], created_by: str, timeout_ms: int,
) -> dict[str, Any]:
    require_reachable(device)
    if timeout_ms <= 0:  # Kapua would send and give up at once; we send nothing the operation could not track
        raise timed_out(timeout_ms)
    started = time.monotonic()
    operation = await backend.operations.create(device, resource, properties, created_by)
    job_id = operation["operationId"]
    stages = backend.manager.stages
    stages.mark(job_id, "call", device["clientId"], at=started)
    stages.mark(job_id, "created")
    metrics = {**metrics, "job.id": job_id, "dp.job.id": job_id}
    try:
        reply = await backend.manager.request(device, "EXEC", resource, metrics, timeout_ms)
        refused = reply_error(reply)
        if refused is not None:
            raise refused
    except KapuaError as exc:
        backend.operations.close(operation, FAILED, reason=exc.message)
        raise
    except BaseException:
        backend.operations.close(operation, FAILED, reason="the request was interrupted")
        raise
    stages.mark(job_id, "answered")
    return backend.operations.get(device["scopeId"], device["id"], operation["id"]) or operation


async def start_download(
    backend: DeviceBackend, device: dict[str, Any], request: dict[str, Any], created_by: str, timeout_ms: int
) -> dict[str, Any]:
    properties = {
        "kapua.package.download.uri": display_uri(request["uri"]),
        "kapua.package.download.name": request["name"],
        "kapua.package.download.version": request["version"],
        "kapua.package.download.install": request["install"],
        "kapua.package.download.file.type": "DEPLOYMENT_PACKAGE",
        "kapua.package.reboot": request["reboot"],
        "kapua.package.reboot.delay": request["rebootDelay"],
    }
    if request["fileHash"]:
        properties["kapua.package.download.file.hash"] = request["fileHash"]
    metrics: dict[str, Any] = {
        "dp.uri": request["uri"],
        "dp.name": request["name"],
        "dp.version": request["version"],
        "dp.download.protocol": urlsplit(request["uri"]).scheme.upper(),
        "dp.install": request["install"],
        "dp.reboot": request["reboot"],
        "dp.reboot.delay": request["rebootDelay"],
    }
    if request["fileHash"]:
        metrics["dp.download.hash"] = request["fileHash"]
    if request["username"]:
        metrics["dp.download.username"] = request["username"]
        metrics["dp.download.password"] = request["password"] or ""
    return await _send(backend, device, "download", properties, metrics, created_by, timeout_ms)


async def start_uninstall(
    backend: DeviceBackend, device: dict[str, Any], request: dict[str, Any], created_by: str, timeout_ms: int
) -> dict[str, Any]:
    properties = {
        "kapua.package.uninstall.name": request["name"],
        "kapua.package.uninstall.version": request["version"],
        "kapua.package.reboot": request["reboot"],
        "kapua.package.reboot.delay": request["rebootDelay"],
    }
    metrics = {
        "dp.name": request["name"],
        "dp.version": request["version"],
        "dp.reboot": request["reboot"],
        "dp.reboot.delay": request["rebootDelay"],
    }
    return await _send(backend, device, "uninstall", properties, metrics, created_by, timeout_ms)


async def list_packages(backend: DeviceBackend, device: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
    reply = await backend.manager.request(device, "GET", "packages", {}, timeout_ms)
    refused = reply_error(reply)
    if refused is not None:
        raise refused
    packages = reply.body.get("packages") if isinstance(reply.body, dict) else None
    return {"type": "devicePackages", "devicePackage": packages if isinstance(packages, list) else []}


async def package_download_request(backend: DeviceBackend, package: dict[str, Any]) -> dict[str, Any]:
    """A download request for an app installed on the manager: from the manager's registry
    when it came from there, else from a tarball of its installed folder (see ``offers``)."""
    source = package.get("source") or {}
    if source.get("type") == "registry" and backend.host.apps.registry is not None:
        return await registry_download_request(backend, package)
    return await offered_download_request(backend, package)


async def offered_download_request(backend: DeviceBackend, package: dict[str, Any]) -> dict[str, Any]:
    host = backend.host
    app = host.apps.get(str(package.get("name") or ""))
    if app is None:
        raise not_found("package", str(package.get("name")))
    folder = (host.apps.apps_dir / app["name"]).resolve()
    if Path(app["folder"]).resolve() != folder or not folder.is_dir():
        raise KapuaError(409, "PACKAGE_UNAVAILABLE", f"The files of {app['name']} are not in the manager's apps folder")
    try:
        offer, password = await backend.offers.offer(folder)
    except OfferError as exc:
        raise KapuaError(409, "PACKAGE_UNAVAILABLE", f"{app['name']} cannot be sent to devices: {exc}") from exc
    return validate_download({
        "uri": f"{host.settings.url}{OFFERS_ROUTE}/{offer.id}",
        "name": app.get("package") or app["name"],
        "version": app["version"],
        "fileHash": f"SHA256:{offer.sha256}",
        "install": True,
        "username": offer.id,
        "password": password,
    })


async def registry_download_request(backend: DeviceBackend, package: dict[str, Any]) -> dict[str, Any]:
    """A download request for an app of the manager's registry (tarball URL and its SHA512)."""
    registry = backend.host.apps.registry
    if registry is None:
        raise KapuaError(500, "INTERNAL_ERROR", "The manager has no registry to install apps on devices from")
    name = package.get("package") or package["name"]
    meta = await registry.manifest(name, package.get("version"))
    dist = meta.get("dist") or {}
    file_hash = None
    for token in str(dist.get("integrity") or "").split():
        algorithm, _, digest = token.partition("-")
        if algorithm in ("sha512", "sha256"):
            file_hash = f"{algorithm.upper()}:{base64.b64decode(digest).hex()}"
            break
    return validate_download(
        {"uri": dist.get("tarball"), "name": name, "version": meta["version"], "fileHash": file_hash, "install": True}
    )
