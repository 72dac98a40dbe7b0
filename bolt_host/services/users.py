"""Users and roles: the people who log in, and what their roles allow."""

from __future__ import annotations

import builtins
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.passwords import hash_password, verify_password
from bolt_host.storage import INITIAL_SCHEMA, Database

USERS = "users"
ROLES = "roles"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_TEXT = 200
SCHEMAS = {USERS: INITIAL_SCHEMA, ROLES: INITIAL_SCHEMA}
MIN_PASSWORD = 8
PUBLIC_FIELDS = ("name", "displayName", "email", "roles", "dateCreated", "isBlocked", "lastVisit", "visits")
DEFAULT_ROLES = (
    {"name": "admin", "isAdmin": True, "description": "Full control of the host"},
    {"name": "guest", "isAdmin": False, "description": "Can use the apps they are granted"},
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """A user without its password hash, safe to answer with."""
    return {key: user.get(key) for key in PUBLIC_FIELDS}


def validate_user_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise BoltError(errors.CREDENTIALS_MISSING, "User name missing")
    if not USER_NAME_RE.match(name):
        raise BoltError(
            errors.BAD_REQUEST,
            "User names are 1-64 characters: letters, digits, '.', '_' or '-'",
        )
    return name


def named(name: str) -> Any:
    """The query for the user called ``name`` in any case: names are kept as they were
    given (``storeUser``) and compared case-insensitively, for uniqueness and for login."""
    folded = name.casefold() if isinstance(name, str) else None
    return Query().name.test(lambda stored: isinstance(stored, str) and stored.casefold() == folded)


def _optional_text(value: Any, field: str) -> str | None:
    """``value`` when it is None or a short string; a clear 400 naming ``field`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BoltError(errors.BAD_REQUEST, f"'{field}' must be a string of at most {MAX_TEXT} characters")
    return value


def validate_password(password: Any) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise BoltError(errors.BAD_REQUEST, f"Passwords need at least {MIN_PASSWORD} characters")
    return password


class Users:
    """User and role records in the host db."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate_all(SCHEMAS)

    # roles ---------------------------------------------------------------
    def ensure_default_roles(self) -> None:
        with self._db.transaction():
            table = self._db.table(ROLES)
            for role in DEFAULT_ROLES:
                if not table.contains(Query().name == role["name"]):
                    table.insert(dict(role))

    def roles(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.table(ROLES).all()]

    def role(self, name: str) -> dict[str, Any] | None:
        found = self._db.table(ROLES).get(Query().name == name)
        return dict(found) if found else None

    def create_role(self, name: Any, is_admin: bool = False, description: Any = "") -> dict[str, Any]:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BoltError(errors.ROLE_NAME_MISSING, "Role name missing or invalid")
        if not isinstance(is_admin, bool):
            raise BoltError(errors.BAD_REQUEST, "'isAdmin' must be true or false")
        description = _optional_text(description, "description") or ""
        with self._db.transaction():
            table = self._db.table(ROLES)
            if table.contains(Query().name == name):
                raise BoltError(errors.ROLE_EXISTS)
            role = {"name": name, "isAdmin": is_admin, "description": description}
            table.insert(role)
        return role

    def is_admin(self, user: dict[str, Any] | None) -> bool:
        if not user or user.get("isBlocked"):
            return False
        admin_roles = {r["name"] for r in self.roles() if r.get("isAdmin")}
        return bool(admin_roles.intersection(user.get("roles", [])))

    # users ---------------------------------------------------------------
    def count(self) -> int:
        return len(self._db.table(USERS))

    def get(self, name: str) -> dict[str, Any] | None:
        found = self._db.table(USERS).get(named(name))
        return dict(found) if found else None

    def list(self, criteria: dict[str, str] | None = None) -> list[dict[str, Any]]:
        users = [public_user(u) for u in self._db.table(USERS).all()]
        for key, value in (criteria or {}).items():
            users = [u for u in users if _matches(u.get(key), value)]
        return users

    def create(
        self, name: Any, password: Any, roles: Any = None, display_name: Any = None, email: Any = None
    ) -> dict[str, Any]:
        name = validate_user_name(name)
        password = validate_password(password)
        display_name = _optional_text(display_name, "displayName")
        email = _optional_text(email, "email")
        if email and not EMAIL_RE.match(email):
            raise BoltError(errors.BAD_REQUEST, "'email' must look like name@example.org")
        roles = self._checked_roles(roles if roles is not None else ["guest"])
        with self._db.transaction():
            table = self._db.table(USERS)
            if table.contains(named(name)):
                raise BoltError(errors.USER_EXISTS)
            user = {
                "name": name,
                "displayName": display_name or name,
                "email": email or None,
                "roles": roles,
                "passwordHash": hash_password(password),
                "dateCreated": now_iso(),
                "isBlocked": False,
                "lastVisit": None,
                "visits": 0,
            }
            table.insert(user)
        return public_user(user)

    def _checked_roles(self, roles: Any) -> builtins.list[str]:
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise BoltError(errors.BAD_REQUEST, "roles must be a list of role names")
        known = {r["name"] for r in self.roles()}
        unknown = [r for r in roles if r not in known]
        if unknown:
            raise BoltError(errors.ROLE_NOT_FOUND, f"Unknown roles: {', '.join(unknown)}")
        return list(dict.fromkeys(roles))

    def set_roles(self, name: str, roles: Any) -> dict[str, Any]:
        checked = self._checked_roles(roles)
        with self._db.transaction():
            user = self.get(name)
            if user is None:
                raise BoltError(errors.USER_NOT_FOUND)
            demoted = self.is_admin(user) and not self.is_admin({**user, "roles": checked})
            if demoted and sum(self.is_admin(u) for u in self._all_raw()) <= 1:
                raise BoltError(errors.BAD_REQUEST, "Refusing to take the admin role from the last admin")
            self._db.table(USERS).update({"roles": checked}, named(name))
        return public_user(self.get(name) or {})

    def delete(self, name: str) -> dict[str, Any]:
        with self._db.transaction():
            user = self.get(name)
            if user is None:
                raise BoltError(errors.USER_NOT_FOUND)
            if self.is_admin(user) and sum(self.is_admin(u) for u in self._all_raw()) <= 1:
                raise BoltError(errors.BAD_REQUEST, "Refusing to delete the last admin")
            self._db.table(USERS).remove(named(name))
        return public_user(user)

    def _all_raw(self) -> builtins.list[dict[str, Any]]:
        return [dict(u) for u in self._db.table(USERS).all()]

    def check_password(self, name: str, password: str) -> dict[str, Any] | None:
        """The user when ``password`` is right and the user not blocked, else None."""
        user = self.get(name) if isinstance(name, str) else None
        ok = verify_password(password, user["passwordHash"] if user else None)
        if not ok or user is None or user.get("isBlocked"):
            return None
        return user

    def set_password(self, name: str, new_password: Any) -> None:
        new_password = validate_password(new_password)
        with self._db.transaction():
            updated = self._db.table(USERS).update({"passwordHash": hash_password(new_password)}, named(name))
        if not updated:
            raise BoltError(errors.USER_NOT_FOUND)

    def record_visit(self, name: str) -> None:
        with self._db.transaction():
            user = self.get(name)
            if user:
                self._db.table(USERS).update(
                    {"lastVisit": now_iso(), "visits": int(user.get("visits") or 0) + 1},
                    named(name),
                )

    def bootstrap_admin(self, data_dir: Path, password: str | None) -> str | None:
        """Create user ``admin`` on a fresh db.  Returns the generated password, if one was made."""
        self.ensure_default_roles()
        if self.count():
            return None
        generated = None
        if not password:
            password = generated = secrets.token_urlsafe(15)
            _write_private(data_dir / "initial-admin-password", password + "\n")
        self.create("admin", password, roles=["admin"], display_name="Administrator")
        return generated


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, list):
        return wanted in actual
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    return str(actual) == wanted
