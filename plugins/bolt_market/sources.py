"""Market sources: where installable apps come from.

Three kinds (shown to clients as the documented ``type``: ``local`` or ``remote``):

* ``catalog`` (built-in ``market.bolt``, type ``local``): the host's catalog (local
  repository, configured registry, host uploads), less firmware packages (the robot
  store flashes those; the Market installs apps that run here).
* ``local`` (built-in ``upload``; admins may add more): packages uploaded through
  ``POST /apps/upload``, kept in ``data_dir/market/sources/<id>/``.
* ``remote``: an npm-protocol registry URL, listed by its ``keywords:bolt-app``
  search, downloads verified against the registry's integrity.

The configuration lives in ``market_sources``; a source may also carry the
payment keys (``signing_keys``, ``developers``) used by :mod:`payments`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinydb import Query

from bolt_host.plugin import CatalogError, Host, RegistryClient, RegistryError, RegistrySource, UploadSource

from .envelope import MarketError

TABLE = "market_sources"
CATALOG_SOURCE = "market.bolt"
UPLOAD_SOURCE = "upload"
TYPES = ("catalog", "local", "remote")
REMOTE_TTL = 300.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BUILTINS = (
    {"id": CATALOG_SOURCE, "name": "Bolt catalog", "type": "catalog", "base_url": "",
     "description": "The host's catalog: local repository, registry and host uploads", "builtin": True},
    {"id": UPLOAD_SOURCE, "name": "Uploads", "type": "local", "base_url": "",
     "description": "Packages uploaded through the Market", "builtin": True},
)


def offered(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries the Market offers: apps that install and run on this host, so no firmware."""
    return [e for e in entries if (e.get("bolt") or {}).get("firmware") is not True]


class SourceHandle:
    """One configured source, able to list, describe and fetch packages."""

    def __init__(self, host: Host, config: dict[str, Any]) -> None:
        self.host = host
        self.config = config
        self.id: str = config["id"]
        self.type: str = config["type"]
        data_dir = Path(host.settings.data_dir)
        self.folder = data_dir / "market" / "sources" / self.id
        self._client: RegistryClient | None = None
        self._backend: Any = None
        if self.type == "local":
            self._backend = UploadSource(self.folder, data_dir / "cache" / "market" / self.id)
            self._backend.name = self.id
        elif self.type == "remote":
            self._client = RegistryClient(
                config["base_url"], data_dir / "cache" / "market" / self.id,
                max_bytes=host.settings.max_download_bytes,
            )
            self._backend = RegistrySource(self._client)
            self._backend.name = self.id
        self._entries: list[dict[str, Any]] = []
        self._listed_at: float | None = None
        self.error: str | None = None
        self._lock = asyncio.Lock()

    @property
    def public_type(self) -> str:
        """The type the Market document knows: the host's own catalog is a ``local`` source."""
        return "local" if self.type == "catalog" else self.type

    @property
    def client(self) -> RegistryClient | None:
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def entries(self, refresh: bool = False) -> list[dict[str, Any]]:
        if self.type == "catalog":
            catalog = self.host.catalog
            if refresh:
                await catalog.refresh()
            else:
                await catalog.ready(timeout=10)
            self.error = "; ".join(f"{k}: {v}" for k, v in catalog.errors().items()) or None
            self._listed_at = catalog.last_refresh
            return offered(catalog.entries())
        fresh = self._listed_at is not None and time.time() - self._listed_at < REMOTE_TTL
        if self.type == "local" or refresh or not fresh:
            async with self._lock:
                try:
                    self._entries = offered(e for e in await self._backend.list_packages() if e)
                    self.error = None
                except (CatalogError, RegistryError, OSError) as exc:
                    self.error = getattr(exc, "message", None) or str(exc)
                self._listed_at = time.time()
        return list(self._entries)

    def cached_entries(self) -> list[dict[str, Any]]:
        return offered(self.host.catalog.entries()) if self.type == "catalog" else list(self._entries)

    async def find(self, name: str) -> dict[str, Any] | None:
        return next((e for e in await self.entries() if e["name"] == name), None)

    async def fetch(self, name: str, version: str, progress: Any = None) -> tuple[Path, dict[str, Any]]:
        """A verified tarball of ``name@version`` and the ``source`` to record on the app."""
        try:
            if self.type == "catalog":
                path, app_source = await self.host.catalog.fetch(name, version, progress=progress)
            else:
                path = await self._backend.fetch(name, version, progress)
                app_source = {"type": self.type, "package": name, "version": version}
        except (CatalogError, RegistryError) as exc:
            reason = getattr(exc, "message", None) or exc
            raise MarketError(500, f"Download of {name} {version} failed: {reason}") from None
        return Path(path), {**app_source, "market": self.id}

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        try:
            if self.type == "catalog":
                return await self.host.catalog.manifest(name, version)
            return await self._backend.manifest(name, version)
        except (CatalogError, RegistryError) as exc:
            raise MarketError(404, f"App not found: {getattr(exc, 'message', None) or exc}") from None

    async def release_times(self, name: str) -> dict[str, str]:
        """``{version: ISO time}`` where the source knows it (registries do)."""
        if self._client is None:
            return {}
        try:
            doc = await self._client.packument(name)
        except RegistryError:
            return {}
        times = doc.get("time")
        times = times if isinstance(times, dict) else {}
        return {str(k): str(v) for k, v in times.items()}

    def describe(self) -> dict[str, Any]:
        public = {k: v for k, v in self.config.items() if k not in {"developers", "signing_keys"}}
        public["payment_configured"] = bool(self.config.get("signing_keys"))
        public["developers"] = sorted((self.config.get("developers") or {}).keys())
        public["error"] = self.error
        public["type"] = self.public_type
        return public


