"""Entitlements: which user or role is subscribed to (has installed) which app.

Every entitlement is a row in ``enterprise_subscriptions`` and, while it lasts,
a grant in the host's visibility service, so the app is among the subject's
visible apps and they may open it.  A role grant follows the role: users added
to the role later see the app too.  The store only takes away grants it made:
a grant an admin gave through the core before the subscription stays.
"""

from __future__ import annotations

from typing import Any

from tinydb import Query

from bolt_host.plugin import BoltError, Database, errors, now_iso

TABLE = "enterprise_subscriptions"
SCHEMA = {1: lambda table: None}
KINDS = ("user", "role")


def _key(app: str, kind: str, subject: str) -> Any:
    row = Query()
    return (row.app == app) & (row.kind == kind) & (row.subject == subject)


class Subscriptions:
    def __init__(self, db: Database, users: Any, visibility: Any) -> None:
        self._db = db
        self._users = users
        self._visibility = visibility

    # checks ---------------------------------------------------------------------
    def check_subjects(self, kind: str, subjects: list[str]) -> None:
        """Fail, naming them, when any of ``subjects`` is not a known user or role."""
        if kind not in KINDS:
            raise BoltError(errors.BAD_REQUEST, f"Subscriptions are for a user or a role, not {kind!r}")
        known = self._users.get if kind == "user" else self._users.role
        unknown = [s for s in subjects if not isinstance(s, str) or known(s) is None]
        if unknown:
            code = errors.USER_NOT_FOUND if kind == "user" else errors.ROLE_NOT_FOUND
            raise BoltError(code, f"Unknown {kind}s: {', '.join(map(str, unknown))}")

    def _as_stored(self, kind: str, subject: str) -> str:
        """A user as the host stores the name (names match in any case); roles as given."""
        user = self._users.get(subject) if kind == "user" else None
        return user["name"] if user else subject

    # changes --------------------------------------------------------------------
    def subscribe(
        self, app: str, kind: str, subject: str, by: str | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Subscribe (idempotent: a second call only refreshes ``details``)."""
        self.check_subjects(kind, [subject])
        subject = self._as_stored(kind, subject)
        with self._db.transaction():
            table = self._db.table(TABLE)
            existing = table.get(_key(app, kind, subject))
            if existing is not None:
                table.update({"details": dict(details or {})}, _key(app, kind, subject))
                return {**existing, "details": dict(details or {})}
            owns_grant = not self._granted(app, kind, subject)
            if owns_grant:
                self._grant(app, kind, subject, by)
            row = {
                "app": app,
                "kind": kind,
                "subject": subject,
                "details": dict(details or {}),
                "subscribedBy": by,
                "dateCreated": now_iso(),
                "ownsGrant": owns_grant,
            }
            table.insert(row)
        return row

    def unsubscribe(self, app: str, kind: str, subject: str) -> bool:
        """Remove one entitlement; False when there was none."""
        subject = self._as_stored(kind, subject)
        with self._db.transaction():
            table = self._db.table(TABLE)
            row = table.get(_key(app, kind, subject))
            if row is None:
                return False
            table.remove(_key(app, kind, subject))
            if row.get("ownsGrant"):
                self._revoke(app, kind, subject)
        return True

    def forget_app(self, app: str) -> int:
        """Drop an uninstalled app's rows (the core already dropped its grants)."""
        with self._db.transaction():
            return len(self._db.table(TABLE).remove(Query().app == app))

    def forget_subject(self, kind: str, subject: str) -> int:
        """Drop a deleted user's (or role's) rows and the grants they owned."""
        with self._db.transaction():
            table = self._db.table(TABLE)
            rows = table.search((Query().kind == kind) & (Query().subject == subject))
            for row in rows:
                if row.get("ownsGrant"):
                    self._revoke(row["app"], kind, subject)
            table.remove((Query().kind == kind) & (Query().subject == subject))
        return len(rows)

    # reads ----------------------------------------------------------------------
    def all(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.table(TABLE).all()]

    def for_app(self, app: str) -> list[dict[str, Any]]:
        return [r for r in self.all() if r["app"] == app]

    def for_subject(self, kind: str, subject: str) -> list[dict[str, Any]]:
        return [r for r in self.all() if r["kind"] == kind and r["subject"] == subject]

    def for_user(self, user_name: str) -> list[dict[str, Any]]:
        """The user's own entitlements and those of the roles they hold now."""
        user = self._users.get(user_name)
        roles = set(user.get("roles", [])) if user else set()
        user_name = user["name"] if user else user_name
        return [
            r for r in self.all()
            if (r["kind"] == "user" and r["subject"] == user_name) or (r["kind"] == "role" and r["subject"] in roles)
        ]

    # visibility grants ---------------------------------------------------------
    def _granted(self, app: str, kind: str, subject: str) -> bool:
        if kind == "user":
            return bool(self._visibility.app_users(app=app, user=subject))
        return any(g["role"] == subject for g in self._visibility.app_roles(app))

    def _grant(self, app: str, kind: str, subject: str, by: str | None) -> None:
        if kind == "user":
            self._visibility.grant_user(app, subject, by=by)
        else:
            self._visibility.grant_role(app, subject, by=by)

    def _revoke(self, app: str, kind: str, subject: str) -> None:
        if kind == "user":
            self._visibility.revoke_user(app, subject)
        else:
            self._visibility.revoke_role(app, subject)
