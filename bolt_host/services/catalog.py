"""The catalog: every package the host could install, merged from its sources.

A *source* is any object with this shape (see :class:`Source`)::

    name: str                                             # unique: "local", "registry", "uploads", ...
    async list_packages() -> list[dict]                   # one entry per package (below)
    async manifest(name, version=None) -> dict            # package.json of a version (None: latest)
    async readme(name, version=None) -> str
    async fetch(name, version, progress=None) -> Path     # a verified tarball in data_dir/cache
    app_source(name, version) -> dict                     # optional: the installed app's ``source``

An entry is ``{name, version (the latest), versions (ascending), description,
keywords, bolt, source}`` where ``bolt`` is the latest manifest's ``bolt`` block
and ``source`` the source's name.  ``progress`` is called as
``progress(bytes_received, total_bytes_or_None)``.

The built-in sources are :class:`LocalSource` (the ``--local-repo`` folder),
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
import json
import logging
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bolt_host.services.versions import compare_versions, max_version, sort_key
from bolt_host.storage import Database

log = logging.getLogger("bolt_host.catalog")

TABLE = "catalog"
APP_KEYWORD = "bolt-app"
MANIFEST_MAX_BYTES = 1024 * 1024
_TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_SAFE_PART = re.compile(r"[^A-Za-z0-9._@+-]")
Progress = Callable[[int, "int | None"], None]


class CatalogError(Exception):
    """A package or version is not in the catalog, or a source could not deliver it."""


@runtime_checkable
class Source(Protocol):
    name: str

    async def list_packages(self) -> list[dict[str, Any]]: ...

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]: ...

    async def readme(self, name: str, version: str | None = None) -> str: ...

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path: ...


def make_entry(manifest: dict[str, Any], versions: Iterable[str], source: str) -> dict[str, Any]:
    """A catalog entry from the latest version's manifest."""
    bolt = manifest.get("bolt") if isinstance(manifest.get("bolt"), dict) else {}
    keywords = manifest.get("keywords") if isinstance(manifest.get("keywords"), list) else []
    return {
        "name": str(manifest["name"]),
        "version": str(manifest["version"]),
        "versions": sorted({str(v) for v in versions} | {str(manifest["version"])}, key=sort_key),
        "description": str(manifest.get("description") or ""),
        "keywords": [str(k) for k in keywords],
        "bolt": bolt,
        "source": source,
    }


def is_firmware(entry: dict[str, Any]) -> bool:
    return bool((entry.get("bolt") or {}).get("firmware"))


def cache_name(name: str, version: str) -> str:
    """A file name for ``name@version`` that cannot leave its folder."""
    return _SAFE_PART.sub("_", f"{name.replace('/', '+')}@{version}") + ".tgz"


# ---------------------------------------------------------------- local folder


