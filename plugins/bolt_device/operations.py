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

import builtins
from typing import Any

from bolt_host.plugin import JournalFile

from .kapua import iso, new_id

OPERATIONS = "device_operations"
NOTIFICATIONS = "device_notifications"
RUNNING, COMPLETED, FAILED, STALE = "RUNNING", "COMPLETED", "FAILED", "STALE"
# Kura notification statuses -> Kapua's (TranslatorAppNotifyKuraKapua); others stay None.
KURA_STATUS = {"IN_PROGRESS": RUNNING, "COMPLETED": COMPLETED, "FAILED": FAILED}
SECRET_PROPERTIES = {"username", "password"}
SAME_NOTE = ("resource", "status", "progress", "message")  # a re-sent notification repeats these


def property_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "string"


class Operations:
    """Operations and notifications, in the device backend's journal (``device-state.json``):
    a change is made in memory at once and reaches the disk with the next commit, which
    appends only the rows that changed (a burst of notifications costs one small append
    per batch, never a rewrite of a file that grows with the fleet's history)."""

    def __init__(self, state: JournalFile) -> None:
        self._state = state
        self._running: dict[str, dict[str, Any]] = {}  # operation id -> record
        self._by_job: dict[str, str] = {}  # job id (operationId) -> operation id, running ones
        self._job_ids: dict[str, str] = {}  # job id -> operation id, every operation
        self._notes_of: dict[str, list[str]] = {}  # operation id -> its notification ids
        self._ended_jobs: dict[str, str] = {}  # job id -> final status, for replays after the end
        for row in state.shared_rows(OPERATIONS):
            self._job_ids[row["operationId"]] = row["id"]
            if row["status"] == RUNNING:
                self._remember(dict(row))
        self._seq = 0
        for note in state.shared_rows(NOTIFICATIONS):
            self._notes_of.setdefault(note["operationId"], []).append(note["id"])
            self._seq = max(self._seq, int(note.get("seq") or 0))

    async def saved(self) -> None:
        """Return once every change made so far is on disk."""
        await self._state.commit()

    def _stored(self, operation_id: str) -> dict[str, Any] | None:
        """An operation's row, by its id or job id, without scanning the table."""
        return self._state.get(OPERATIONS, self._job_ids.get(operation_id, operation_id))

    def _remember(self, record: dict[str, Any]) -> None:
        self._running[record["id"]] = record
        self._by_job[record["operationId"]] = record["id"]

    def _forget(self, record: dict[str, Any], status: str) -> None:
        self._running.pop(record["id"], None)
        self._by_job.pop(record["operationId"], None)
        self._ended_jobs[record["operationId"]] = status
        if len(self._ended_jobs) > 10_000:
            self._ended_jobs.pop(next(iter(self._ended_jobs)))

    async def create(
        self, device: dict[str, Any], resource: str, properties: dict[str, Any], created_by: str
    ) -> dict[str, Any]:
        """A new RUNNING operation, stored before this returns.  Concurrent creations
        (a fan-out to many devices) are written together, off the event loop."""
        record = self._new(device, resource, properties, created_by)
        self._remember(dict(record))
        self._job_ids[record["operationId"]] = record["id"]
        self._state.put(OPERATIONS, record["id"], record)
        try:
            await self._state.commit()
        except BaseException:
            self._forget(record, FAILED)
            self._job_ids.pop(record["operationId"], None)
            self._state.delete(OPERATIONS, record["id"])
            raise
        return record

    @staticmethod
    def _new(device: dict[str, Any], resource: str, properties: dict[str, Any], created_by: str) -> dict[str, Any]:
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
        return record

    def get(self, scope: str, device_id: str, operation_id: str) -> dict[str, Any] | None:
        running = self._running.get(operation_id) or self._running.get(self._by_job.get(operation_id, ""))
        if running is not None:
            return dict(running) if running["scopeId"] == scope and running["deviceId"] == device_id else None
        row = self._stored(operation_id)
        return row if row and row["scopeId"] == scope and row["deviceId"] == device_id else None

    def running_by_job(self, job_id: str) -> dict[str, Any] | None:
        """The RUNNING operation of a device-side job id, or None (unknown or ended)."""
        operation_id = self._by_job.get(job_id)
        return dict(self._running[operation_id]) if operation_id else None

    def running(self) -> list[dict[str, Any]]:
        """Every RUNNING operation (from memory)."""
        return [dict(record) for record in self._running.values()]

    def list(self, scope: str, device_id: str, resource: str | None = None) -> list[dict[str, Any]]:
        found = [
            r for r in self._state.shared_rows(OPERATIONS)
            if r["scopeId"] == scope and r["deviceId"] == device_id and (not resource or r["resource"] == resource)
        ]
        return sorted((dict(self._state.get(OPERATIONS, r["id"]) or {}) for r in found), key=lambda r: r["createdOn"])

    def notifications(self, operation: dict[str, Any], resource: str | None = None) -> builtins.list[dict[str, Any]]:
        rows = (self._state.get(NOTIFICATIONS, note_id) for note_id in self._notes_of.get(operation["id"], ()))
        found = [n for n in rows if n is not None and (not resource or n["resource"] == resource)]
        return sorted(found, key=lambda r: (r["sentOn"], r["seq"]))

    # changes (in memory at once, on disk with the next commit: callers that answer await saved()) ----
    def notification(self, operation: dict[str, Any], notification_id: str) -> dict[str, Any] | None:
        return next((n for n in self.notifications(operation) if n["id"] == notification_id), None)

    def delete(self, operation: dict[str, Any]) -> None:
        """Remove an operation and its notifications (Kapua's registry delete); a running one
        is forgotten, so its device's later notifications are dropped."""
        current = self._running.get(operation["id"])
        if current is not None:
            self._forget(current, "DELETED")
        self._state.delete(OPERATIONS, operation["id"])
        for note_id in self._notes_of.pop(operation["id"], []):
            self._state.delete(NOTIFICATIONS, note_id)
        self._job_ids.pop(operation["operationId"], None)
        self._state.commit_soon()

    def delete_notification(self, operation: dict[str, Any], notification_id: str) -> bool:
        known = self._notes_of.get(operation["id"], [])
        if notification_id not in known:
            return False
        known.remove(notification_id)
        self._state.delete(NOTIFICATIONS, notification_id)
        self._state.commit_soon()
        return True

    def _closing(self, record: dict[str, Any], status: str, reason: str | None) -> dict[str, Any]:
        lines = [_log_line(n) for n in self.notifications(record)]
        if reason:
            lines.append(reason)
        now = iso()
        return {"status": status, "endedOn": now, "log": "\n".join(lines), "modifiedOn": now,
                "optlock": record["optlock"] + 1}

    def close(self, operation: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
        """End ``operation`` with ``status`` unless it already ended; the log gathers every message."""
        current = self._running.get(operation["id"])
        if current is None:
            return self._stored(operation["id"]) or dict(operation)
        ended = {**current, **self._closing(current, status, reason)}
        self._state.put(OPERATIONS, ended["id"], ended)
        self._forget(current, status)
        self._state.commit_soon()
        return ended

    def notify(self, operation: dict[str, Any], metrics: dict[str, Any], resource: str, sent_on: str) -> dict | None:
        """Store one device notification; see :meth:`notify_many`."""
        ended = self.notify_many([(operation, metrics, resource, sent_on)])
        return ended[0] if ended else self._running.get(operation["id"])

    def notify_many(
        self, items: builtins.list[tuple[dict[str, Any], dict[str, Any], str, str]]
    ) -> builtins.list[dict[str, Any]]:
        """Record a batch of notifications in memory (duplicates and those of ended operations
        are dropped: devices re-send their last ones after a reconnect) and close the
        operations they end; :meth:`saved` makes them durable.  Returns the operations that ended."""
        ending: dict[str, str] = {}
        for operation, metrics, resource, sent_on in items:
            current = self._running.get(operation["id"])
            if current is None or current["id"] in ending:
                continue
            note = self._note(current, metrics, resource, sent_on)
            known = (self._state.shared_row(NOTIFICATIONS, i) for i in self._notes_of.get(current["id"], ()))
            if any(n is not None and all(n[field] == note[field] for field in SAME_NOTE) for n in known):
                continue
            self._state.put(NOTIFICATIONS, note["id"], note)
            self._notes_of.setdefault(current["id"], []).append(note["id"])
            if note["status"] == FAILED:
                ending[current["id"]] = FAILED
            elif note["status"] == COMPLETED and self._is_final_step(current, resource):
                ending[current["id"]] = COMPLETED
        ended = []
        for operation_id, status in ending.items():
            current = self._running[operation_id]
            record = {**current, **self._closing(current, status, None)}
            self._state.put(OPERATIONS, operation_id, record)
            self._forget(record, status)
            ended.append(record)
        return ended

    def _note(self, operation: dict[str, Any], metrics: dict[str, Any], resource: str, sent_on: str) -> dict:
        prefix = f"dp.{resource}."
        raw_status = metrics.get(prefix + "status", metrics.get("status"))
        self._seq += 1
        return {
            "id": new_id(),
            "scopeId": operation["scopeId"],
            "operationId": operation["id"],
            "resource": resource,
            "status": KURA_STATUS.get(str(raw_status)) if raw_status is not None else None,
            "progress": _int(metrics.get(prefix + "progress", metrics.get("progress")), 0),
            "message": str(metrics.get(prefix + "error.message") or metrics.get("message") or ""),
            "sentOn": sent_on,
            "createdOn": iso(),
            "seq": self._seq,
        }

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
