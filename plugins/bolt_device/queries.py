"""Kapua's list semantics: ``kapuaQuery`` bodies (``_query`` / ``_count``) and list parameters.

A query body is ``{offset?, limit?, askTotalCount?, predicate?, sortCriteria?}``
(Kapua's ``KapuaQuery``; ``type``, ``scopeId``, ``fetchAttributes`` and
``fetchStyle`` are accepted and ignored).  Predicates are Kapua's
``attributePredicate {attributeName, attributeValue, operator}`` and
``andPredicate`` / ``orPredicate {predicates: [...]}``; ``sortCriteria`` is a
``fieldSortCriteria {attributeName, sortOrder}``.  Attribute names are the
fields of the entity's JSON body (dotted for nested ones, e.g.
``connection.status``).  They run on the answered bodies, so a query can only
see what a ``GET`` shows.

Paging is Kapua's: ``limit`` 0 answers no items (``limitExceeded`` says whether
any matched), ``totalCount`` only when ``askTotalCount`` is true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .kapua import illegal_argument, list_result

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
ASCENDING, DESCENDING = "ASCENDING", "DESCENDING"
Predicate = Callable[[dict[str, Any]], bool]


def _value(body: dict[str, Any], name: str) -> Any:
    value: Any = body
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both as numbers when both are numbers, else both as text; None when either is missing."""
    if left is None or right is None:
        return None
    if isinstance(left, int | float) and not isinstance(left, bool):
        try:
            return left, float(right)
        except (TypeError, ValueError):
            return None
    return _text(left), _text(right)


