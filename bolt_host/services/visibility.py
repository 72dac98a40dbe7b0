"""Who may see and use which app: app-roles and app-users (Bolt's checks).

An app with ``controlledVisibility`` is visible only to admins, to users
holding a role the app is granted to, and to users granted the app directly.
Permissions an app declares are granted per role (``permissions`` of the
app-role); admins always hold every permission.
"""

from __future__ import annotations

from typing import Any

from tinydb import Query

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.users import Users, now_iso
from bolt_host.storage import INITIAL_SCHEMA, Database

APP_ROLES = "app_roles"
APP_USERS = "app_users"
SCHEMAS = {APP_ROLES: INITIAL_SCHEMA, APP_USERS: INITIAL_SCHEMA}


class Visibility:
    def __init__(self, db: Database, users: Users, apps: Any) -> None:
        self._db = db
        db.migrate_all(SCHEMAS)
        self._users = users
        self._apps = apps

    # grants --------------------------------------------------------------------
    def app_roles(self, app: str | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self._db.table(APP_ROLES).all()]
        return [r for r in rows if app is None or r["app"] == app]

    def grant_role(self, app: str, role: str, permissions: Any = None, by: str | None = None) -> dict[str, Any]:
        self._apps.require(app)
        if self._users.role(role) is None:
            raise BoltError(errors.ROLE_NOT_FOUND, f"No role named {role!r}")
        perms = _permission_list(permissions)
        grant = {"app": app, "role": role, "permissions": perms, "grantedBy": by, "dateCreated": now_iso()}
        with self._db.transaction():
            self._db.table(APP_ROLES).upsert(grant, (Query().app == app) & (Query().role == role))
        return grant

    def revoke_role(self, app: str, role: str) -> int:
        with self._db.transaction():
            return len(self._db.table(APP_ROLES).remove((Query().app == app) & (Query().role == role)))

    def app_users(self, app: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self._db.table(APP_USERS).all()]
        return [r for r in rows if (app is None or r["app"] == app) and (user is None or r["user"] == user)]

    def grant_user(self, app: str, user: str, by: str | None = None) -> dict[str, Any]:
        self._apps.require(app)
        found = self._users.get(user)
        if found is None:
            raise BoltError(errors.USER_NOT_FOUND, f"No user named {user!r}")
        user = found["name"]  # as stored: user names match in any case
        grant = {"app": app, "user": user, "grantedBy": by, "dateCreated": now_iso()}
        with self._db.transaction():
            self._db.table(APP_USERS).upsert(grant, (Query().app == app) & (Query().user == user))
        return grant

    def revoke_user(self, app: str, user: str) -> int:
        found = self._users.get(user)
        user = found["name"] if found else user
        with self._db.transaction():
            return len(self._db.table(APP_USERS).remove((Query().app == app) & (Query().user == user)))

    def forget_app(self, app: str) -> None:
        with self._db.transaction():
            self._db.table(APP_ROLES).remove(Query().app == app)
            self._db.table(APP_USERS).remove(Query().app == app)

    # checks --------------------------------------------------------------------
    def visible_apps(self, user_name: str) -> list[dict[str, Any]]:
        user = self._users.get(user_name)
        if user is None:
            raise BoltError(errors.USER_NOT_FOUND)
        apps: list[dict[str, Any]] = self._apps.list()
        if self._users.is_admin(user):
            return apps
        granted = self._granted_apps(user)
        return [a for a in apps if not a.get("controlledVisibility") or a["name"] in granted]

    def _granted_apps(self, user: dict[str, Any]) -> set[str]:
        roles = set(user.get("roles", []))
        by_role = {r["app"] for r in self.app_roles() if r["role"] in roles}
        direct = {r["app"] for r in self.app_users(user=user["name"])}
        return by_role | direct

    def has_permission(self, app_name: str, permission: str, user_name: str) -> bool:
        user = self._users.get(user_name)
        if user is None:
            raise BoltError(errors.USER_NOT_FOUND)
        app = self._apps.require(app_name)
        if self._users.is_admin(user):
            return True
        if permission not in (app.get("permissions") or {}):
            return False
        roles = set(user.get("roles", []))
        return any(
            permission in grant["permissions"] or "*" in grant["permissions"]
            for grant in self.app_roles(app_name)
            if grant["role"] in roles
        )


def _permission_list(permissions: Any) -> list[str]:
    if permissions is None:
        return []
    if isinstance(permissions, str):
        permissions = [permissions]
    if not isinstance(permissions, list) or not all(isinstance(p, str) and p for p in permissions):
        raise BoltError(errors.PERMISSION_NAME_MISSING, "'permissions' must be a list of permission names")
    return sorted(set(permissions))
