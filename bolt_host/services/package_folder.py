"""A folder of app folders and ``.tgz`` tarballs, seen as the packages of an npm registry.

``bolt-host registry serve DIR`` answers from this.  Each sub-folder with a ``package.json``
is packed the way ``npm pack`` packs it; each ``*.tgz`` (an ``npm pack`` output) is served as
it is, its manifest read from its ``package/package.json``.  Several versions of one name
(tarballs, or a folder and tarballs) make one packument.  ``dist-tags.latest`` is the highest
release (the highest prerelease when there is no release); a manifest's
``publishConfig.tag`` tags its version as ``npm publish --tag`` would.

The folder is read again when its entries change (names, sizes, modification times), so
copying a new tarball in publishes it; nothing is ever written into the folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bolt_host.lazy import lazy_module
from bolt_host.services.extract import pack_directory
from bolt_host.services.registry import valid_package_name
from bolt_host.services.versions import max_version, parse_version

if TYPE_CHECKING:
    import tarfile
else:  # install and packing paths only: not loaded by a host that only serves
    tarfile = lazy_module("tarfile")

log = logging.getLogger("bolt_host.registry")

MAX_MANIFEST_BYTES = 1_048_576
README_NAMES = ("readme.md", "readme", "readme.markdown", "readme.txt")


@dataclass
class PackageVersion:
    manifest: dict[str, Any]
    tarball: bytes
    filename: str
    published: str
    readme: str | None = None

    @property
    def integrity(self) -> str:
        return "sha512-" + base64.b64encode(hashlib.sha512(self.tarball).digest()).decode()

    @property
    def shasum(self) -> str:
        return hashlib.sha1(self.tarball).hexdigest()


@dataclass
class Package:
    name: str
    versions: dict[str, PackageVersion] = field(default_factory=dict)

    def dist_tags(self) -> dict[str, str]:
        releases = [v for v in self.versions if not parse_version(v).is_prerelease]
        tags = {"latest": max_version(releases or list(self.versions)) or ""}
        for version, entry in sorted(self.versions.items()):
            tag = (entry.manifest.get("publishConfig") or {}).get("tag")
            if isinstance(tag, str) and tag and tag != "latest":
                tags[tag] = version
        return tags

    def packument(self, base_url: str) -> dict[str, Any]:
        """The registry document for this name, tarball URLs under ``base_url``."""
        tags = self.dist_tags()
        latest = self.versions[tags["latest"]]
        doc: dict[str, Any] = {
            "_id": self.name,
            "name": self.name,
            "dist-tags": tags,
            "versions": {v: self.version_document(v, base_url) for v in self.versions},
            "time": {v: entry.published for v, entry in self.versions.items()},
        }
        if latest.manifest.get("description"):
            doc["description"] = latest.manifest["description"]
        if latest.readme is not None:
            doc["readme"] = latest.readme
        return doc

    def version_document(self, version: str, base_url: str) -> dict[str, Any]:
        entry = self.versions[version]
        doc = {key: value for key, value in entry.manifest.items() if key not in ("readme", "dist")}
        doc.update(_id=f"{self.name}@{version}", name=self.name, version=version)
        doc["dist"] = {
            "tarball": f"{base_url.rstrip('/')}/{self.name}/-/{entry.filename}",
            "integrity": entry.integrity,
            "shasum": entry.shasum,
        }
        return doc

    def search_entry(self) -> dict[str, Any]:
        version = self.dist_tags()["latest"]
        manifest = self.versions[version].manifest
        return {
            "name": self.name,
            "scope": self.name[1:].split("/")[0] if self.name.startswith("@") else "unscoped",
            "version": version,
            "description": manifest.get("description") or "",
            "keywords": [k for k in manifest.get("keywords") or [] if isinstance(k, str)],
            "date": self.versions[version].published,
            "links": {},
        }


class PackageFolder:
    """The packages of ``root``, read again whenever its entries change."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.problems: list[str] = []  # entries skipped at the last read, with the reason
        self._lock = threading.Lock()
        self._listing: tuple[Any, ...] | None = None
        self._packages: dict[str, Package] = {}

    def packages(self) -> dict[str, Package]:
        with self._lock:
            listing = self._read_listing()
            if listing != self._listing:
                self._packages, self.problems = _load(self.root)
                self._listing = listing
                for problem in self.problems:
                    log.warning("skipped %s", problem)
            return self._packages

    def _read_listing(self) -> tuple[Any, ...]:
        entries = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            stat = entry.stat()
            entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
            if entry.is_dir():  # a folder's files change without touching the folder itself
                entries.extend(_tree_listing(Path(entry.path)))
        return tuple(entries)

    def search(self, text: str) -> list[dict[str, Any]]:
        found = [pkg.search_entry() for pkg in self.packages().values()]
        return sorted((e for e in found if _matches(e, text)), key=lambda e: e["name"])