def _compare(operator: str) -> Callable[[Any, Any], bool]:
    def ordered(check: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
        return lambda left, right: (pair := _ordered(left, right)) is not None and check(*pair)

    return {
        "EQUAL": lambda left, right: _text(left) == _text(right) and left is not None,
        "NOT_EQUAL": lambda left, right: _text(left) != _text(right),
        "IS_NULL": lambda left, right: left is None,
        "NOT_NULL": lambda left, right: left is not None,
        "STARTS_WITH": lambda left, right: left is not None and _text(left).startswith(_text(right)),
        "STARTS_WITH_IGNORE_CASE": lambda left, right: left is not None
        and _text(left).lower().startswith(_text(right).lower()),
        "LIKE": lambda left, right: left is not None and _text(right) in _text(left),
        "LIKE_IGNORE_CASE": lambda left, right: left is not None and _text(right).lower() in _text(left).lower(),
        "GREATER_THAN": ordered(lambda a, b: a > b),
        "GREATER_THAN_OR_EQUAL": ordered(lambda a, b: a >= b),
        "LESS_THAN": ordered(lambda a, b: a < b),
        "LESS_THAN_OR_EQUAL": ordered(lambda a, b: a <= b),
    }[operator]


OPERATORS = (
    "EQUAL", "NOT_EQUAL", "IS_NULL", "NOT_NULL", "STARTS_WITH", "STARTS_WITH_IGNORE_CASE", "LIKE",
    "LIKE_IGNORE_CASE", "GREATER_THAN", "GREATER_THAN_OR_EQUAL", "LESS_THAN", "LESS_THAN_OR_EQUAL",
)


@dataclass
class Query:
    """What a list answers: which items (predicate), in which order, which page."""

    attributes: frozenset[str]
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    ask_total: bool = False
    sort: tuple[str, str] | None = None
    predicates: list[Predicate] = field(default_factory=list)

    def matches(self, body: dict[str, Any]) -> bool:
        return all(check(body) for check in self.predicates)

    def select(self, bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        found = [b for b in bodies if self.matches(b)]
        if self.sort is not None:
            name, order = self.sort
            present = [b for b in found if _value(b, name) is not None]
            missing = [b for b in found if _value(b, name) is None]  # nulls last, as in Kapua's SQL
            present.sort(key=lambda b: _sort_key(_value(b, name)), reverse=order == DESCENDING)
            found = present + missing
        return found

    def result(self, kind: str, bodies: Iterable[dict[str, Any]]) -> dict[str, Any]:
        found = self.select(bodies)
        items = found[self.offset : self.offset + self.limit]
        exceeded = len(found) > self.offset + self.limit
        return list_result(kind, items, total=len(found) if self.ask_total else None, limit_exceeded=exceeded)

    def count(self, bodies: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "kapuaCountResult", "count": sum(1 for b in bodies if self.matches(b))}

    def check_attribute(self, where: str, name: Any) -> str:
        if not isinstance(name, str) or name not in self.attributes:
            known = ", ".join(sorted(self.attributes))
            raise illegal_argument(where, name, f"Expected one of {known}.")
        return name


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, _text(value))


def _whole(where: str, value: Any, default: int, high: int | None = None) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (high is not None and value > high):
        limit = f" to {high}" if high is not None else " or more"
        raise illegal_argument(where, value, f"Expected a whole number from 0{limit}.")
    return value


def _predicate(query: Query, raw: Any, where: str, depth: int = 0) -> Predicate:
    if not isinstance(raw, dict) or depth > 8:
        raise illegal_argument(where, raw, "Expected an attributePredicate, andPredicate or orPredicate object.")
    kind = raw.get("type")
    if kind in ("andPredicate", "orPredicate"):
        parts = raw.get("predicates")
        if not isinstance(parts, list):
            raise illegal_argument(f"{where}.predicates", parts, "Expected a list of predicates.")
        checks = [_predicate(query, part, f"{where}.predicates", depth + 1) for part in parts]
        combine = all if kind == "andPredicate" else any
        return lambda body: combine(check(body) for check in checks)
    if kind not in (None, "attributePredicate"):
        raise illegal_argument(f"{where}.type", kind, "Expected attributePredicate, andPredicate or orPredicate.")
    name = query.check_attribute(f"{where}.attributeName", raw.get("attributeName"))
    operator = raw.get("operator", "EQUAL")
    operator = "STARTS_WITH_IGNORE_CASE" if operator == "STARTS_WITH_IGNORECASE" else operator  # Kapua's spelling
    if operator not in OPERATORS:
        raise illegal_argument(f"{where}.operator", operator, f"Expected one of {', '.join(OPERATORS)}.")
    wanted = raw.get("attributeValue")
    if isinstance(wanted, dict | list):
        raise illegal_argument(f"{where}.attributeValue", wanted, "Expected a single value.")
    test = _compare(operator)
    return lambda body: test(_value(body, name), wanted)


def from_body(body: dict[str, Any], what: str, attributes: Iterable[str]) -> Query:
    """A :class:`Query` from a ``kapuaQuery`` body (400 ``ILLEGAL_ARGUMENT`` on anything unusable)."""
    query = Query(frozenset(attributes))
    query.offset = _whole(f"{what}.offset", body.get("offset"), 0)
    query.limit = _whole(f"{what}.limit", body.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    ask = body.get("askTotalCount", False)
    if ask is not None and not isinstance(ask, bool):
        raise illegal_argument(f"{what}.askTotalCount", ask, "Expected true or false.")
    query.ask_total = bool(ask)
    if body.get("predicate") is not None:
        query.predicates.append(_predicate(query, body["predicate"], f"{what}.predicate"))
    sort = body.get("sortCriteria")
    if sort is not None:
        if not isinstance(sort, dict) or sort.get("type", "fieldSortCriteria") != "fieldSortCriteria":
            raise illegal_argument(f"{what}.sortCriteria", sort, "Expected a fieldSortCriteria object.")
        name = query.check_attribute(f"{what}.sortCriteria.attributeName", sort.get("attributeName"))
        order = sort.get("sortOrder", ASCENDING)
        if order not in (ASCENDING, DESCENDING):
            raise illegal_argument(f"{what}.sortCriteria.sortOrder", order, "Expected ASCENDING or DESCENDING.")
        query.sort = (name, order)
    return query


def from_params(params: Any, attributes: Iterable[str], sortable: bool = False) -> Query:
    """A :class:`Query` from list parameters: ``offset``, ``limit``, ``askTotalCount`` and,
    where the route has them, ``sortParam`` / ``sortDir``.  An empty value is refused."""
    query = Query(frozenset(attributes))
    query.offset = _whole("offset", _number_param(params, "offset"), 0)
    query.limit = _whole("limit", _number_param(params, "limit"), DEFAULT_LIMIT, MAX_LIMIT)
    ask = params.get("askTotalCount")
    if ask is not None:
        if ask.lower() not in ("true", "false"):
            raise illegal_argument("askTotalCount", ask, "Expected true or false.")
        query.ask_total = ask.lower() == "true"
    if sortable and params.get("sortParam") is not None:
        name = query.check_attribute("sortParam", params.get("sortParam"))
        order = (params.get("sortDir") or ASCENDING).upper()
        if order not in (ASCENDING, DESCENDING):
            raise illegal_argument("sortDir", params.get("sortDir"), "Expected ASCENDING or DESCENDING.")
        query.sort = (name, order)
    return query


def _number_param(params: Any, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise illegal_argument(name, raw, "Expected a whole number.") from exc


def equal(name: str, wanted: Any) -> Predicate:
    return lambda body: _text(_value(body, name)) == _text(wanted)


# The attributes each entity's queries may name (fields of its JSON body).
OPERATION_ATTRIBUTES = frozenset({
    "id", "scopeId", "operationId", "deviceId", "appId", "action", "resource", "status", "startedOn", "endedOn",
    "log", "createdOn", "createdBy", "modifiedOn", "modifiedBy", "optlock",
})
NOTIFICATION_ATTRIBUTES = frozenset({
    "id", "scopeId", "operationId", "resource", "status", "progress", "message", "sentOn", "createdOn",
})
DEVICE_ATTRIBUTES = frozenset({
    "id", "scopeId", "clientId", "displayName", "status", "connectionId", "connection.status",
    "connection.protocol", "serialNumber", "modelId", "modelName", "firmwareVersion", "osVersion",
    "applicationFrameworkVersion", "applicationIdentifiers", "connectionIp", "lastEventId", "lastEvent.resource",
    "lastSeenOn", "createdOn", "createdBy", "modifiedOn", "modifiedBy", "optlock",
})
