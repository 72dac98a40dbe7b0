"""The apps table: its name and schema, which records a listing's criteria match, and the
checks of an admin's changes to a record."""

from __future__ import annotations

from typing import Any

from tinydb.table import Table

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.limits import LimitError, check_limits
from bolt_host.storage import INITIAL_SCHEMA

TABLE = "apps"


def _split_path_and_folder(table: Table) -> None:
    """Version 2: ``path`` is Bolt's (where the app came from); the host's folder moves to ``folder``."""
    for row in table.all():
        if "folder" in row:
            continue
        source = row.get("source") or {}
        path = source.get("path") or source.get("package") or row["name"]
        moved = {"folder": row.get("path"), "path": path, "module": row.get("module", False)}
        table.update(moved, doc_ids=[row.doc_id])


SCHEMAS = {TABLE: {**INITIAL_SCHEMA, 2: _split_path_and_folder}}


def checked_env(value: Any) -> dict[str, str | None]:
    """An admin's ``env``: names to string values (``null`` removes the admin's value)."""
    if not isinstance(value, dict) or not value:
        raise BoltError(errors.BAD_REQUEST, "'env' must be an object of declared names to strings (null removes one)")
    for key, item in value.items():
        if item is not None and (not isinstance(item, str) or "\x00" in item or len(item) > 4096):
            problem = f"The value of env {key[:40]!r} must be a string (4096 characters at most)"
            raise BoltError(errors.BAD_REQUEST, problem)
    return dict(value)


def checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "limits":
            try:
                checked["adminLimits"] = check_limits(value, allow_null=True)
            except LimitError as exc:
                raise BoltError(errors.BAD_REQUEST, f"'limits' {exc}") from exc
            continue
        if key == "instances":  # the range against the host's cap: the caller checks
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise BoltError(errors.BAD_REQUEST, "'instances' must be a whole number from 1 up, or null")
            checked["adminInstances"] = value
            continue
        if key in {"system", "controlledVisibility", "isolation"}:
            if not isinstance(value, bool):
                raise BoltError(errors.BAD_REQUEST, f"'{key}' must be true or false")
        elif key == "order":
            if not isinstance(value, int) or isinstance(value, bool):
                raise BoltError(errors.BAD_REQUEST, "'order' must be an integer")
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise BoltError(errors.BAD_REQUEST, "'tags' must be a list of strings")
        elif not isinstance(value, str):
            raise BoltError(errors.BAD_REQUEST, f"'{key}' must be a string")
        checked[key] = value
    return checked


def matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, list):
        return wanted in [str(a) for a in actual]
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    if isinstance(actual, dict):
        return False
    return str(actual) == wanted