class Sources:
    """Every configured source, by id."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._db = host.db
        self._db.migrate(TABLE, {1: lambda t: None})
        self._handles: dict[str, SourceHandle] = {}
        with self._db.transaction():
            table = self._db.table(TABLE)
            for builtin in BUILTINS:
                if not table.contains(Query().id == builtin["id"]):
                    table.insert(dict(builtin))
        for row in self._db.table(TABLE).all():
            self._handles[row["id"]] = SourceHandle(host, dict(row))

    def ids(self) -> list[str]:
        return list(self._handles)

    def all(self) -> list[SourceHandle]:
        return list(self._handles.values())

    def get(self, source_id: str | None) -> SourceHandle:
        handle = self._handles.get(source_id or "")
        if handle is None:
            raise MarketError(404, f"Market source {source_id!r} not found")
        return handle

    def local(self, source_id: str) -> SourceHandle:
        handle = self.get(source_id)
        if handle.type != "local":
            raise MarketError(400, f"Market source {source_id!r} is not a local source; uploads go to local sources")
        return handle

    async def add(self, body: dict[str, Any], check_payment: Any) -> tuple[SourceHandle, bool]:
        """Add (or, for an existing id, reconfigure) a source; ``(handle, created)``."""
        source_id = body.get("id")
        if not isinstance(source_id, str) or not _ID.match(source_id):
            raise MarketError(400, "'id' must be 1-64 letters, digits, '.', '_' or '-'")
        existing = self._handles.get(source_id)
        kind = body.get("type", existing.type if existing else None)
        if kind not in ("local", "remote") and not (existing and existing.config.get("builtin")):
            raise MarketError(400, "'type' must be 'local' or 'remote'")
        config = dict(existing.config) if existing else {"id": source_id, "builtin": False}
        if existing and existing.config.get("builtin"):
            if body.get("type") not in (None, existing.public_type) or body.get("base_url") not in (None, ""):
                raise MarketError(400, f"The built-in source {source_id!r} only takes payment keys and a description")
        else:
            config["type"] = kind
            base_url = body.get("base_url") or ""
            if kind == "remote":
                _check_url(base_url)
            elif base_url:
                raise MarketError(400, "A local source has no base_url")
            config["base_url"] = base_url
        for key in ("name", "description"):
            if key in body:
                if not isinstance(body[key], str) or len(body[key]) > 512:
                    raise MarketError(400, f"'{key}' must be a string of at most 512 characters")
                config[key] = body[key]
        config.setdefault("name", source_id)
        config.setdefault("description", "")
        for key in ("signing_keys", "developers"):
            if key in body:
                config[key] = check_payment(key, body[key])
        with self._db.transaction():
            self._db.table(TABLE).upsert(config, Query().id == source_id)
        if existing is not None:
            await existing.close()
        handle = SourceHandle(self.host, config)
        self._handles[source_id] = handle
        return handle, existing is None

    async def remove(self, source_id: str) -> None:
        handle = self.get(source_id)
        if handle.config.get("builtin"):
            raise MarketError(400, f"The built-in source {source_id!r} cannot be deleted")
        with self._db.transaction():
            self._db.table(TABLE).remove(Query().id == source_id)
        del self._handles[source_id]
        await handle.close()

    async def close(self) -> None:
        await asyncio.gather(*(h.close() for h in self._handles.values()), return_exceptions=True)

    async def fingerprint(self) -> str:
        """Changes exactly when what the sources offer changes (not on installs)."""
        parts = []
        for handle in self.all():
            entries = await handle.entries()
            parts.append({
                "id": handle.id,
                "type": handle.type,
                "base_url": handle.config.get("base_url"),
                "entries": sorted(
                    ({"name": e["name"], "version": e["version"], "versions": e.get("versions"),
                      "description": e.get("description"), "bolt": e.get("bolt")} for e in entries),
                    key=lambda e: e["name"],
                ),
            })
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not url:
        raise MarketError(400, "A remote source needs 'base_url' (an npm-protocol registry URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MarketError(400, "'base_url' must be an http(s) URL")