def _tree_listing(folder: Path) -> list[tuple[str, int, int]]:
    marks = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in ("node_modules", ".git", "__pycache__")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue
            marks.append((path, stat.st_size, stat.st_mtime_ns))
    return sorted(marks)


def _load(root: Path) -> tuple[dict[str, Package], list[str]]:
    packages: dict[str, Package] = {}
    problems: list[str] = []
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            if path.is_dir() and (path / "package.json").is_file():
                entry = _from_folder(path)
            elif path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
                entry = _from_tarball(path)
            else:
                continue
        except (OSError, ValueError, tarfile.TarError) as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        name, version = entry.manifest["name"], entry.manifest["version"]
        package = packages.setdefault(name, Package(name))
        if version in package.versions:
            problems.append(f"{path.name}: {name}@{version} is already served by another entry")
            continue
        package.versions[version] = entry
    return packages, problems


def _checked(manifest: Any, where: str) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} is not a JSON object")
    if not valid_package_name(manifest.get("name")):
        raise ValueError(f"{where}: not a valid package name: {manifest.get('name')!r}")
    version = manifest.get("version")
    if not isinstance(version, str) or not parse_version(version).is_release:
        raise ValueError(f"{where}: not a valid version: {version!r}")
    return manifest


def _published(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_folder(folder: Path) -> PackageVersion:
    manifest = _checked(json.loads((folder / "package.json").read_text(encoding="utf-8")), "package.json")
    with tempfile.TemporaryDirectory(prefix="bolt-registry-pack-") as tmp:
        data = pack_directory(folder, Path(tmp) / "package.tgz").read_bytes()
    readme = next((p for p in sorted(folder.iterdir()) if p.name.lower() in README_NAMES and p.is_file()), None)
    return PackageVersion(
        manifest=manifest,
        tarball=data,
        filename=f"{manifest['name'].split('/')[-1]}-{manifest['version']}.tgz",
        published=_published(folder / "package.json"),
        readme=readme.read_text(encoding="utf-8", errors="replace") if readme else None,
    )


def _from_tarball(path: Path) -> PackageVersion:
    data = path.read_bytes()
    manifest: Any = None
    readme = None
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive:
            parts = member.name.lstrip("./").split("/")
            if len(parts) != 2 or not member.isfile() or member.size > MAX_MANIFEST_BYTES:
                continue
            if parts[1] == "package.json" and manifest is None:
                manifest = json.loads(archive.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
            elif parts[1].lower() in README_NAMES and readme is None:
                readme = archive.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    if manifest is None:
        raise ValueError("no package/package.json in the tarball")
    manifest = _checked(manifest, "package.json in the tarball")
    return PackageVersion(
        manifest=manifest,
        tarball=data,
        filename=f"{manifest['name'].split('/')[-1]}-{manifest['version']}.tgz",
        published=_published(path),
        readme=readme,
    )


def _matches(entry: dict[str, Any], text: str) -> bool:
    """npm search's text: plain words match name, description or keywords; ``keywords:a,b`` needs one of them."""
    keywords = {k.lower() for k in entry["keywords"]}
    for token in text.lower().split():
        if token.startswith("keywords:"):
            if not keywords & set(token[len("keywords:") :].split(",")):
                return False
        elif not any(token in s for s in (entry["name"], entry["description"].lower(), *keywords)):
            return False
    return True
