"""Putting a fetched package on the host: as itself, or as a clone under another name.

A clone is the same package installed under a minted name: its tarball is
extracted safely into a staging folder, ``package.json`` gets the clone's
``name`` and ``bolt.displayName``, and the tree is installed with
``host.apps.install_tree``, so the clone has its own folder, record, process
and port.  Market installs are never system apps, whatever the manifest says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from bolt_host.plugin import BoltError, Host, TaskCancelled, app_name_for, caller_env_problem, declared_names, refusal

from .envelope import MarketError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENVS = 64
MAX_ENV_VALUE = 4096
# Variables that change how the interpreter or loader runs, or that the host sets itself.
RESERVED_ENV = re.compile(r"^(PORT|HOST|PATH|HOME|BOLT_.*|LD_.*|DYLD_.*|PYTHON.*|NODE_OPTIONS|NODE_PATH)$")


def instance_name(package: str) -> str:
    try:
        return app_name_for(package)
    except BoltError as exc:
        raise MarketError(400, exc.message) from None


def clone_name(raw_app: str, request: dict[str, Any]) -> str:
    """``rawAppName`` + the first 6 hex of SHA-256 over the request without ``sync`` (as Olares does)."""
    digest_source = json.dumps({k: v for k, v in request.items() if k != "sync"}, sort_keys=True, default=str)
    return f"{instance_name(raw_app)}{hashlib.sha256(digest_source.encode()).hexdigest()[:6]}"


def parse_envs(value: Any) -> list[dict[str, str]]:
    """``[{envName, value}]`` (the real code's spelling) or ``[{env_name, env_value}]`` (the doc's)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ENVS:
        raise MarketError(400, f"'envs' must be a list of at most {MAX_ENVS} {{envName, value}} objects")
    parsed: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict):
            raise MarketError(400, "Each env must be an object {envName, value}")
        name = item.get("envName", item.get("env_name"))
        raw = item.get("value", item.get("env_value", ""))
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise MarketError(400, f"Invalid env name {str(name)[:64]!r}")
        if RESERVED_ENV.match(name):
            raise MarketError(400, f"The env {name} is reserved by the host")
        if refusal(name):
            raise MarketError(400, f"The env {name} cannot be set: {refusal(name)}")
        if isinstance(raw, bool | int | float):
            raw = json.dumps(raw)
        if not isinstance(raw, str) or len(raw) > MAX_ENV_VALUE or "\x00" in raw:
            raise MarketError(400, f"The value of env {name} must be a string of at most {MAX_ENV_VALUE} characters")
        parsed[name] = raw
    return [{"envName": k, "value": v} for k, v in parsed.items()]


def declared_only(entry: dict[str, Any], envs: list[dict[str, str]]) -> list[dict[str, str]]:
    """``envs`` if the package's manifest declares every name (``bolt.envs`` / ``bolt.env``), else a 400."""
    problem = caller_env_problem((e["envName"] for e in envs), declared_names(entry.get("bolt") or {}))
    if problem:
        raise MarketError(400, problem)
    return envs


def parse_entrances(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 16:
        raise MarketError(400, "'entrances' must be a list of {name, port, protocol} objects")
    found = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise MarketError(400, "Each entrance needs a 'name'")
        port = item.get("port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
            raise MarketError(400, "An entrance 'port' must be a port number")
        protocol = item.get("protocol", "http")
        if protocol not in ("http", "https", "tcp"):
            raise MarketError(400, "An entrance 'protocol' must be http, https or tcp")
        found.append({"name": item["name"][:64], "port": port, "protocol": protocol})
    return found


def requested_port(entrances: list[dict[str, Any]]) -> int | None:
    """The one port the entrances ask for (an app on this host listens on one port), if any."""
    ports = sorted({e["port"] for e in entrances if e.get("port")})
    if len(ports) > 1:
        raise MarketError(400, f"An app on this host listens on one port; the entrances ask for {ports}")
    return ports[0] if ports else None


def missing_required_envs(bolt: dict[str, Any], envs: list[dict[str, str]]) -> list[str]:
    """Names the manifest's ``bolt.envs`` marks required that neither the request nor a default fills."""
    declared = _declared_envs(bolt)
    given = {e["envName"] for e in envs}
    missing = []
    for item in declared:
        if not isinstance(item, dict):
            continue
        name = item.get("envName") or item.get("env_name")
        if item.get("required") and name not in given and item.get("default") in (None, ""):
            missing.append(str(name))
    return missing


def _declared_envs(bolt: dict[str, Any]) -> list[Any]:
    declared = bolt.get("envs")
    return declared if isinstance(declared, list) else []


def declared_defaults(bolt: dict[str, Any]) -> dict[str, str]:
    declared = _declared_envs(bolt)
    defaults = {}
    for item in declared:
        if isinstance(item, dict) and item.get("default") not in (None, ""):
            name = item.get("envName") or item.get("env_name")
            if isinstance(name, str) and ENV_NAME.match(name) and not RESERVED_ENV.match(name):
                defaults[name] = str(item["default"])
    return defaults


async def put_on_host(
    host: Host,
    tarball: Path,
    app_source: dict[str, Any],
    name: str,
    package: str,
    title: str | None,
    upgrade: bool,
    cancel: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Install ``tarball`` as the host app ``name`` (a clone when it differs from the package's own name).

    ``cancel`` is checked between the steps (extract, rewrite, install), never inside one,
    so a cancel raises :class:`TaskCancelled` either before the host holds anything or
    after a whole install that the caller then removes; never with a half-swapped folder.
    """
    is_clone = name != instance_name(package) or title is not None

    def prepare(root: Path) -> None:  # between extraction and install, in a thread
        _stop_if_cancelled(cancel)
        if is_clone:
            _rename_package(root, package, name, title)
            _stop_if_cancelled(cancel)

    return await host.apps.install_tarball(
        tarball, app_source, False, upgrade, expect_name=None if is_clone else package, prepare=prepare
    )


def _stop_if_cancelled(cancel: asyncio.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TaskCancelled("canceled by the user")


async def restrict_to_owner(host: Host, name: str, user: str) -> None:
    """Only the owner (and admins) may use the instance through the host's ``/x`` proxy."""
    await host.apps.update(name, {"controlledVisibility": True})
    host.visibility.grant_user(name, user, by="market")


def _rename_package(root: Path, package: str, name: str, title: str | None) -> None:
    manifest_path = root / "package.json"
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise MarketError(400, "The package has no regular package.json")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("name") != package:
        raise MarketError(400, f"The package names itself {manifest.get('name')!r}, expected {package!r}")
    manifest["name"] = name
    bolt = manifest.get("bolt") if isinstance(manifest.get("bolt"), dict) else {}
    if title:
        bolt["displayName"] = title
    manifest["bolt"] = bolt
    manifest_path.unlink()
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
