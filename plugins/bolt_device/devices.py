"""The device registry: one row per (account, client id) in ``device_devices``.

A device is created by ``POST /v1/{scopeId}/devices`` or, as in Kapua, on
its first BIRTH.  Its connection status and last-seen time come from the
agent's MQTT presence: BIRTH -> CONNECTED, DC / LWT -> DISCONNECTED.
"""

from __future__ import annotations

import time
from typing import Any

from tinydb import Query

from .kapua import illegal_argument, illegal_null, iso, new_id, not_connected, not_found, optimistic_lock
from .rows import update_by_id

TABLE = "device_devices"
SCHEMA = {1: lambda table: None}
CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"
SEEN_WRITE_SECONDS = 10.0
# BIRTH metrics copied onto the device record (Kura's names -> Kapua's fields).
BIRTH_FIELDS = {
    "display_name": "displayName",
    "model_name": "modelName",
    "model_id": "modelId",
    "serial_number": "serialNumber",
    "firmware_version": "firmwareVersion",
    "os_version": "osVersion",
    "application_framework_version": "applicationFrameworkVersion",
    "application_ids": "applicationIdentifiers",
    "connection_ip": "connectionIp",
}


class Devices:
    """The registry, read from memory and written through to ``device_devices``
    (every read of the host's TinyDB copies the whole file's contents, and every write
    rewrites the whole file).  Presence is the exception: it changes in memory at once and
    :meth:`store_presence` writes every device whose presence changed in one write, so a fleet
    re-announcing itself after a broker restart is a few writes, not one per device."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._db.migrate(TABLE, SCHEMA)
        self._table = db.table(TABLE)
        self._cache: dict[str, dict[str, Any]] = {row["id"]: dict(row) for row in self._table.all()}
        self._by_client: dict[tuple[str, str], str] = {(r["scopeId"], r["clientId"]): i for i, r in self._cache.items()}
        self._stored: set[str] = set(self._cache)  # ids that have a row in the table
        self._presence_dirty: set[str] = set()
        self._seen_dirty: set[str] = set()
        self._seen_written_at = 0.0

    def get(self, scope: str, device_id: str) -> dict[str, Any] | None:
        row = self._cache.get(device_id)
        return dict(row) if row and row["scopeId"] == scope else None

    def by_id(self, device_id: str) -> dict[str, Any] | None:
        row = self._cache.get(device_id)
        return dict(row) if row else None

    def by_client(self, scope: str, client_id: str) -> dict[str, Any] | None:
        row = self._cache.get(self._by_client.get((scope, client_id), ""))
        return dict(row) if row else None

    def _remember(self, record: dict[str, Any]) -> None:
        self._cache[record["id"]] = record
        self._by_client[(record["scopeId"], record["clientId"])] = record["id"]

    def list(self, scope: str | None = None) -> list[dict[str, Any]]:
        rows = [r for r in self._cache.values() if scope is None or r["scopeId"] == scope]
        return sorted((dict(r) for r in rows), key=lambda r: r["clientId"])

    def register(self, scope: str, body: dict[str, Any], created_by: str | None = None) -> dict[str, Any]:
        client_id = body.get("clientId")
        if client_id is None:
            raise illegal_null("deviceCreator.clientId")
        bad = not isinstance(client_id, str) or not client_id or len(client_id) > 255
        if bad or any(c in client_id for c in "/+#"):
            raise illegal_argument("deviceCreator.clientId", client_id, "Use a word without '/', '+' or '#'.")
        display = body.get("displayName")
        if display is not None and not isinstance(display, str):
            raise illegal_argument("deviceCreator.displayName", display)
        with self._db.transaction():
            if self.by_client(scope, client_id) is not None:
                raise illegal_argument("deviceCreator.clientId", client_id, "A device with this client id exists.")
            record = self._new(scope, client_id, created_by or scope)
            if display:
                record["displayName"] = display
            self._table.insert(record)
            self._stored.add(record["id"])
            self._remember(dict(record))
        return record

    def update(self, device: dict[str, Any], body: dict[str, Any], modified_by: str) -> dict[str, Any]:
        """Kapua's device update: ``displayName``, ``status`` and the descriptive fields; a stale
        ``optlock`` is a 409, a different ``clientId`` a 400 (the client id names the device on MQTT)."""
        changes = update_changes(device, body)
        with self._db.transaction():
            current = self._cache.get(device["id"])
            if current is None:
                raise not_found("device", device["id"])
            if body.get("optlock") is not None and body["optlock"] != current["optlock"]:
                raise optimistic_lock("device", device["id"])
            changes.update(modifiedOn=iso(), modifiedBy=modified_by, optlock=current["optlock"] + 1)
            self._table.update(changes, Query().id == device["id"])
            current.update(changes)
            return dict(current)

    def delete(self, device: dict[str, Any]) -> None:
        """Forget a device (a connected one is registered again by its next BIRTH, as in Kapua)."""
        with self._db.transaction():
            self._table.remove(Query().id == device["id"])
            removed = self._cache.pop(device["id"], None)
            if removed is not None:
                self._by_client.pop((removed["scopeId"], removed["clientId"]), None)
            self._stored.discard(device["id"])
            self._presence_dirty.discard(device["id"])
            self._seen_dirty.discard(device["id"])

    def _new(self, scope: str, client_id: str, created_by: str) -> dict[str, Any]:
        now = iso()
        return {
            "id": new_id(),
            "scopeId": scope,
            "clientId": client_id,
            "displayName": client_id,
            "status": "ENABLED",
            "connectionId": new_id(),
            "connectionStatus": DISCONNECTED,
            "connectionCreatedOn": now,
            "connectionModifiedOn": now,
            "lastEvent": None,
            "lastSeen": None,
            "createdOn": now,
            "createdBy": created_by,
            "modifiedOn": now,
            "modifiedBy": created_by,
            "optlock": 1,
        }

    def presence(
        self, scope: str, client_id: str, resource: str, sent_on: str, metrics: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record a BIRTH, DC or LWT in memory (creating the device on its first BIRTH); it is
        stored by the next :meth:`store_presence`."""
        metrics = metrics or {}
        now = iso()
        current = self._cache.get(self._by_client.get((scope, client_id), ""))
        if current is None:
            current = self._new(scope, client_id, scope)
            self._remember(current)
        changes: dict[str, Any] = {
            "connectionStatus": CONNECTED if resource == "BIRTH" else DISCONNECTED,
            "connectionModifiedOn": now,
            "lastSeen": now,
            "modifiedOn": now,
            "optlock": current["optlock"] + 1,
            "lastEvent": {
                "id": new_id(),
                "resource": resource,
                "action": "CREATE",
                "responseCode": "ACCEPTED",
                "sentOn": sent_on,
                "receivedOn": now,
                "createdOn": now,
                "eventMessage": "~~".join(f"{k}={v}" for k, v in sorted(metrics.items()) if k != "bolt.jobs"),
            },
        }
        if resource == "BIRTH":
            if metrics.get("bolt.boot"):
                changes["agentBoot"] = str(metrics["bolt.boot"])  # see bolt_device.reconciler
            changes.update({field: str(metrics[m]) for m, field in BIRTH_FIELDS.items() if metrics.get(m) is not None})
        current.update(changes)
        self._presence_dirty.add(current["id"])
        return dict(current)

    def take_presence(self) -> set[str]:
        """The devices whose presence changed since the last call (on the event loop, where
        :meth:`presence` adds to the set), for :meth:`store_presence`."""
        dirty, self._presence_dirty = self._presence_dirty, set()
        return dirty

    def store_presence(self, dirty: set[str]) -> None:
        """Store the devices ``dirty`` names in one write (call it off the event loop; on failure
        hand them back with :meth:`retry_presence`).  Rows are copied under the database lock,
        so an update or delete made meanwhile is what gets stored."""
        with self._db.transaction():
            rows = [dict(self._cache[d]) for d in dirty if d in self._cache]
            new = [row for row in rows if row["id"] not in self._stored]
            new_ids = {row["id"] for row in new}
            if new:
                self._table.insert_multiple(new)
                self._stored.update(row["id"] for row in new)
            update_by_id(self._table, {row["id"]: row for row in rows if row["id"] not in new_ids})

    def retry_presence(self, dirty: set[str]) -> None:
        self._presence_dirty |= dirty

    def seen(self, device_id: str) -> None:
        """Any message from the device proves it is there: refresh the last-seen time in
        memory; :meth:`write_seen` stores the refreshed ones together."""
        record = self._cache.get(device_id)
        if record is None:
            return
        record["lastSeen"] = iso()
        self._seen_dirty.add(device_id)

    def write_seen(self) -> None:
        """Store the last-seen times refreshed since the last call, in one write, at most every
        SEEN_WRITE_SECONDS (a write per device would rewrite the whole database per device;
        call it off the event loop)."""
        if not self._seen_dirty or time.monotonic() - self._seen_written_at < SEEN_WRITE_SECONDS:
            return
        dirty, self._seen_dirty = self._seen_dirty, set()
        self._seen_written_at = time.monotonic()
        with self._db.transaction():
            update_by_id(self._table, {d: {"lastSeen": self._cache[d]["lastSeen"]} for d in dirty if d in self._cache})

    def mark_all_disconnected(self) -> None:
        """At manager start-up nothing is known: devices re-announce when they see the manager."""
        changes = {"connectionStatus": DISCONNECTED, "connectionModifiedOn": iso()}
        with self._db.transaction():
            self._table.update(changes)
        for record in self._cache.values():
            record.update(changes)


