"""Per-app databases (Bolt's db module): each app's collections in ``databases/<app>.json``.

Documents get a string ``_id``.  Queries are Mongo-like: field equality plus
``$eq $ne $gt $gte $lt $lte $in $nin $exists``; dotted names reach into
nested objects.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.storage import Database

COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_RESULTS = 10_000
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}


def validate_collection(name: str) -> str:
    if not COLLECTION_RE.match(name) or name.startswith("_"):
        raise BoltError(errors.COLLECTION_NAME_INVALID, f"Invalid characters in collection name {name[:80]!r}")
    return name


class AppDatabases:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[str, Database] = {}
        # Files open lazily, at an app's first call: clear what a killed writer left for all of them now.
        for leftover in folder.glob(".*.json.*.tmp"):
            leftover.unlink(missing_ok=True)

    def _db(self, app: str) -> Database:
        if app not in self._open:
            self._open[app] = Database(self.folder / f"{app}.json")
        return self._open[app]

    def path(self, app: str) -> Path:
        return self.folder / f"{app}.json"

    def find(self, app: str, collection: str, query: Any, projection: Any = None) -> list[dict[str, Any]]:
        matcher = compile_query(query)
        rows = [dict(r) for r in self._db(app).table(validate_collection(collection)).all() if matcher(r)]
        return [_project(r, projection) for r in rows[:MAX_RESULTS]]

    def find_one(self, app: str, collection: str, query: Any, projection: Any = None) -> dict[str, Any] | None:
        found = self.find(app, collection, query, projection)
        return found[0] if found else None

    def insert(self, app: str, collection: str, documents: Any) -> list[dict[str, Any]]:
        many = documents if isinstance(documents, list) else [documents]
        if not many or not all(isinstance(d, dict) for d in many):
            raise BoltError(errors.DB_QUERY_MISSING, "'object' must be a document or a list of documents")
        db = self._db(app)
        stored = [{**doc, "_id": str(doc.get("_id") or secrets.token_hex(12))} for doc in many]
        with db.transaction():
            db.table(validate_collection(collection)).insert_multiple(stored)
        return stored

    def update(
        self, app: str, collection: str, query: Any, values: Any, upsert: bool = False, multi: bool = False
    ) -> int:
        if not isinstance(values, dict) or not values:
            raise BoltError(errors.DB_QUERY_MISSING, "'values' must be an object of fields to set")
        values = values.get("$set", values)
        if "_id" in values:
            raise BoltError(errors.BAD_REQUEST, "'_id' cannot be changed")
        return self._write(app, collection, query, lambda doc: {**doc, **values}, upsert, multi, values)

    def replace(self, app: str, collection: str, query: Any, document: Any, upsert: bool = False) -> int:
        if not isinstance(document, dict):
            raise BoltError(errors.DB_QUERY_MISSING, "'object' must be a document")
        return self._write(app, collection, query, lambda doc: {**document, "_id": doc["_id"]}, upsert, False, document)

    def _write(
        self,
        app: str,
        collection: str,
        query: Any,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        upsert: bool,
        multi: bool,
        seed: dict[str, Any],
    ) -> int:
        matcher = compile_query(query)
        db = self._db(app)
        with db.transaction():
            table = db.table(validate_collection(collection))
            hits = [r for r in table.all() if matcher(r)]
            if not multi:
                hits = hits[:1]
            for row in hits:
                table.remove(doc_ids=[row.doc_id])
                table.insert(change(dict(row)))
            if not hits and upsert:
                base = {k: v for k, v in (query or {}).items() if not k.startswith("$") and not isinstance(v, dict)}
                table.insert({**base, **seed, "_id": secrets.token_hex(12)})
                return 1
        return len(hits)

    def remove(self, app: str, collection: str, query: Any) -> int:
        if query is None:
            raise BoltError(errors.DB_QUERY_MISSING)
        matcher = compile_query(query)
        db = self._db(app)
        with db.transaction():
            table = db.table(validate_collection(collection))
            ids = [r.doc_id for r in table.all() if matcher(r)]
            table.remove(doc_ids=ids)
        return len(ids)

    def drop_collection(self, app: str, collection: str) -> None:
        db = self._db(app)
        with db.transaction():
            db._db.drop_table(validate_collection(collection))

    def drop_app(self, app: str) -> None:
        """Delete every collection of ``app`` and its file."""
        db = self._open.pop(app, None)
        if db is not None:
            db.close()
        self.path(app).unlink(missing_ok=True)

    def close(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()


def compile_query(query: Any) -> Callable[[dict[str, Any]], bool]:
    if query is None:
        query = {}
    if not isinstance(query, dict):
        raise BoltError(errors.DB_QUERY_MISSING, "'query' must be an object")
    for key, condition in query.items():
        if isinstance(condition, dict) and any(k.startswith("$") for k in condition):
            unknown = set(condition) - _OPERATORS
            if unknown:
                raise BoltError(errors.BAD_REQUEST, f"Unsupported query operators: {', '.join(sorted(unknown))}")
        if key.startswith("$"):
            raise BoltError(errors.BAD_REQUEST, f"Unsupported top-level operator {key!r}")

    def matches(doc: dict[str, Any]) -> bool:
        return all(_field_matches(_lookup(doc, key), cond) for key, cond in query.items())

    return matches


_MISSING = object()


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _field_matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        return all(_operator(value, op, arg) for op, arg in condition.items())
    if isinstance(value, list) and not isinstance(condition, list):
        return condition in value
    return value is not _MISSING and value == condition


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op == "$in":
        return value is not _MISSING and isinstance(arg, list) and value in arg
    if op == "$nin":
        return value is _MISSING or (isinstance(arg, list) and value not in arg)
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if value is _MISSING:
        return False
    try:
        return bool({"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg, "$lte": value <= arg}[op])
    except TypeError:
        return False


def _project(doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    if not isinstance(projection, dict) or not projection:
        return doc
    included = [k for k, v in projection.items() if v]
    if included:
        return {k: doc[k] for k in [*included, "_id"] if k in doc and projection.get(k, 1)}
    return {k: v for k, v in doc.items() if k not in projection}
