"""Device management operations and their notifications (Kapua's registry).

An operation starts RUNNING when the manager sends a request and ends
COMPLETED or FAILED from the device's notifications, following Kapua's
``DeviceManagementRegistryManagerServiceImpl``: any FAILED closes it as
FAILED; COMPLETED closes it only on the final step (a ``download`` whose
request had ``install=false``, an ``install``, an ``uninstall``).  On close
the notifications' messages are joined into ``log``.

Download credentials are never stored: only the fact that some were given.
"""

from __future__ import annotations

from typing import Any

from tinydb import Query

from bolt_device.kapua import iso, new_id

OPERATIONS = "device_operations"
NOTIFICATIONS = "device_notifications"
SCHEMA = {1: lambda table: None}
RUNNING, COMPLETED, FAILED, STALE = "RUNNING", "COMPLETED", "FAILED", "STALE"
# Kura notification statuses -> Kapua's (TranslatorAppNotifyKuraKapua); others stay None.
KURA_STATUS = {"IN_PROGRESS": RUNNING, "COMPLETED": COMPLETED, "FAILED": FAILED}
SECRET_PROPERTIES = {"username", "password"}


def property_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "string"


class Operations:
    def __init__(self, db: Any) -> None:
        self._db = db
        db.migrate(OPERATIONS, SCHEMA)
        db.migrate(NOTIFICATIONS, SCHEMA)
        self._ops = db.table(OPERATIONS)
        self._notes = db.table(NOTIFICATIONS)

    def create(
        self, device: dict[str, Any], resource: str, properties: dict[str, Any], created_by: str
    ) -> dict[str, Any]:
        now = iso()
        record = {
            "id": new_id(),
            "operationId": new_id(),
            "scopeId": device["scopeId"],
            "deviceId": device["id"],
            "appId": "DEPLOY",
            "action": "EXECUTE",
            "resource": resource,
            "status": RUNNING,
            "startedOn": now,
            "endedOn": None,
            "log": "",
            "properties": {k: v for k, v in properties.items() if k.rsplit(".", 1)[-1] not in SECRET_PROPERTIES},
            "createdOn": now,
            "createdBy": created_by,
            "modifiedOn": now,
            "modifiedBy": created_by,
            "optlock": 1,
        }
        with self._db.transaction():
            self._ops.insert(record)
        return record

    def get(self, scope: str, device_id: str, operation_id: str) -> dict[str, Any] | None:
        query = (Query().scopeId == scope) & (Query().deviceId == device_id)
        query &= (Query().id == operation_id) | (Query().operationId == operation_id)
        row = self._ops.get(query)
        return dict(row) if row else None

    def by_job(self, job_id: str) -> dict[str, Any] | None:
        row = self._ops.get(Query().operationId == job_id)
        return dict(row) if row else None

    def list(self, scope: str, device_id: str, resource: str | None = None) -> list[dict[str, Any]]:
        query = (Query().scopeId == scope) & (Query().deviceId == device_id)
        if resource:
            query &= Query().resource == resource
        return sorted((dict(r) for r in self._ops.search(query)), key=lambda r: r["createdOn"])

    def running(self, device_id: str | None = None) -> list[dict[str, Any]]:
        query = Query().status == RUNNING
        if device_id is not None:
            query &= Query().deviceId == device_id
        return [dict(r) for r in self._ops.search(query)]

    def notifications(self, operation: dict[str, Any], resource: str | None = None) -> list[dict[str, Any]]:
        query = Query().operationId == operation["id"]
        if resource:
            query &= Query().resource == resource
        return sorted((dict(r) for r in self._notes.search(query)), key=lambda r: (r["sentOn"], r["seq"]))

    # changes ------------------------------------------------------------------
    def close(self, operation: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
        """End ``operation`` with ``status`` unless it already ended; the log gathers every message."""
        with self._db.transaction():
            current = self._ops.get(Query().id == operation["id"])
            if current is None or current["status"] != RUNNING:
                return dict(current or operation)
            lines = [_log_line(n) for n in self.notifications(current)]
            if reason:
                lines.append(reason)
            now = iso()
            changes = {
                "status": status,
                "endedOn": now,
                "log": "\n".join(lines),
                "modifiedOn": now,
                "optlock": current["optlock"] + 1,
            }
            self._ops.update(changes, Query().id == operation["id"])
            return {**dict(current), **changes}

    def notify(self, operation: dict[str, Any], metrics: dict[str, Any], resource: str, sent_on: str) -> dict | None:
        """Store a device notification and close the operation when it says so.

        Returns the updated operation, or None when the notification was a
        duplicate (devices re-send their last notifications after a reconnect).
        """
        prefix = f"dp.{resource}."
        raw_status = metrics.get(prefix + "status", metrics.get("status"))
        status = KURA_STATUS.get(str(raw_status)) if raw_status is not None else None
        progress = _int(metrics.get(prefix + "progress", metrics.get("progress")), 0)
        message = str(metrics.get(prefix + "error.message") or metrics.get("message") or "")
        with self._db.transaction():
            existing = self.notifications(operation, resource)
            if any(n["status"] == status and n["progress"] == progress and n["message"] == message for n in existing):
                return None
            self._notes.insert(
                {
                    "id": new_id(),
                    "scopeId": operation["scopeId"],
                    "operationId": operation["id"],
                    "resource": resource,
                    "status": status,
                    "progress": progress,
                    "message": message,
                    "sentOn": sent_on,
                    "createdOn": iso(),
                    "seq": len(self._notes),
                }
            )
        if status == FAILED:
            return self.close(operation, FAILED)
        if status == COMPLETED and self._is_final_step(operation, resource):
            return self.close(operation, COMPLETED)
        return self._ops.get(Query().id == operation["id"])

    @staticmethod
    def _is_final_step(operation: dict[str, Any], resource: str) -> bool:
        if resource == "download":
            return operation["properties"].get("kapua.package.download.install") is False
        return resource in ("install", "uninstall")


def _log_line(note: dict[str, Any]) -> str:
    line = f"{note['resource']} {note.get('status') or '-'} {note['progress']}%"
    return line + (f": {note['message']}" if note["message"] else "")


def _int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def public_operation(record: dict[str, Any]) -> dict[str, Any]:
    body = {
        "type": "deviceManagementOperation",
        "id": record["id"],
        "scopeId": record["scopeId"],
        "operationId": record["operationId"],
        "deviceId": record["deviceId"],
        "appId": record["appId"],
        "action": record["action"],
        "resource": record["resource"],
        "status": record["status"],
        "startedOn": record["startedOn"],
        "log": record.get("log") or "",
        "operationProperties": [
            {"name": name, "propertyType": property_type(value), "propertyValue": str(value).lower()
             if isinstance(value, bool) else str(value)}
            for name, value in sorted(record["properties"].items())
        ],
        "createdOn": record["createdOn"],
        "createdBy": record["createdBy"],
        "modifiedOn": record["modifiedOn"],
        "modifiedBy": record["modifiedBy"],
        "optlock": record["optlock"],
    }
    if record.get("endedOn"):
        body["endedOn"] = record["endedOn"]
    return body


def public_notification(record: dict[str, Any]) -> dict[str, Any]:
    body = {
        "type": "managementOperationNotification",
        "id": record["id"],
        "scopeId": record["scopeId"],
        "operationId": record["operationId"],
        "resource": record["resource"],
        "progress": record["progress"],
        "sentOn": record["sentOn"],
        "createdOn": record["createdOn"],
        "message": record["message"],
    }
    if record.get("status"):
        body["status"] = record["status"]
    return body
