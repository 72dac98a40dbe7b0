"""What the Market remembers, in ``host.db`` tables prefixed ``market_``.

``market_instances``: one row per app instance installed through the Market
(clones included): ``{name, user, rawAppName, source, version, title, state,
opType, progress, message, reason, envs, entrances, cloneOf, taskId,
pendingUpgrade, createdAt, updatedAt}``.  ``name`` is the host app's name; ``user`` owns it.
``pendingUpgrade`` (``{version, envs}``) holds the envs of an upgrade in flight: they
apply to that version only, and become ``envs`` when the upgrade succeeds.

``market_logs``: the record of every operation (``GET /logs``), newest kept.
``market_settings``: per-user MarketSettings objects.
``market_app_configs``: per-user install configuration of a package (``PUT
/apps/{id}/config``): ``{user, app, envs, updatedAt}``.
"""

from __future__ import annotations

import time
from typing import Any

from tinydb import Query

INSTANCES = "market_instances"
LOGS = "market_logs"
SETTINGS = "market_settings"
APP_CONFIGS = "market_app_configs"
LOG_KEEP = 5000
INSTANCE_FIELDS = (
    "name", "user", "rawAppName", "source", "version", "title", "state", "opType", "progress",
    "message", "reason", "envs", "entrances", "cloneOf", "taskId", "pendingUpgrade", "createdAt", "updatedAt",
)


def envs_for(row: dict[str, Any], version: str | None) -> list[dict[str, str]]:
    """The envs of instance ``row`` when it runs ``version``: an upgrade's new envs apply to its version only."""
    pending = row.get("pendingUpgrade") or {}
    if pending.get("envs") and pending.get("version") == version:
        return list(pending["envs"])
    return list(row.get("envs") or [])


class MarketStore:
    def __init__(self, db: Any) -> None:
        self._db = db
        for table in (INSTANCES, LOGS, SETTINGS, APP_CONFIGS):
            db.migrate(table, {1: lambda t: None})

    # instances ---------------------------------------------------------------
    def instance(self, name: str) -> dict[str, Any] | None:
        row = self._db.table(INSTANCES).get(Query().name == name)
        return dict(row) if row else None

    def instances(self, user: str | None = None) -> list[dict[str, Any]]:
        table = self._db.table(INSTANCES)
        rows = table.all() if user is None else table.search(Query().user == user)
        return sorted((dict(r) for r in rows), key=lambda r: (r.get("user", ""), r["name"]))

    def save_instance(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {k: row.get(k) for k in INSTANCE_FIELDS}
        row["updatedAt"] = time.time()
        row.setdefault("createdAt", row["updatedAt"])
        if row["createdAt"] is None:
            row["createdAt"] = row["updatedAt"]
        with self._db.transaction():
            self._db.table(INSTANCES).upsert(row, Query().name == row["name"])
        return row

    def update_instance(self, name: str, **changes: Any) -> dict[str, Any] | None:
        with self._db.transaction():
            table = self._db.table(INSTANCES)
            row = table.get(Query().name == name)
            if row is None:
                return None
            updated = {**dict(row), **changes, "updatedAt": time.time()}
            table.update(updated, Query().name == name)
        return updated

    def remove_instances(self, names: list[str]) -> int:
        if not names:
            return 0
        with self._db.transaction():
            removed = self._db.table(INSTANCES).remove(Query().name.one_of(names))
        return len(removed)

    # logs --------------------------------------------------------------------
    def log(self, kind: str, user: str, app: str | None, **fields: Any) -> dict[str, Any]:
        with self._db.transaction():
            table = self._db.table(LOGS)
            record = {"type": kind, "user": user, "app": app, "timestamp": time.time(), **fields}
            record["id"] = table.insert(record)
            if len(table) > LOG_KEEP:
                oldest = sorted(doc.doc_id for doc in table.all())[: len(table) - LOG_KEEP]
                table.remove(doc_ids=oldest)
        return record

    def logs(
        self,
        user: str | None = None,
        kind: str | None = None,
        app: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> list[dict[str, Any]]:
        """Matching records, newest first."""
        found = []
        for doc in self._db.table(LOGS).all():
            if user is not None and doc.get("user") != user:
                continue
            if kind and doc.get("type") != kind:
                continue
            if app and doc.get("app") != app:
                continue
            if start_time is not None and doc["timestamp"] < start_time:
                continue
            if end_time is not None and doc["timestamp"] > end_time:
                continue
            found.append({**doc, "id": doc.doc_id})
        return sorted(found, key=lambda r: r["id"], reverse=True)

    def log_count(self) -> int:
        return len(self._db.table(LOGS))

    # per-user settings -------------------------------------------------------
    def settings(self, user: str) -> dict[str, Any]:
        row = self._db.table(SETTINGS).get(Query().user == user)
        return dict(row.get("settings") or {}) if row else {}

    def save_settings(self, user: str, settings: dict[str, Any]) -> dict[str, Any]:
        with self._db.transaction():
            self._db.table(SETTINGS).upsert({"user": user, "settings": settings}, Query().user == user)
        return settings

    def settings_users(self) -> list[str]:
        return [row["user"] for row in self._db.table(SETTINGS).all()]

    # per-user install configuration of a package -----------------------------
    def app_config(self, user: str, app: str) -> dict[str, Any]:
        q = Query()
        row = self._db.table(APP_CONFIGS).get((q.user == user) & (q.app == app))
        return {"envs": list(row.get("envs") or []), "updatedAt": row.get("updatedAt")} if row else {"envs": []}

    def save_app_config(self, user: str, app: str, envs: list[dict[str, str]]) -> dict[str, Any]:
        q = Query()
        row = {"user": user, "app": app, "envs": envs, "updatedAt": time.time()}
        with self._db.transaction():
            self._db.table(APP_CONFIGS).upsert(row, (q.user == user) & (q.app == app))
        return {"envs": envs, "updatedAt": row["updatedAt"]}
