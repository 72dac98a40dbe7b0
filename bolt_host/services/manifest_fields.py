"""The type of every ``package.json`` field the host reads, one check per field.

Each check returns what is wrong with a value (completing "bolt.<field> ..."), or
None when it is fine.  Fields not listed here are kept as they are and never read
by the core (plugins check their own, e.g. the market's ``envs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bolt_host.services.limits import manifest_limits_problem

Check = Callable[[Any], str | None]

RESTART_POLICIES = ("always", "never", "on-failure")
MAX_STOP_GRACE_SECONDS = 300
MAX_INSTANCES = 64
MAX_TEXT = 4096


def _string(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    return "is too long" if len(value) > MAX_TEXT else None


def _path(value: Any) -> str | None:
    if not isinstance(value, str) or not value or "\x00" in value:
        return "must be a non-empty path string"
    return None


def _url_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value or any(ch.isspace() or ord(ch) < 32 for ch in value):
        return "must be a URL path such as /health"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _integer(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"


def _string_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "must be a list of strings"
    return None


def _command(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, list) and value and all(isinstance(arg, str) and arg for arg in value):
        return None
    return "must be a command: a non-empty string or a list of non-empty strings"


def _restart(value: Any) -> str | None:
    return None if isinstance(value, str) and value in RESTART_POLICIES else f"must be one of {list(RESTART_POLICIES)}"


def _grace(value: Any) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 < value <= MAX_STOP_GRACE_SECONDS:
        return f"must be a number of seconds above 0 and at most {MAX_STOP_GRACE_SECONDS}"
    return None


def _instances(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INSTANCES:
        return f"must be a whole number from 1 to {MAX_INSTANCES} (the host's max_instances caps it further)"
    return None


def _env(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of variable names to values"
    for key, item in value.items():
        if not key or "=" in key or "\x00" in key:
            return f"has an invalid variable name {key[:40]!r}"
        scalar = isinstance(item, str | int | float) and not isinstance(item, bool)
        if not scalar or "\x00" in str(item):
            return f"value of {key[:40]!r} must be a string or a number"
    return None


def _public(value: Any) -> str | None:
    if isinstance(value, str) or _string_list(value) is None:
        return None
    if isinstance(value, dict) and _string_list(value.get("paths", [])) is None:
        return None
    return "must be a path, a list of paths or {paths: [...]}"


def _hooks(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must map event names to routes"
    for event, target in value.items():
        route = target.get("route") if isinstance(target, dict) else target
        if not event or not isinstance(route, str) or not route:
            return f"entry {event[:40]!r} must be a route string or {{route: ...}}"
    return None


def _permissions(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must map permission names to a description"
    for name, described in value.items():
        if not name or not isinstance(described, str | dict):
            return f"entry {name[:40]!r} must be a string or {{displayName, description}}"
    return None


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def _file_map(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and _path(v) is None for k, v in value.items()):
        return "must map names to file paths, such as {\"icon\": \"ico/icon.png\"}"
    return None


def _object_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return "must be a list of objects"
    return None


BOLT_FIELDS: dict[str, Check] = {
    "main": _path,
    "start": _command,
    "server": _boolean,
    "health": _url_path,
    "system": _boolean,
    "displayName": _string,
    "tags": _string_list,
    "index": _url_path,
    "public": _public,
    "env": _env,
    "restart": _restart,
    "hooks": _hooks,
    "permissions": _permissions,
    "controlledVisibility": _boolean,
    "order": _integer,
    "stopGraceSeconds": _grace,
    "rolling": _boolean,
    "instances": _instances,
    "firmware": _boolean,
    "flash": _command,
    "image": _path,
    "price": _object,
    "entrances": _object_list,
    "limits": manifest_limits_problem,
    "module": _boolean,
    "files": _file_map,
    "checks": _string_list,
    "installScripts": _boolean,
}

# Top-level package.json fields the host copies into the app object.
PACKAGE_FIELDS: dict[str, Check] = {
    "description": _string,
    "keywords": _string_list,
}