def require_reachable(device: dict[str, Any]) -> None:
    """Refuse a request to a device that is DISABLED or not CONNECTED, as Kapua does: its
    broker refuses a disabled device's connection, so a call to one is DEVICE_NOT_CONNECTED
    (409), before any operation is created or anything is sent."""
    disabled = device.get("status") == "DISABLED"
    if disabled or device["connectionStatus"] != CONNECTED:
        raise not_connected(device["id"], device["clientId"], device["connectionStatus"], disabled)


EDITABLE_FIELDS = ("displayName", "serialNumber", "modelId", "modelName", "firmwareVersion", "osVersion",
                   "applicationFrameworkVersion")


def update_changes(device: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    client_id = body.get("clientId")
    if client_id is not None and client_id != device["clientId"]:
        raise illegal_argument("device.clientId", client_id, "The client id of a device cannot change.")
    changes: dict[str, Any] = {}
    status = body.get("status")
    if status is not None:
        if status not in ("ENABLED", "DISABLED"):
            raise illegal_argument("device.status", status, "Expected ENABLED or DISABLED.")
        changes["status"] = status
    for name in EDITABLE_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 255:
            raise illegal_argument(f"device.{name}", value, "Expected a string of at most 255 characters.")
        changes[name] = value
    return changes


def public_device(record: dict[str, Any]) -> dict[str, Any]:
    """The Kapua ``device`` body of a registry row."""
    body: dict[str, Any] = {
        "type": "device",
        "id": record["id"],
        "scopeId": record["scopeId"],
        "clientId": record["clientId"],
        "displayName": record.get("displayName") or record["clientId"],
        "status": record.get("status", "ENABLED"),
        "connectionId": record["connectionId"],
        "connection": {
            "type": "deviceConnection",
            "id": record["connectionId"],
            "scopeId": record["scopeId"],
            "clientId": record["clientId"],
            "status": record["connectionStatus"],
            "protocol": "MQTT",
            "createdOn": record["connectionCreatedOn"],
            "modifiedOn": record["connectionModifiedOn"],
            "allowUserChange": False,
            "userCouplingMode": "INHERITED",
        },
        "tagIds": [],
        "createdOn": record["createdOn"],
        "createdBy": record["createdBy"],
        "modifiedOn": record["modifiedOn"],
        "modifiedBy": record["modifiedBy"],
        "optlock": record["optlock"],
    }
    for field in BIRTH_FIELDS.values():
        if record.get(field) is not None and field not in body:
            body[field] = record[field]
    event = record.get("lastEvent")
    if event:
        body["lastEventId"] = event["id"]
        body["lastEvent"] = {
            "type": "deviceEvent",
            "scopeId": record["scopeId"],
            "deviceId": record["id"],
            **event,
        }
    if record.get("lastSeen"):
        body["lastSeenOn"] = record["lastSeen"]  # bolt extension: any message refreshes it
    return body


def now_ms() -> int:
    return int(time.time() * 1000)
