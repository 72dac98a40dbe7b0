"""Writing many rows of a TinyDB table at once, by their ``id`` field."""

from __future__ import annotations

from typing import Any

from tinydb import Query


def update_by_id(table: Any, changes: dict[str, dict[str, Any]]) -> None:
    """Apply ``changes`` (row id -> fields) in one write and one pass over ``table``
    (TinyDB's update_multiple tests every condition against every row)."""
    if changes:
        table.update(lambda row: row.update(changes[row["id"]]), Query().id.test(changes.__contains__))
