"""App manifests: reading ``package.json``, validating names, building app objects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.limits import check_limits
from bolt_host.services.manifest_fields import BOLT_FIELDS, PACKAGE_FIELDS
from bolt_host.services.npm_dependencies import dependency_count, requests_install_scripts
from bolt_host.services.start_command import describe, resolve_command

RESERVED_NAMES = {"bolt", "api", "x", "public", "node_modules"}
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._~-]{0,213}(@[a-z0-9][a-z0-9._~-]*)?$")
PACKAGE_NAME_RE = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
UPDATABLE_FIELDS = {"displayName", "description", "order", "system", "tags", "controlledVisibility"}
ADMIN_FIELDS = {"isolation", "limits", "env", "instances"}  # only an admin changes these (PUT /api/apps/<name>)
KEPT_ON_UPGRADE = ("order", "isolation", "adminLimits", "adminInstances")


def read_manifest(folder: Path, code: int = errors.LOCAL_PACKAGE_FAILED) -> dict[str, Any]:
    """The parsed ``package.json`` of ``folder``; a clear ``code`` error otherwise."""
    path = folder / "package.json"
    if not path.is_file():
        raise BoltError(code, f"No package.json in {_shown_folder(folder)}")
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
    manifest: dict[str, Any],
    path: Path,
    source: dict[str, Any],
    system: bool | None,
    created: str,
    root: Path | None = None,
) -> dict[str, Any]:
    """The app object stored for an installed app at ``path``.

    ``root`` is the tree the manifest's paths are checked against (the staged copy
    during an install); it defaults to ``path``.
    """
    name = app_name_for(manifest.get("name"))
    version = manifest.get("version")
    if not isinstance(version, str) or not version:
        raise BoltError(errors.LOCAL_PACKAGE_FAILED, "package.json has no version")
    bolt = check_manifest(manifest, root or path)
    main = bolt.get("main")
    command = resolve_command(manifest, bolt, root or path)
    app = {
        "name": name,
        "package": manifest["name"],
        "version": version,
        "displayName": bolt.get("displayName") or name,
        "description": manifest.get("description") or "",
        "author": _author(manifest.get("author")),
        "tags": list(bolt.get("tags", [])),
        "keywords": list(manifest.get("keywords") or []),
        "system": bolt.get("system", False) if system is None else bool(system),
        "module": bolt.get("module", False),
        "path": bolt_path(source, name),
        "folder": str(path),
        "main": main,
        "start": bolt.get("start"),
        "command": command,
        "startCommand": describe(command),
        "server": bolt.get("server", True) and command is not None,
        "dependencies": dependency_count(manifest),
        "installScripts": requests_install_scripts(manifest),
        "health": bolt.get("health"),
        "restart": bolt.get("restart", "on-failure"),
        "env": {key: str(value) for key, value in bolt.get("env", {}).items()},
        "index": "/" + bolt.get("index", "/").lstrip("/"),
        "public": _public_paths(bolt.get("public")),
        "files": dict(bolt.get("files", {})),
        "checks": list(bolt.get("checks", [])),
        "hooks": dict(bolt.get("hooks", {})),
        "permissions": dict(bolt.get("permissions", {})),
        "controlledVisibility": bolt.get("controlledVisibility", False),
        "order": bolt.get("order", 0),
        "firmware": bolt.get("firmware", False),
        "limits": check_limits(bolt.get("limits", {})),
        "isolation": True,  # an admin may set false (PUT /api/apps/<name>); kept on upgrades
        "source": source,
        "dateCreated": created,
    }
    for key in ("flash", "image", "price", "stopGraceSeconds", "entrances", "rolling", "instances"):
        if key in bolt:
            app[key] = bolt[key]
    return app


def install_preview(manifest: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """What an admin should know before installing: the start command, the dependencies to
    fetch, whether install scripts are asked for.  ``folder`` None: not downloaded yet."""
    try:
        command = resolve_command(manifest, check_manifest(manifest, folder or Path(".")), folder)
        start: str | None = describe(command)
        problem = None
    except BoltError as exc:
        command, start, problem = None, None, exc.message
    return {
        "startFrom": command.get("from") if command else None,
        "startCommand": start,
        "serverless": command is None and problem is None,
        "dependencies": dependency_count(manifest),
        "installScripts": requests_install_scripts(manifest),
        "problem": problem,
    }


def check_manifest(manifest: dict[str, Any], root: Path) -> dict[str, Any]:
    """The manifest's ``bolt`` block (nulls dropped) once every known field has the right type.

    A wrong field is a 418 naming it; nothing is coerced, so ``"server": "false"`` is
    an error rather than a true value.
    """
    bad = errors.LOCAL_PACKAGE_FAILED
    for field, check in PACKAGE_FIELDS.items():
        problem = check(manifest[field]) if manifest.get(field) is not None else None
        if problem:
            raise BoltError(bad, f"package.json field '{field}' {problem}")
    block = manifest.get("bolt")
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise BoltError(bad, "The 'bolt' block of package.json must be an object")
    bolt = {key: value for key, value in block.items() if value is not None}
    for field, check in BOLT_FIELDS.items():
        problem = check(bolt[field]) if field in bolt else None
        if problem:
            raise BoltError(bad, f"bolt.{field} {problem}")
    for field in ("main", "image"):
        if field in bolt:
            inside(root, bolt[field], bad)
    for entry in [*_public_paths(bolt.get("public")), *bolt.get("files", {}).values(), *bolt.get("checks", [])]:
        inside(root, entry, bad)
    return bolt


def bolt_path(source: dict[str, Any], name: str) -> str:
    """Bolt's ``path``: where the app was installed from, as a client can name it again
    (the folder in the local repository, the registry package), never the host's folder."""
    for key in ("path", "package"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return name


HOST_PATH_FIELDS = frozenset({"folder", "python", "npmTree", "venvTree"})  # the host's paths, its trees' digests


def without_folder(app: dict[str, Any]) -> dict[str, Any]:
    """The app as callers who are not admins see it: without the host's absolute paths
    (its folder, the Python of its environment)."""
    return {key: value for key, value in app.items() if key not in HOST_PATH_FIELDS}


def _author(author: Any) -> str:
    if isinstance(author, dict):
        return str(author.get("name") or "")
    return str(author or "")


def _public_paths(public: Any) -> list[str]:
    if isinstance(public, dict):
        public = public.get("paths", [])
    if isinstance(public, str):
        public = [public]
    return list(public or [])


def _shown_folder(folder: Path) -> str:
    """A folder's name for a message; the host's own temp folders (``.extract-*``,
    ``.staging-*``) are the package being installed, not a name anyone chose."""
    return "the package's top folder" if folder.name.startswith(".") or not folder.name else repr(folder.name)


NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4095  # bytes in a whole path, without its terminating NUL


def fits_filesystem(path: str | Path) -> bool:
    """Whether the OS can look ``path`` up at all: longer ones fail with ENAMETOOLONG, which
    ``Path.is_file()`` and friends raise instead of answering False."""
    text = str(path).encode("utf-8", errors="surrogateescape")
    return len(text) <= PATH_MAX and all(len(part) <= NAME_MAX for part in text.split(b"/"))


def inside(root: Path, relative: Any, code: int) -> Path:
    """``root / relative`` if it stays inside ``root`` (links resolved), else a ``code`` error."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise BoltError(code, "A path is missing or not a string")
    if Path(relative).is_absolute():
        raise BoltError(code, f"Path {relative[:80]!r} must be relative")
    if not fits_filesystem(root / relative):
        raise BoltError(code, f"Path {relative[:80]!r}... is too long")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise BoltError(code, f"Path {relative[:80]!r} leaves its folder")
    return target
