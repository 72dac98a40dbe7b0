"""The catalog: every package the host could install, merged from its sources.

A *source* is any object with this shape (see :class:`Source`)::

    name: str                                             # unique: "local", "registry", "uploads", ...
    async list_packages() -> list[dict]                   # one entry per package (below)
    async manifest(name, version=None) -> dict            # package.json of a version (None: latest)
    async readme(name, version=None) -> str
    async fetch(name, version, progress=None) -> Path     # a verified tarball in data_dir/cache
    app_source(name, version) -> dict                     # optional: the installed app's ``source``

An entry is ``{name, version (the latest), versions (ascending), description,
keywords, bolt, source, install}`` where ``bolt`` is the latest manifest's ``bolt`` block,
``source`` the source's name and ``install`` the latest manifest's install preview
(:func:`bolt_host.services.manifest.install_preview`; a plugin source may leave it out).  ``progress`` is called as
``progress(bytes_received, total_bytes_or_None)``.

The built-in sources (in :mod:`bolt_host.services.catalog_sources`, re-exported
here) are :class:`LocalSource` (the ``--local-repo`` folder),
:class:`RegistrySource` (an npm-protocol registry: its ``keywords:bolt-app``
search, plus ``settings.pinned_packages``, plus the package name of every
installed app) and :class:`UploadSource` (tarballs in ``data_dir/uploads``).
Plugins add theirs through the ``register_sources`` hook.

:class:`Catalog` merges them.  When several sources have a package, **the
source with the highest latest version wins** (ties go to the source added
first: local, registry, uploads, then plugin sources); the merged entry lists
every source that has the package in ``sources``.  A source whose listing
fails keeps its last known entries (also across restarts: the entries are
stored in the ``catalog`` table) and the failure is reported by
:meth:`Catalog.errors` until a later refresh of that source succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bolt_host.services.catalog_sources import (
    APP_KEYWORD,
    CatalogError,
    LocalSource,
    Progress,
    RegistrySource,
    UploadSource,
    cache_name,
    is_firmware,
    make_entry,
    read_tarball_manifest,
)
from bolt_host.services.versions import compare_versions, resolve_version, sort_key
from bolt_host.storage import INITIAL_SCHEMA, Database

if TYPE_CHECKING:
    from bolt_host.host import Host

log = logging.getLogger("bolt_host.catalog")

TABLE = "catalog"
SCHEMAS = {TABLE: INITIAL_SCHEMA}
__all__ = [
    "APP_KEYWORD",
    "Catalog",
    "CatalogError",
    "LocalSource",
    "RegistrySource",
    "Source",
    "UploadSource",
    "build_catalog",
    "cache_name",
    "is_firmware",
    "make_entry",
    "read_tarball_manifest",
]


@runtime_checkable
class Source(Protocol):
    name: str

    async def list_packages(self) -> list[dict[str, Any]]: ...

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]: ...

    async def readme(self, name: str, version: str | None = None) -> str: ...

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path: ...


# ---------------------------------------------------------------- catalog


class Catalog:
    def __init__(self, db: Database | None = None) -> None:
        self._db = db
        if db is not None:
            db.migrate_all(SCHEMAS)
        self._sources: dict[str, Any] = {}
        self._owners: dict[str, str] = {}
        self._entries: dict[str, list[dict[str, Any]]] = {}
        self._errors: dict[str, str] = {}
        self._refreshing: asyncio.Task[list[dict[str, Any]]] | None = None
        self._again = False
        self._refreshed = asyncio.Event()
        self.last_refresh: float | None = None

    # sources -----------------------------------------------------------------
    def add_source(self, source: Any, owner: str = "bolt_host") -> None:
        """Add ``source``; a second source with the same name is an error naming both owners."""
        name = getattr(source, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"package source from {owner!r} has no name")
        if name in self._sources:
            raise ValueError(f"package source {name!r} is registered by both {self._owners[name]!r} and {owner!r}")
        self._sources[name] = source
        self._owners[name] = owner
        self._entries[name] = self._stored(name)

    def sources(self) -> list[Any]:
        return list(self._sources.values())

    def source(self, name: str) -> Any:
        return self._sources[name]

    # refresh -----------------------------------------------------------------
    async def refresh(self) -> list[dict[str, Any]]:
        """List every source again (concurrently) and return the merged entries.

        If a refresh is already running, one more round runs after it (so what
        changed before this call is seen) and both callers share it.
        """
        return await asyncio.shield(self.refresh_soon())

    def refresh_soon(self) -> asyncio.Task[list[dict[str, Any]]]:
        """Start a refresh in the background (or queue one more round of the running one); its task."""
        if self._refreshing is None or self._refreshing.done():
            self._again = False
            self._refreshing = asyncio.ensure_future(self._refresh_rounds())
            self._refreshing.add_done_callback(_log_failure)
        else:
            self._again = True
        return self._refreshing

    async def ready(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until the first refresh has finished; True if it has."""
        if not self._refreshed.is_set() and (self._refreshing is None or self._refreshing.done()):
            self.refresh_soon()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                await self._refreshed.wait()
        return self._refreshed.is_set()

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing

    async def _refresh_rounds(self) -> list[dict[str, Any]]:
        while True:
            entries = await self._refresh_all()
            if not self._again:
                return entries
            self._again = False

    async def _refresh_all(self) -> list[dict[str, Any]]:
        await asyncio.gather(*(self._refresh_source(name) for name in list(self._sources)))
        self.last_refresh = time.time()
        self._refreshed.set()
        return self.entries()

    async def _refresh_source(self, name: str) -> None:
        source = self._sources[name]
        try:
            listed = await source.list_packages()
            entries = [self._checked(entry, name) for entry in listed]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure keeps the last known entries
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.warning("package source %s failed to refresh: %s", name, message)
            self._errors[name] = str(message)
            return
        self._entries[name] = [e for e in entries if e is not None]
        problems = list(getattr(source, "problems", None) or [])
        if problems:
            self._errors[name] = "; ".join(problems)
        else:
            self._errors.pop(name, None)
        self._store(name)

    @staticmethod
    def _checked(entry: Any, source: str) -> dict[str, Any] | None:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("version"):
            return None
        versions = entry.get("versions") or [entry["version"]]
        return {**entry, "versions": sorted({str(v) for v in versions}, key=sort_key), "source": source}

    # reads -------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """One merged entry per package, sorted by name."""
        names = {e["name"] for listed in self._entries.values() for e in listed}
        return [found[0] for name in sorted(names) if (found := self.find(name))]

    def find(self, name: str) -> tuple[dict[str, Any], Any] | None:
        """The winning entry for ``name`` (highest latest version) and its source, or None."""
        candidates = self._candidates(name)
        if not candidates:
            return None
        best_entry, best_source = candidates[0]
        for entry, source in candidates[1:]:
            if compare_versions(entry["version"], best_entry["version"]) > 0:
                best_entry, best_source = entry, source
        merged = {**best_entry, "sources": [source.name for _, source in candidates]}
        return merged, best_source

    def errors(self) -> dict[str, str]:
        """``{source name: message}`` for every source whose last refresh failed (wholly or partly)."""
        return dict(self._errors)

    def _candidates(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        return [
            (entry, self._sources[source_name])
            for source_name, listed in self._entries.items()
            for entry in listed
            if entry["name"] == name
        ]

    def source_for(self, name: str, version: str | None = None) -> tuple[dict[str, Any], Any]:
        """The entry and source to fetch ``name@version`` from (the winner if it has that version)."""
        entry, source, _ = self.resolve(name, version)
        return entry, source

    def resolve(self, name: str, version: str | None = None) -> tuple[dict[str, Any], Any, str | None]:
        """Entry, source and concrete version for ``name@version``: an exact version, or an npm
        range (``^6``) resolved against the winner's versions, then each other source's.
        The version is None when the caller asked for the latest (the source decides)."""
        found = self.find(name)
        if found is None:
            raise CatalogError(f"{name} is not in the catalog")
        if version is None:
            return (*found, None)
        for entry, source in [found, *self._candidates(name)]:
            resolved = resolve_version(version, entry["versions"], {"latest": entry["version"]})
            if resolved is not None:
                return entry, source, resolved
        raise CatalogError(f"no source has {name} {version}")

    # delivery ----------------------------------------------------------------
    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        _, source, resolved = self.resolve(name, version)
        manifest: dict[str, Any] = await source.manifest(name, resolved)
        return manifest

    async def readme(self, name: str, version: str | None = None) -> str:
        _, source, resolved = self.resolve(name, version)
        readme: str = await source.readme(name, resolved)
        return readme

    async def fetch(
        self, name: str, version: str | None = None, progress: Progress | None = None
    ) -> tuple[Path, dict[str, Any]]:
        """A verified tarball of ``name@version`` (None: the latest; an npm range: the version
        npm would pick) and the ``source`` to record for the app."""
        entry, source, resolved = self.resolve(name, version)
        version = resolved or entry["version"]
        path = await source.fetch(name, version, progress)
        return Path(path), self.app_source(source, name, version)

    @staticmethod
    def app_source(source: Any, name: str, version: str) -> dict[str, Any]:
        describe = getattr(source, "app_source", None)
        if callable(describe):
            described: dict[str, Any] = describe(name, version)
            return described
        return {"type": source.name, "package": name, "version": version}

    # persistence -------------------------------------------------------------
    def _stored(self, source: str) -> list[dict[str, Any]]:
        if self._db is None:
            return []
        row = self._db.table(TABLE).get(doc_id=_doc_id(source))
        return list(row.get("entries") or []) if row else []

    def _store(self, source: str) -> None:
        if self._db is None:
            return
        from tinydb.table import Document

        with self._db.transaction():
            doc = Document({"source": source, "entries": self._entries[source]}, doc_id=_doc_id(source))
            self._db.table(TABLE).upsert(doc)


def _doc_id(source: str) -> int:
    import zlib

    return zlib.crc32(source.encode()) or 1


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("catalog refresh failed", exc_info=task.exception())


async def build_catalog(host: Host) -> Catalog:
    """The host's catalog: local folder, registry (when configured), uploads, then plugin sources.

    Starts the first refresh in the background.  A plugin source whose name is
    taken fails start-up naming both plugins.
    """
    from bolt_host.plugins import PluginLoadError, await_maybe

    settings, data_dir = host.settings, host.settings.data_dir
    catalog = Catalog(host.db)
    catalog.add_source(LocalSource(settings.local_repo, data_dir / "cache"))
    if host.apps.registry is not None:

        def installed() -> list[str]:
            return [app.get("package") or app["name"] for app in host.apps.list()]

        catalog.add_source(RegistrySource(host.apps.registry, settings.pinned_packages, installed))
    catalog.add_source(UploadSource(data_dir / "uploads", data_dir / "cache"))
    for plugin, call in reversed(host.hooks.bound("register_sources")):  # in registration order
        try:
            contributed = await await_maybe(call())
        except Exception as exc:
            raise PluginLoadError(f"plugin {plugin!r}: register_sources failed: {exc}") from exc
        for source in contributed or []:
            try:
                catalog.add_source(source, plugin)
            except ValueError as exc:
                raise PluginLoadError(str(exc)) from exc
    catalog.refresh_soon()
    return catalog
