"""App manifests: reading ``package.json``, validating names, building app objects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError

RESERVED_NAMES = {"bolt", "api", "x", "public", "node_modules"}
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._~-]{0,213}(@[a-z0-9][a-z0-9._~-]*)?$")
PACKAGE_NAME_RE = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
RESTART_POLICIES = {"on-failure", "always", "never"}
UPDATABLE_FIELDS = {"displayName", "description", "order", "system", "tags", "controlledVisibility"}


def read_manifest(folder: Path, code: int = errors.LOCAL_PACKAGE_FAILED) -> dict[str, Any]:
    """The parsed ``package.json`` of ``folder``; a clear ``code`` error otherwise."""
    path = folder / "package.json"
    if not path.is_file():
        raise BoltError(code, f"No package.json in {folder.name or folder}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BoltError(code, f"package.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BoltError(code, "package.json must hold a JSON object")
    return data


def app_name_for(package_name: Any) -> str:
    """Bolt's app name for an npm package name: ``@scope/pkg`` becomes ``pkg@scope``."""
    if package_name is None or package_name == "":
        raise BoltError(errors.APP_NAME_MISSING)
    if not isinstance(package_name, str) or len(package_name) > 214 or not PACKAGE_NAME_RE.match(package_name):
        raise BoltError(errors.APP_NAME_INVALID, f"Invalid package name {str(package_name)[:80]!r}")
    if package_name.startswith("@"):
        scope, _, name = package_name[1:].partition("/")
        app_name = f"{name}@{scope}"
    else:
        app_name = package_name
    validate_app_name(app_name)
    return app_name


def validate_app_name(name: Any) -> str:
    if name is None or name == "":
        raise BoltError(errors.APP_NAME_MISSING)
    if not isinstance(name, str) or not APP_NAME_RE.match(name) or name in {".", ".."}:
        raise BoltError(errors.APP_NAME_INVALID, f"Invalid characters in app name {str(name)[:80]!r}")
    if name in RESERVED_NAMES:
        raise BoltError(errors.APP_NAME_TAKEN, f"The name {name!r} is reserved")
    return name


def build_app(
    manifest: dict[str, Any], path: Path, source: dict[str, Any], system: bool | None, created: str
) -> dict[str, Any]:
    """The app object stored for an installed app."""
    name = app_name_for(manifest.get("name"))
    bolt = manifest.get("bolt") or {}
    if not isinstance(bolt, dict):
        raise BoltError(errors.LOCAL_PACKAGE_FAILED, "The 'bolt' block of package.json must be an object")
    version = manifest.get("version")
    if not isinstance(version, str) or not version:
        raise BoltError(errors.LOCAL_PACKAGE_FAILED, "package.json has no version")
    _check_bolt_block(bolt, path)
    main = bolt.get("main")
    server = bool(bolt.get("server", True)) and bool(main or bolt.get("start"))
    app = {
        "name": name,
        "package": manifest["name"],
        "version": version,
        "displayName": str(bolt.get("displayName") or name),
        "description": str(manifest.get("description") or ""),
        "author": _author(manifest.get("author")),
        "tags": [str(t) for t in bolt.get("tags", []) if isinstance(t, str | int)],
        "keywords": [k for k in manifest.get("keywords", []) if isinstance(k, str)],
        "system": bool(bolt.get("system", False)) if system is None else bool(system),
        "path": str(path),
        "main": main,
        "start": bolt.get("start"),
        "server": server,
        "health": bolt.get("health"),
        "restart": bolt.get("restart", "on-failure"),
        "env": {str(k): str(v) for k, v in (bolt.get("env") or {}).items()},
        "index": "/" + str(bolt.get("index", "/")).lstrip("/"),
        "public": _public_paths(bolt.get("public")),
        "hooks": {str(k): v for k, v in (bolt.get("hooks") or {}).items()},
        "permissions": bolt.get("permissions") or {},
        "controlledVisibility": bool(bolt.get("controlledVisibility", False)),
        "order": int(bolt.get("order", 0)) if str(bolt.get("order", 0)).lstrip("-").isdigit() else 0,
        "firmware": bool(bolt.get("firmware", False)),
        "source": source,
        "dateCreated": created,
    }
    for key in ("flash", "image", "price", "stopGraceSeconds", "entrances"):
        if key in bolt:
            app[key] = bolt[key]
    return app


def _author(author: Any) -> str:
    if isinstance(author, dict):
        return str(author.get("name") or "")
    return str(author or "")


def _public_paths(public: Any) -> list[str]:
    if isinstance(public, dict):
        public = public.get("paths", [])
    if isinstance(public, str):
        public = [public]
    return [p for p in (public or []) if isinstance(p, str)]


def _check_bolt_block(bolt: dict[str, Any], root: Path) -> None:
    """Reject blocks that would make the app unsafe or unrunnable."""
    bad = errors.LOCAL_PACKAGE_FAILED
    if bolt.get("restart", "on-failure") not in RESTART_POLICIES:
        raise BoltError(bad, f"bolt.restart must be one of {sorted(RESTART_POLICIES)}")
    env = bolt.get("env", {})
    if not isinstance(env, dict):
        raise BoltError(bad, "bolt.env must be an object")
    for field in ("main", "image"):
        if bolt.get(field) is not None:
            inside(root, bolt[field], bad)
    for entry in _public_paths(bolt.get("public")):
        inside(root, entry, bad)
    start = bolt.get("start")
    if start is not None and not (
        isinstance(start, str) or (isinstance(start, list) and all(isinstance(a, str) for a in start))
    ):
        raise BoltError(bad, "bolt.start must be a string or a list of strings")
    hooks = bolt.get("hooks", {})
    if not isinstance(hooks, dict):
        raise BoltError(bad, "bolt.hooks must map event names to routes")


def inside(root: Path, relative: Any, code: int) -> Path:
    """``root / relative`` if it stays inside ``root`` (links resolved), else a ``code`` error."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise BoltError(code, "A path is missing or not a string")
    if Path(relative).is_absolute():
        raise BoltError(code, f"Path {relative!r} must be relative")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise BoltError(code, f"Path {relative!r} leaves its folder")
    return target
