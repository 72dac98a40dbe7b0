"""Installed apps seen as WSO2 store assets: types, ids, providers, shapes and paging.

- ``webapp``: apps with a server (opened through the host's ``/x/<name>/`` proxy);
- ``site``: apps made only of public files (served from ``/public/<name>/``);
- ``mobileapp``: every other package: server-less code and firmware, meant to run
  on devices (other hosts reached through the device backend).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .replies import EnterpriseError

ASSET_TYPES = ("webapp", "mobileapp", "site")
DEFAULT_PROVIDER = "admin"  # WSO2's default provider, used when a package names no author
# Fixed namespace so an app's asset id is the same on every host and after every restart.
ASSET_ID_NAMESPACE = uuid.UUID("6f1d2c1e-3b7a-5c59-9a0e-bd5a1e0c7e11")
TENANT = "carbon.super"


def asset_id(app_name: str) -> str:
    return str(uuid.uuid5(ASSET_ID_NAMESPACE, app_name))


def asset_type(app: Mapping[str, Any]) -> str:
    if app.get("server"):
        return "webapp"
    if not app.get("firmware") and not app.get("main") and not app.get("start") and app.get("public"):
        return "site"
    return "mobileapp"


def person_name(person: Any) -> str | None:
    """The name of an npm person: ``{"name": ...}`` or ``"Name <email> (url)"``; never the email or URL."""
    if isinstance(person, Mapping):
        person = person.get("name")
    if not isinstance(person, str):
        return None
    name = re.split(r"[<(]", person, maxsplit=1)[0].strip()
    return name or None


def provider_of(app: Mapping[str, Any]) -> str:
    """The package's author, else its publisher, else WSO2's default ``admin``; only ever a name."""
    return person_name(app.get("author")) or _publisher(app) or DEFAULT_PROVIDER


def _publisher(app: Mapping[str, Any]) -> str | None:
    """Who published the package, as npm records it (``_npmUser``, ``publisher``, the first of
    ``maintainers``), from the app object or else its installed ``package.json``."""
    found = _publisher_in(app)
    if found is None and isinstance(app.get("folder"), str):
        manifest = Path(app["folder"]) / "package.json"
        with contextlib.suppress(OSError):
            found = _publisher_in_file(str(manifest), manifest.stat().st_mtime_ns)
    return found


def _publisher_in(doc: Mapping[str, Any]) -> str | None:
    maintainers = doc.get("maintainers")
    first = maintainers[0] if isinstance(maintainers, list) and maintainers else None
    for person in (doc.get("_npmUser"), doc.get("publisher"), first):
        name = person_name(person)
        if name:
            return name
    return None


@functools.lru_cache(maxsize=256)
def _publisher_in_file(path: str, mtime_ns: int) -> str | None:
    """Cached per file version: asset lists ask for every app's provider several times."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _publisher_in(doc) if isinstance(doc, dict) else None


def check_type(kind: str) -> str:
    if kind not in ASSET_TYPES:
        raise EnterpriseError(404, f"Unknown asset type {kind!r}; use one of {', '.join(ASSET_TYPES)}")
    return kind


def app_url(app: Mapping[str, Any], base_url: str) -> str | None:
    kind = asset_type(app)
    if kind == "webapp":
        return f"{base_url}/x/{app['name']}{app.get('index') or '/'}"
    if kind == "site":
        return f"{base_url}/public/{app['name']}/"
    return None


def asset_path(app: Mapping[str, Any], base_url: str) -> str:
    """The URL of the asset's own ``/store/apis/v1/assets/...`` entry."""
    parts = (asset_type(app), provider_of(app), app["name"], app["version"])
    return f"{base_url}/store/apis/v1/assets/" + "/".join(quote(part, safe="") for part in parts)


