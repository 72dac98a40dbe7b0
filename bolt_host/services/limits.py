"""Resource limits of an app: ``memory``, ``pids``, ``cpu``, ``nofile``.

Three layers, later ones win per key: the host's defaults (settings), the manifest's
``bolt.limits``, an admin's overrides (``PUT /api/apps/<name>`` ``limits``).  A key set to
``null`` in a later layer removes the limit.  Values are checked here once, so the
mechanisms (cgroups, rlimits) only ever see numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

LIMIT_KEYS = ("memory", "pids", "cpu", "nofile")
MIN_MEMORY = 4 * 1024 * 1024  # below this nothing starts, and the error would be obscure
MAX_CPU = 1024.0
MAX_COUNT = 1 << 22
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class LimitError(ValueError):
    """A limit that cannot be enforced as written; the message completes "limits.<key> ..."."""


def parse_memory(value: Any) -> int:
    """Bytes from ``"128MiB"``, ``"1.5GB"``, ``"512k"`` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match.group(2).lower() in _UNITS:
        amount = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    else:
        raise LimitError("must be a size such as \"128MiB\" or a number of bytes")
    if amount < MIN_MEMORY:
        raise LimitError(f"must be at least {format_bytes(MIN_MEMORY)}")
    return amount


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise LimitError(f"must be a whole number from 1 to {MAX_COUNT}")
    return value


def _cpu(value: Any) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0.01 <= value <= MAX_CPU:
        raise LimitError(f"must be a number of cores from 0.01 to {MAX_CPU:g} (0.5 = half a core)")
    return float(value)


_PARSERS = {"memory": parse_memory, "pids": _count, "cpu": _cpu, "nofile": _count}


def check_limits(value: Any, *, allow_null: bool = False) -> dict[str, Any]:
    """``value`` normalised (memory in bytes), or a :class:`LimitError` naming the bad key."""
    if not isinstance(value, Mapping):
        raise LimitError("must be an object with memory, pids, cpu and/or nofile")
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _PARSERS:
            raise LimitError(f"has an unknown key {str(key)[:40]!r} (known: {', '.join(LIMIT_KEYS)})")
        if item is None and allow_null:
            checked[key] = None
            continue
        try:
            checked[key] = _PARSERS[key](item)
        except LimitError as exc:
            raise LimitError(f"{key} {exc}") from None
    return checked


def manifest_limits_problem(value: Any) -> str | None:
    """For the manifest's field checks: what is wrong with ``bolt.limits``, or None."""
    try:
        check_limits(value)
    except LimitError as exc:
        return str(exc)
    return None


def effective_limits(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge checked layers, later ones winning; a ``None`` value lifts the limit."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            merged[key] = value
    return {key: value for key, value in merged.items() if value is not None}


def format_bytes(amount: int) -> str:
    """``134217728`` -> ``"128 MiB"`` (the unit that gives a whole or short number)."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if amount >= size:
            value = amount / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{amount} B"


def out_of_memory_reason(limits: Mapping[str, Any]) -> str:
    memory = limits.get("memory")
    return f"out of memory (limit {format_bytes(memory)})" if memory else "out of memory"
