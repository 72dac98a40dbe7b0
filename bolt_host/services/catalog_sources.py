"""The built-in package sources of the catalog: the local folder, a registry, uploads.

Each one has the shape :class:`bolt_host.services.catalog.Source` describes.
``fetch`` always leaves a verified tarball in ``data_dir/cache``: the local
source packs the folder (npm style), the registry source streams and checks the
registry's integrity (through the registry client), the upload source copies
the staged file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bolt_host.lazy import lazy_module
from bolt_host.services.manifest import install_preview
from bolt_host.services.versions import max_version, sort_key

if TYPE_CHECKING:
    import tarfile
else:  # install and packing paths only: not loaded by a host that only serves
    tarfile = lazy_module("tarfile")

log = logging.getLogger("bolt_host.catalog")

APP_KEYWORD = "bolt-app"
MANIFEST_MAX_BYTES = 1024 * 1024
SCAN_MAX_BYTES = 64 * 1024 * 1024
_TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_SAFE_PART = re.compile(r"[^A-Za-z0-9._@+-]")
Progress = Callable[[int, "int | None"], None]


class CatalogError(Exception):
    """A package or version is not in the catalog, or a source could not deliver it."""


def make_entry(
    manifest: dict[str, Any], versions: Iterable[str], source: str, folder: Path | None = None
) -> dict[str, Any]:
    """A catalog entry from the latest version's manifest; ``install`` is its install preview
    (start command, dependency count, install scripts), seen from ``folder`` when it is local."""
    bolt = manifest.get("bolt") if isinstance(manifest.get("bolt"), dict) else {}
    keywords = manifest.get("keywords")
    keywords = keywords if isinstance(keywords, list) else []
    return {
        "name": str(manifest["name"]),
        "version": str(manifest["version"]),
        "versions": sorted({str(v) for v in versions} | {str(manifest["version"])}, key=sort_key),
        "description": str(manifest.get("description") or ""),
        "keywords": [str(k) for k in keywords],
        "bolt": bolt,
        "source": source,
        "install": install_preview(manifest, folder),
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
            if manifest is not None and _valid_manifest(manifest):
                found.setdefault(manifest["name"], (folder, manifest))
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
        return [make_entry(manifest, [manifest["version"]], self.name, folder) for folder, manifest in folders.values()]

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
        manifest: dict[str, Any] = await self._call(self.client.manifest(name, version))
        return manifest

    async def readme(self, name: str, version: str | None = None) -> str:
        readme: str = await self._call(self.client.readme(name, version))
        return readme

    async def fetch(self, name: str, version: str, progress: Progress | None = None) -> Path:
        path: Path = await self._call(self.client.download(name, version, progress=progress))
        return path

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


def read_tarball_manifest(path: Path, max_members: int = 2000, scan_bytes: int = SCAN_MAX_BYTES) -> dict[str, Any]:
    """The ``package.json`` at the top of a package tarball, without extracting anything.

    Only a regular file ``package.json`` directly under the archive's top folder
    (or at its root) is read, at most :data:`MANIFEST_MAX_BYTES`.  The search
    stops after ``max_members`` members or ``scan_bytes`` inflated bytes, so a
    hostile archive cannot make it decompress gigabytes.
    """
    try:
        with tarfile.open(path, "r:*") as tf:
            for count, member in enumerate(tf):
                if count >= max_members or member.offset_data > scan_bytes:
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
                if member.offset_data + member.size > scan_bytes:
                    break  # skipping this member would inflate too much
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