def store_asset(app: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """The asset object of the ``/store/apis/v1/assets`` routes (WSO2's ``overview_*`` attributes kept)."""
    kind = asset_type(app)
    provider = provider_of(app)
    url = app_url(app, base_url)
    attributes = {
        "overview_name": app["name"],
        "overview_displayName": app.get("displayName") or app["name"],
        "overview_provider": provider,
        "overview_version": app["version"],
        "overview_description": app.get("description") or "",
        "overview_tags": ",".join(app.get("tags") or []),
        "overview_packagename": app.get("package") or app["name"],
    }
    if url:
        attributes["overview_url"] = url
    return {
        "id": asset_id(app["name"]),
        "type": kind,
        "name": app["name"],
        "displayName": app.get("displayName") or app["name"],
        "provider": provider,
        "version": app["version"],
        "description": app.get("description") or "",
        "tags": list(app.get("tags") or []),
        "lifecycleState": "Published",
        "createdTime": app.get("dateCreated"),
        "attributes": attributes,
    }


def mobile_summary(app: Mapping[str, Any], base_url: str, with_location: bool = False) -> dict[str, Any]:
    """The app object of the JAX-RS mobile API (``{id, name, version, platform, type, identifier, ...}``)."""
    kind = asset_type(app)
    url = app_url(app, base_url)
    package = app.get("package") or app["name"]
    summary: dict[str, Any] = {
        "id": asset_id(app["name"]),
        "name": app.get("displayName") or app["name"],
        "appName": app["name"],
        "version": app["version"],
        "platform": "bolt" if kind == "mobileapp" else "webapp",
        "type": "enterprise" if kind == "mobileapp" else "webapp",
        "identifier": url or package,
        "iconImage": icon_url(app, base_url),
    }
    if kind == "mobileapp":
        summary["packageName"] = package
    if with_location:
        summary["location"] = url or asset_path(app, base_url)
    return summary


def icon_url(app: Mapping[str, Any], base_url: str) -> str:
    """Where the app's icon (``bolt.files.icon``) is served, when it is one of its public files
    (``/public/<app>/...``); an empty string when the app publishes no icon."""
    icon = (app.get("files") or {}).get("icon") if isinstance(app.get("files"), Mapping) else None
    if not isinstance(icon, str) or not icon:
        return ""
    icon = icon.strip("/")
    for entry in app.get("public") or []:
        entry = str(entry).strip("/")
        if icon == entry:
            served = icon.rsplit("/", 1)[-1]
        elif icon.startswith(entry + "/"):
            served = icon[len(entry) + 1:]
        else:
            continue
        return f"{base_url}/public/{quote(app['name'], safe='')}/{quote(served)}"
    return ""


def device_package(app: Mapping[str, Any]) -> dict[str, Any]:
    """What the enterprise backend hands ``install_on_device`` as ``package``."""
    return {
        "name": app["name"],
        "package": app.get("package") or app["name"],
        "version": app["version"],
        "displayName": app.get("displayName") or app["name"],
        "assetId": asset_id(app["name"]),
        "type": asset_type(app),
        "source": dict(app.get("source") or {}),
    }


def find_app(apps: Iterable[Mapping[str, Any]], ref: Any) -> dict[str, Any] | None:
    """The app an asset reference names: its asset id or its app name."""
    if not isinstance(ref, str) or not ref.strip():
        return None
    ref = ref.strip()
    for app in apps:
        if app["name"] == ref or asset_id(app["name"]) == ref:
            return dict(app)
    return None


def non_negative(raw: str | None, field: str, default: int) -> int:
    """A paging number from the query string; anything but a whole number >= 0 is a 400."""
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise EnterpriseError(400, f"'{field}' must not be negative")
    if not (text.isascii() and text.isdigit()):
        raise EnterpriseError(400, f"'{field}' must be a whole number, not {raw[:40]!r}")
    return int(text)


def page(items: list[Any], start: int, count: int | None) -> list[Any]:
    """``items[start:start+count]``; ``count=None`` means everything after ``start``."""
    return items[start:] if count is None else items[start : start + count]