class LocalSource:
    """App folders in the local repository; ``fetch`` packs one (npm style) into the cache."""

    name = "local"

    def __init__(self, folder: Path, cache_dir: Path) -> None:
        self.folder = Path(folder)
        self.cache_dir = Path(cache_dir) / "local"

    def _folders(self) -> dict[str, tuple[Path, dict[str, Any]]]:
        found: dict[str, tuple[Path, dict[str, Any]]] = {}
        if not self.folder.is_dir():
            return found
        for folder in sorted(self.folder.iterdir()):
            manifest = _read_json(folder / "package.json") if folder.is_dir() else None
            if _valid_manifest(manifest):
                found.setdefault(manifest["name"], (folder, manifest))  # type: ignore[index]
        return found

    def _find(self, name: str, version: str | None) -> tuple[Path, dict[str, Any]]:
        hit = self._folders().get(name)
        if hit is None:
            raise CatalogError(f"{name} is not in the local repository")
        if version is not None and hit[1]["version"] != version:
            raise CatalogError(f"the local repository has {name} {hit[1]['version']}, not {version}")
        return hit

    async def list_packages(self) -> list[dict[str, Any]]:
        folders = await asyncio.to_thread(self._folders)
        return [make_entry(manifest, [manifest["version"]], self.name) for _, manifest in folders.values()]

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        return dict(self._find(name, version)[1])

    async def readme(self, name: str, version: str | None = None) -> str:
        folder, _ = self._find(name, version)
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and not candidate.is_symlink() and candidate.name.lower() == "readme.md":
                return candidate.read_text(encoding="utf-8", errors="replace")
        raise CatalogError(f"{name} has no README.md")

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path:
        from bolt_host.services.extract import pack_directory

        folder, _ = self._find(name, version)
        target = self.cache_dir / cache_name(name, version)
        partial = target.with_name(f".{target.name}.{time.monotonic_ns()}.part")
        try:
            await asyncio.to_thread(pack_directory, folder, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        if progress is not None:
            size = target.stat().st_size
            progress(size, size)
        return target

    def app_source(self, name: str, version: str) -> dict[str, Any]:
        folder, _ = self._find(name, None)
        return {"type": "local", "path": folder.name}


# ---------------------------------------------------------------- registry


class RegistrySource:
    """An npm-protocol registry, seen through a :class:`~bolt_host.services.registry.RegistryClient`.

    A registry cannot list everything it holds, so this source lists the
    ``keywords:bolt-app`` search results, the pinned names and the names
    ``installed()`` returns.  Installed names the registry does not know are
    skipped; a package whose packument fails keeps its previous entry.
    """

    name = "registry"

    def __init__(
        self,
        client: Any,
        pinned: Iterable[str] = (),
        installed: Callable[[], Iterable[str]] = tuple,
        concurrency: int = 8,
    ) -> None:
        self.client = client
        self.pinned = tuple(pinned)
        self.installed = installed
        self._limit = asyncio.Semaphore(concurrency)
        self._last: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []

    async def _names(self) -> list[str]:
        from bolt_host.services.registry import valid_package_name

        found = await self.client.search_keyword(APP_KEYWORD)
        names = [p.get("name") for p in found] + list(self.pinned) + list(self.installed())
        return sorted({n for n in names if valid_package_name(n)})

    async def list_packages(self) -> list[dict[str, Any]]:
        names = await self._names()  # a registry that is down fails here; the catalog keeps the old list
        problems: list[str] = []
        results = await asyncio.gather(*(self._entry(name, problems) for name in names))
        entries = {e["name"]: e for e in results if e is not None}
        self._last = entries
        self.problems = problems
        return list(entries.values())

    async def _entry(self, name: str, problems: list[str]) -> dict[str, Any] | None:
        from bolt_host.services.registry import RegistryError

        async with self._limit:
            try:
                doc = await self.client.packument(name)
                versions = doc.get("versions") or {}
                tags = doc.get("dist-tags") or {}
                latest = tags.get("latest") if tags.get("latest") in versions else max_version(versions)
                manifest = {**versions[latest], "name": name, "version": latest}
                if not _valid_manifest(manifest):
                    return None
                return make_entry(manifest, versions, self.name)
            except RegistryError as exc:
                if exc.kind == "not_found":
                    return None
                problems.append(f"{name}: {exc.message}")
                return self._last.get(name)
            except (KeyError, TypeError, AttributeError):
                problems.append(f"{name}: the registry's document is malformed")
                return self._last.get(name)

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        return await self._call(self.client.manifest(name, version))

    async def readme(self, name: str, version: str | None = None) -> str:
        return await self._call(self.client.readme(name, version))

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path:
        return await self._call(self.client.download(name, version, progress=progress))

    def app_source(self, name: str, version: str) -> dict[str, Any]:
        return {"type": "registry", "registry": self.client.base_url, "package": name, "version": version}

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        from bolt_host.services.registry import RegistryError

        try:
            return await awaitable
        except RegistryError as exc:
            raise CatalogError(exc.message) from exc


# ---------------------------------------------------------------- uploads


def read_tarball_manifest(path: Path, max_members: int = 2000) -> dict[str, Any]:
    """The ``package.json`` at the top of a package tarball, without extracting anything.

    Only a regular file ``package.json`` directly under the archive's top folder
    (or at its root) is read, at most :data:`MANIFEST_MAX_BYTES`.
    """
    try:
        with tarfile.open(path, "r:*") as tf:
            for count, member in enumerate(tf):
                if count >= max_members:
                    break
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if parts[-1:] == ["package.json"] and len(parts) <= 2 and member.isreg():
                    if member.size > MANIFEST_MAX_BYTES:
                        raise CatalogError(f"{path.name}: package.json is too large")
                    handle = tf.extractfile(member)
                    data = json.loads(handle.read()) if handle else None
                    if not _valid_manifest(data):
                        raise CatalogError(f"{path.name}: package.json has no valid name and version")
                    return data  # type: ignore[return-value]
    except (tarfile.TarError, OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path.name} is not a readable package tarball ({exc})") from None
    raise CatalogError(f"{path.name} has no package.json")


class UploadSource:
    """Package tarballs an admin put into the upload staging folder."""

    name = "uploads"

    def __init__(self, folder: Path, cache_dir: Path) -> None:
        self.folder = Path(folder)
        self.cache_dir = Path(cache_dir) / "uploads"
        self._seen: dict[Path, tuple[tuple[int, int], dict[str, Any] | None]] = {}

    def _scan(self) -> dict[str, dict[str, tuple[Path, dict[str, Any]]]]:
        """``{name: {version: (tarball, manifest)}}``; unreadable tarballs are skipped."""
        found: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.iterdir()):
            if not path.name.endswith(_TARBALL_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            manifest = self._manifest_of(path)
            if manifest is not None:
                found.setdefault(manifest["name"], {}).setdefault(manifest["version"], (path, manifest))
        return found

    def _manifest_of(self, path: Path) -> dict[str, Any] | None:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._seen.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            manifest: dict[str, Any] | None = read_tarball_manifest(path)
        except CatalogError as exc:
            log.info("upload skipped: %s", exc)
            manifest = None
        self._seen[path] = (stamp, manifest)
        return manifest

    def _find(self, name: str, version: str | None) -> tuple[Path, dict[str, Any]]:
        versions = self._scan().get(name) or {}
        chosen = version if version is not None else max_version(versions)
        if chosen not in versions:
            raise CatalogError(f"no uploaded package {name}" + (f" {version}" if version else ""))
        return versions[chosen]

    async def list_packages(self) -> list[dict[str, Any]]:
        scanned = await asyncio.to_thread(self._scan)
        entries = []
        for versions in scanned.values():
            latest = max_version(versions)
            entries.append(make_entry(versions[latest][1], versions, self.name))  # type: ignore[index]
        return entries

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        return dict(self._find(name, version)[1])

    async def readme(self, name: str, version: str | None = None) -> str:
        raise CatalogError(f"uploaded packages carry no separate readme ({name})")

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path:
        path, _ = self._find(name, version)
        target = self.cache_dir / cache_name(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{time.monotonic_ns()}.part")
        try:
            await asyncio.to_thread(shutil.copyfile, path, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        if progress is not None:
            size = target.stat().st_size
            progress(size, size)
        return target

    def app_source(self, name: str, version: str) -> dict[str, Any]:
        path, _ = self._find(name, version)
        return {"type": "upload", "filename": path.name, "version": version}


# ---------------------------------------------------------------- catalog


class Catalog:
    def __init__(self, db: Database | None = None) -> None:
        self._db = db
        self._sources: dict[str, Any] = {}
        self._owners: dict[str, str] = {}
        self._entries: dict[str, list[dict[str, Any]]] = {}
        self._errors: dict[str, str] = {}
        self._refreshing: asyncio.Task[list[dict[str, Any]]] | None = None
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
        """List every source again (concurrently); a refresh already running is joined."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_all())
        return await asyncio.shield(self._refreshing)

    def refresh_soon(self) -> asyncio.Task[list[dict[str, Any]]]:
        """Start a refresh in the background (or join the running one) and return its task."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_all())
            self._refreshing.add_done_callback(_log_failure)
        return self._refreshing

    async def ready(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until the first refresh has finished; True if it has."""
        if not self._refreshed.is_set() and (self._refreshing is None or self._refreshing.done()):
            self.refresh_soon()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._refreshed.wait(), timeout)
        return self._refreshed.is_set()

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing

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
        found = self.find(name)
        if found is None:
            raise CatalogError(f"{name} is not in the catalog")
        if version is None or version in found[0]["versions"]:
            return found
        for entry, source in self._candidates(name):
            if version in entry["versions"]:
                return entry, source
        raise CatalogError(f"no source has {name} {version}")

    # delivery ----------------------------------------------------------------
    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        _, source = self.source_for(name, version)
        return await source.manifest(name, version)

    async def readme(self, name: str, version: str | None = None) -> str:
        _, source = self.source_for(name, version)
        return await source.readme(name, version)

    async def fetch(
        self, name: str, version: str | None = None, progress: Progress | None = None
    ) -> tuple[Path, dict[str, Any]]:
        """A verified tarball of ``name@version`` (None: the latest) and the ``source`` to record for the app."""
        entry, source = self.source_for(name, version)
        version = version or entry["version"]
        path = await source.fetch(name, version, progress)
        return Path(path), self.app_source(source, name, version)

    @staticmethod
    def app_source(source: Any, name: str, version: str) -> dict[str, Any]:
        describe = getattr(source, "app_source", None)
        if callable(describe):
            return describe(name, version)
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _valid_manifest(manifest: Any) -> bool:
    return (
        isinstance(manifest, dict)
        and isinstance(manifest.get("name"), str)
        and bool(manifest["name"])
        and isinstance(manifest.get("version"), str)
        and bool(manifest["version"])
    )


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("catalog refresh failed", exc_info=task.exception())


async def build_catalog(host: Any) -> Catalog:
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
    for impl in host.pm.hook.register_sources.get_hookimpls():
        for source in await await_maybe(impl.function(host=host)) or []:
            try:
                catalog.add_source(source, impl.plugin_name)
            except ValueError as exc:
                raise PluginLoadError(str(exc)) from exc
    catalog.refresh_soon()
    return catalog
