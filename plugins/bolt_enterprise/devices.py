"""Installs on devices, through whichever loaded plugin manages devices.

The enterprise backend never imports the device backend: it asks the
``list_devices``, ``install_on_device`` and ``uninstall_from_device``
firstresult hooks, and answers a clear 503 when no plugin answers them.  A
hook's error that carries an HTTP status (a device offline is 409, no answer
in time a 500 timeout, ...) keeps that status and its message; any other
failure is a 502.  Each install it asked for is kept in
``enterprise_device_installs``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tinydb import Query

from bolt_host.plugin import BoltError, Host, now_iso

from .assets import asset_id, device_package
from .replies import EnterpriseError

log = logging.getLogger("bolt_enterprise")

TABLE = "enterprise_device_installs"
SCHEMA = {1: lambda table: None}
NO_DEVICE_BACKEND = (
    "No device backend is loaded, so apps cannot be installed on devices; "
    "enable the 'device' plugin (or another plugin implementing list_devices and install_on_device)"
)
STATUS_ATTRIBUTES = ("status", "http_status", "status_code")


def device_entry(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A device in the seed's ``get-devices`` shape, keeping whatever else the backend said."""
    return {
        "platform": "bolt",
        "model": "",
        "platform_version": "",
        "name": str(raw["id"]),
        "image": "",
        "type": "host",
        **raw,
        "id": str(raw["id"]),
    }


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (e.g. the device backend's Kapua errors), if any."""
    for name in STATUS_ATTRIBUTES:
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return None


def _key(app: str, device: str) -> Any:
    return (Query().app == app) & (Query().device == device)


class DeviceInstalls:
    def __init__(self, host: Host) -> None:
        self._host = host

    async def devices(self, actor: dict[str, Any]) -> list[dict[str, Any]]:
        """The devices ``actor`` may manage; 503 without a device backend."""
        found = await self._ask("list_devices", actor=actor)
        if found is None:
            raise EnterpriseError(503, NO_DEVICE_BACKEND)
        return [device_entry(d) for d in found if isinstance(d, Mapping) and d.get("id") is not None]

    async def install(
        self, app: dict[str, Any], device_id: str, actor: dict[str, Any], device_type: str | None = None
    ) -> dict[str, Any]:
        """Ask the device backend to install ``app`` on a device ``actor`` may manage."""
        if device_id not in {d["id"] for d in await self.devices(actor)}:
            raise EnterpriseError(404, f"No device {device_id!r} that you may manage")
        operation = await self._ask(
            "install_on_device", device_id=device_id, package=device_package(app), actor=actor
        )
        if operation is None:
            raise EnterpriseError(503, NO_DEVICE_BACKEND)
        record = {
            "app": app["name"],
            "assetId": asset_id(app["name"]),
            "version": app["version"],
            "device": device_id,
            "deviceType": device_type,
            "user": actor.get("user"),
            "status": "requested",
            "operation": operation if isinstance(operation, dict) else {"result": operation},
            "dateCreated": now_iso(),
        }
        db = self._host.db
        with db.transaction():
            db.table(TABLE).upsert(record, _key(app["name"], device_id))
        await self._host.publish("enterprise-device-install", record, publisher="enterprise")
        return record

    async def uninstall_for_user(
        self, app: dict[str, Any], actor: dict[str, Any]
    ) -> tuple[list[str], dict[str, str]]:
        """Remove ``app`` from the devices ``actor`` installed it on.

        Returns (devices it was removed from, devices it is still on), and the reason
        for each device it is still on: no plugin removes apps from devices, or the
        device backend refused (the device is offline, say).
        """
        rows = [
            dict(r) for r in self._host.db.table(TABLE).search(
                (Query().app == app["name"]) & (Query().user == actor.get("user")) & (Query().status != "removed")
            )
        ]
        removed: list[str] = []
        kept: dict[str, str] = {}
        for row in rows:
            try:
                answer = await self._ask(
                    "uninstall_from_device", device_id=row["device"], package=device_package(app), actor=actor
                )
            except (BoltError, EnterpriseError) as exc:
                kept[row["device"]] = exc.message
                continue
            if answer is None:
                kept[row["device"]] = "no loaded plugin can remove apps from devices"
                continue
            with self._host.db.transaction():
                self._host.db.table(TABLE).update(
                    {"status": "removed", "dateRemoved": now_iso()}, _key(app["name"], row["device"])
                )
            removed.append(row["device"])
        return removed, kept

    def records(self, app: str | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self._host.db.table(TABLE).all()]
        return [r for r in rows if app is None or r["app"] == app]

    async def _ask(self, hook_name: str, **kwargs: Any) -> Any:
        try:
            return await self._host.hooks.call(hook_name, **kwargs)
        except (BoltError, EnterpriseError):
            raise
        except Exception as exc:
            status = http_status_of(exc)
            if status is None:
                log.exception("device backend failed in %s", hook_name)
                raise EnterpriseError(502, f"The device backend failed: {type(exc).__name__}: {exc}") from exc
            message = str(getattr(exc, "message", None) or exc)
            log.warning("device backend answered %s in %s: %s", status, hook_name, message)
            raise EnterpriseError(status, message) from exc
