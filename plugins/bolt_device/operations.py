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

import asyncio
import builtins
from typing import Any

from tinydb import Query

from .kapua import iso, new_id
from .rows import update_by_id

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
    """Operations and notifications.  Running operations and their notifications are
    also kept in memory, so a burst of notifications costs two writes per batch and
    no reads (every read of the host's TinyDB copies the whole file's contents)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        db.migrate(OPERATIONS, SCHEMA)
        db.migrate(NOTIFICATIONS, SCHEMA)
        self._ops = db.table(OPERATIONS)
        self._notes = db.table(NOTIFICATIONS)
        self._running: dict[str, dict[str, Any]] = {}  # operation id -> record
        self._by_job: dict[str, str] = {}  # job id (operationId) -> operation id
        self._running_notes: dict[str, list[dict[str, Any]]] = {}
        self._ended_jobs: dict[str, str] = {}  # job id -> final status, for replays after the end
        self._doc_ids: dict[str, int] = {}  # operation id and job id -> TinyDB doc id, for ended ones
        for row in self._ops.all():
            self._index(row, row.doc_id)
            if row["status"] == RUNNING:
                self._remember(dict(row))
        self._seq = len(self._notes)
        self._to_insert: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._inserter: asyncio.Task[None] | None = None

    def _index(self, record: dict[str, Any], doc_id: int) -> None:
        self._doc_ids[record["id"]] = self._doc_ids[record["operationId"]] = doc_id

    def _stored(self, operation_id: str) -> dict[str, Any] | None:
        """An operation's row, by its id or job id, without scanning the table."""
        doc_id = self._doc_ids.get(operation_id)
        row = self._ops.get(doc_id=doc_id) if doc_id is not None else None
        return dict(row) if row else None

    def _remember(self, record: dict[str, Any]) -> None:
        self._running[record["id"]] = record
        self._by_job[record["operationId"]] = record["id"]
        self._running_notes[record["id"]] = [dict(n) for n in self._notes.search(Query().operationId == record["id"])]

    def _forget(self, record: dict[str, Any], status: str) -> None:
        self._running.pop(record["id"], None)
        self._running_notes.pop(record["id"], None)
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
        self._running[record["id"]] = dict(record)
        self._by_job[record["operationId"]] = record["id"]
        self._running_notes[record["id"]] = []
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_insert.append((record, stored))
        if self._inserter is None or self._inserter.done():
            self._inserter = asyncio.create_task(self._insert_pending())
        await stored
        return record

    async def _insert_pending(self) -> None:
        while self._to_insert:
            batch, self._to_insert = self._to_insert, []
            try:
                await asyncio.to_thread(self._insert_batch, [record for record, _ in batch])
            except Exception as exc:
                for record, stored in batch:
                    self._forget(record, FAILED)
                    if not stored.done():
                        stored.set_exception(exc)
                continue
            for _, stored in batch:
                if not stored.done():
                    stored.set_result(None)

    def _insert_batch(self, records: list[dict[str, Any]]) -> None:
        with self._db.transaction():
            for record, doc_id in zip(records, self._ops.insert_multiple(records), strict=True):
                self._index(record, doc_id)

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
        query = (Query().scopeId == scope) & (Query().deviceId == device_id)
        if resource:
            query &= Query().resource == resource
        return sorted((dict(r) for r in self._ops.search(query)), key=lambda r: r["createdOn"])

    def notifications(self, operation: dict[str, Any], resource: str | None = None) -> builtins.list[dict[str, Any]]:
        if operation["id"] in self._running_notes:
            found = [dict(n) for n in self._running_notes[operation["id"]]]
        else:
            found = [dict(r) for r in self._notes.search(Query().operationId == operation["id"])]
        if resource:
            found = [n for n in found if n["resource"] == resource]
        return sorted(found, key=lambda r: (r["sentOn"], r["seq"]))

    # changes ------------------------------------------------------------------
    def notification(self, operation: dict[str, Any], notification_id: str) -> dict[str, Any] | None:
        return next((n for n in self.notifications(operation) if n["id"] == notification_id), None)

    def delete(self, operation: dict[str, Any]) -> None:
        """Remove an operation and its notifications (Kapua's registry delete); a running one
        is forgotten, so its device's later notifications are dropped."""
        with self._db.transaction():
            current = self._running.get(operation["id"])
            if current is not None:
                self._forget(current, "DELETED")
            self._ops.remove(Query().id == operation["id"])
            self._notes.remove(Query().operationId == operation["id"])
            for key in (operation["id"], operation["operationId"]):
                self._doc_ids.pop(key, None)

    def delete_notification(self, operation: dict[str, Any], notification_id: str) -> bool:
        with self._db.transaction():
            known = self._running_notes.get(operation["id"])
            if known is not None:
                known[:] = [n for n in known if n["id"] != notification_id]
            removed = self._notes.remove((Query().operationId == operation["id"]) & (Query().id == notification_id))
        return bool(removed)

    def _closing(self, record: dict[str, Any], status: str, reason: str | None) -> dict[str, Any]:
        lines = [_log_line(n) for n in self.notifications(record)]
        if reason:
            lines.append(reason)
        now = iso()
        return {"status": status, "endedOn": now, "log": "\n".join(lines), "modifiedOn": now,
                "optlock": record["optlock"] + 1}

    def close(self, operation: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
        """End ``operation`` with ``status`` unless it already ended; the log gathers every message."""
        with self._db.transaction():
            current = self._running.get(operation["id"])
            if current is None:
                return self._stored(operation["id"]) or dict(operation)
            changes = self._closing(current, status, reason)
            self._ops.update(changes, Query().id == operation["id"])
            self._forget(current, status)
            return {**current, **changes}

    def notify(self, operation: dict[str, Any], metrics: dict[str, Any], resource: str, sent_on: str) -> dict | None:
        """Store one device notification; see :meth:`notify_many`."""
        ended = self.notify_many([(operation, metrics, resource, sent_on)])
        return ended[0] if ended else self._running.get(operation["id"])

    def notify_many(
        self, items: builtins.list[tuple[dict[str, Any], dict[str, Any], str, str]]
    ) -> builtins.list[dict[str, Any]]:
        """Store a batch of notifications (duplicates and those of ended operations are
        dropped: devices re-send their last ones after a reconnect) and close the
        operations they end.  Returns the operations that ended."""
        with self._db.transaction():
            new_notes: list[dict[str, Any]] = []
            ending: dict[str, str] = {}
            for operation, metrics, resource, sent_on in items:
                current = self._running.get(operation["id"])
                if current is None or current["id"] in ending:
                    continue
                note = self._note(current, metrics, resource, sent_on)
                known = self._running_notes[current["id"]]
                if any(n["resource"] == resource and n["status"] == note["status"] and n["progress"] == note["progress"]
                       and n["message"] == note["message"] for n in known):
                    continue
                known.append(note)
                new_notes.append(note)
                if note["status"] == FAILED:
                    ending[current["id"]] = FAILED
                elif note["status"] == COMPLETED and self._is_final_step(current, resource):
                    ending[current["id"]] = COMPLETED
            if new_notes:
                self._notes.insert_multiple(new_notes)
            ended = []
            updates = {}
            for operation_id, status in ending.items():
                current = self._running[operation_id]
                updates[operation_id] = self._closing(current, status, None)
                ended.append({**current, **updates[operation_id]})
            update_by_id(self._ops, updates)
            for record in ended:
                self._forget(record, record["status"])
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
