"""Accounts (Kapua scopes) and which account each host user belongs to.

The manager's root account (number 1, id ``AQ``) is named by its
``BOLT_DEVICE_SCOPE``.  A host admin with no explicit membership belongs to
the root account; other users must be added to an account with
``POST /v1/{scopeId}/users``.  Devices belong to the account whose name is in
their MQTT topics (``$EDC/<account>/<client>/...``).
"""

from __future__ import annotations

from typing import Any

from tinydb import Query

from bolt_host.plugin import Host

from .kapua import illegal_argument, iso, not_found, scope_id

ACCOUNTS = "device_accounts"
MEMBERS = "device_user_scopes"
SCHEMA = {1: lambda table: None}
ROOT_NUMBER = 1


class Accounts:
    def __init__(self, host: Host, root_name: str) -> None:
        self._host = host
        self._db = host.db
        self._db.migrate(ACCOUNTS, SCHEMA)
        self._db.migrate(MEMBERS, SCHEMA)
        self.root = self._ensure_root(root_name)
        self._cache: dict[str, dict[str, Any]] = {row["id"]: dict(row) for row in self._db.table(ACCOUNTS).all()}

    def _ensure_root(self, name: str) -> dict[str, Any]:
        with self._db.transaction():
            table = self._db.table(ACCOUNTS)
            found = table.get(Query().number == ROOT_NUMBER)
            if found is None:
                root = self._record(ROOT_NUMBER, name, None)
                table.insert(root)
                return root
            root = dict(found)
            if root["name"] != name:
                table.update({"name": name, "modifiedOn": iso()}, Query().number == ROOT_NUMBER)
                root = dict(table.get(Query().number == ROOT_NUMBER) or root)
        return root

    @staticmethod
    def _record(number: int, name: str, parent: str | None, organization: dict[str, Any] | None = None) -> dict:
        now = iso()
        return {
            "number": number,
            "id": scope_id(number),
            "scopeId": parent or scope_id(number),
            "name": name,
            "parentAccountPath": f"/{ROOT_NUMBER}" if parent is None else f"/{ROOT_NUMBER}/{number}",
            "organization": organization or {"name": name},
            "createdOn": now,
            "modifiedOn": now,
            "optlock": 1,
        }

    # reads --------------------------------------------------------------------
    def get(self, account_id: str) -> dict[str, Any] | None:
        row = self._cache.get(account_id)
        return dict(row) if row else None

    def by_name(self, name: str) -> dict[str, Any] | None:
        row = next((r for r in self._cache.values() if r["name"] == name), None)
        return dict(row) if row else None

    def children(self, parent_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self._cache.values() if r["scopeId"] == parent_id and r["id"] != parent_id]
        return sorted((dict(r) for r in rows), key=lambda r: r["number"])

    def scope_of_user(self, user: dict[str, Any]) -> str | None:
        """The account id ``user`` belongs to, or None when they belong to none."""
        row = self._db.table(MEMBERS).get(Query().user == user["name"])
        if row:
            return row["scopeId"]
        if self._host.users.is_admin(user):
            return self.root["id"]
        return None

    # writes -------------------------------------------------------------------
    def create(self, parent_id: str, name: Any, organization: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(name, str) or not name.strip():
            raise illegal_argument("accountCreator.name", name, "A name is required.")
        name = name.strip()
        if len(name) > 255 or any(ch in name for ch in "/+#\0") or name.startswith("$"):
            raise illegal_argument("accountCreator.name", name, "Names cannot hold '/', '+', '#' or start with '$'.")
        with self._db.transaction():
            table = self._db.table(ACCOUNTS)
            if table.contains(Query().name == name):
                raise illegal_argument("accountCreator.name", name, "An account with this name already exists.")
            number = max((r["number"] for r in table.all()), default=ROOT_NUMBER) + 1
            record = self._record(number, name, parent_id, organization)
            table.insert(record)
            self._cache[record["id"]] = dict(record)
        return record

    def add_member(self, scope: str, user_name: str) -> None:
        if self.get(scope) is None:
            raise not_found("account", scope)
        with self._db.transaction():
            self._db.table(MEMBERS).upsert({"user": user_name, "scopeId": scope}, Query().user == user_name)


def public_account(record: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in record.items() if k != "number"}
    body["type"] = "account"
    return body
