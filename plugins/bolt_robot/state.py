"""What the robot backend remembers: downloaded tarballs and flashed firmware versions.

Both live in the host's database (tables ``robot_downloads`` and
``robot_firmware``), so they survive restarts.  A download whose file has gone
from the cache no longer counts as downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import Query

from bolt_host.plugin import Host, compare_versions, format_time, sort_key

DOWNLOADS = "robot_downloads"
FIRMWARE = "robot_firmware"
SECRET_ENV = "BOLT_ROBOT_SECRET"
INSTALL_WAIT_ENV = "BOLT_ROBOT_INSTALL_WAIT"
DEFAULT_INSTALL_WAIT = 60.0  # seconds install_local_file holds its request before answering with the task
LOCAL_FILE_DIRS_ENV = "BOLT_ROBOT_LOCAL_FILE_DIRS"


def local_file_dirs_from(environ: Mapping[str, str], uploads_dir: Path) -> tuple[Path, ...]:
    """The folders ``install_local_file`` may read from: ``BOLT_ROBOT_LOCAL_FILE_DIRS``
    (absolute folders separated by ``:``), else the upload staging folder and the system
    temp folder (the robot document's own example names a file in ``/tmp``)."""
    raw = environ.get(LOCAL_FILE_DIRS_ENV, "").strip()
    if not raw:
        return (uploads_dir, Path(tempfile.gettempdir()))
    folders = tuple(Path(part) for part in raw.split(os.pathsep) if part.strip())
    if not folders or not all(folder.is_absolute() for folder in folders):
        raise ValueError(f"{LOCAL_FILE_DIRS_ENV} must list absolute folders separated by ':', not {raw!r}")
    return folders


def install_wait_from(environ: Mapping[str, str]) -> float:
    """``BOLT_ROBOT_INSTALL_WAIT`` in seconds (a positive number), or the default."""
    raw = environ.get(INSTALL_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_INSTALL_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{INSTALL_WAIT_ENV} must be a positive number of seconds, not {raw!r}")
    return value


def sha512_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha512").hexdigest()


class Downloads:
    """Verified tarballs waiting to be installed: ``{name, version, path, sha512, source, time}``."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def record(self, name: str, version: str, path: Path, sha512: str, source: dict[str, Any]) -> None:
        row = {"name": name, "version": version, "path": str(path), "sha512": sha512, "source": source}
        row["time"] = format_time()
        match = (Query().name == name) & (Query().version == version)
        with self._db.transaction():
            self._db.table(DOWNLOADS).upsert(row, match)

    def get(self, name: str, version: str) -> dict[str, Any] | None:
        match = (Query().name == name) & (Query().version == version)
        row = self._db.table(DOWNLOADS).get(match)
        return dict(row) if row and Path(row["path"]).is_file() else None

    def versions(self, name: str) -> list[str]:
        """Downloaded versions of ``name`` whose tarball is still there, ascending."""
        rows = self._db.table(DOWNLOADS).search(Query().name == name)
        return sorted({r["version"] for r in rows if Path(r["path"]).is_file()}, key=sort_key)

    def forget_up_to(self, name: str, version: str) -> None:
        """Drop downloads of ``name`` at or below ``version`` (installed now) and their files."""
        rows = self._db.table(DOWNLOADS).search(Query().name == name)
        stale = [r for r in rows if compare_versions(r["version"], version) <= 0]
        for row in stale:
            Path(row["path"]).unlink(missing_ok=True)
        with self._db.transaction():
            self._db.table(DOWNLOADS).remove(doc_ids=[r.doc_id for r in stale])


class FirmwareVersions:
    """The version last flashed successfully for each firmware package."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def version(self, name: str) -> str | None:
        row = self._db.table(FIRMWARE).get(Query().name == name)
        return row["version"] if row else None

    def names(self) -> list[str]:
        """Every firmware package flashed at least once."""
        return [row["name"] for row in self._db.table(FIRMWARE).all()]

    def record(self, name: str, version: str, target: Path, sha512: str) -> None:
        row = {"name": name, "version": version, "target": str(target), "sha512": sha512, "time": format_time()}
        with self._db.transaction():
            self._db.table(FIRMWARE).upsert(row, Query().name == name)


@dataclass
class Robot:
    """The backend's state, kept in ``host.state["robot"]``."""

    host: Host
    secret: str | None
    downloads: Downloads
    firmware: FirmwareVersions
    install_wait: float = DEFAULT_INSTALL_WAIT
    local_file_dirs: tuple[Path, ...] = ()

    @classmethod
    def create(cls, host: Host) -> Robot:
        secret = os.environ.get(SECRET_ENV) or None
        return cls(
            host=host,
            secret=secret,
            downloads=Downloads(host.db),
            firmware=FirmwareVersions(host.db),
            install_wait=install_wait_from(os.environ),
            local_file_dirs=local_file_dirs_from(os.environ, Path(host.settings.data_dir) / "uploads"),
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.host.settings.data_dir)

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def local_copies_dir(self) -> Path:
        """Private copies of the local files being installed (removed once installed)."""
        return self.data_dir / "cache" / "local-files"

    @property
    def firmware_dir(self) -> Path:
        return self.data_dir / "firmware"

    @property
    def staging_dir(self) -> Path:
        """Where firmware packages are unpacked while they are flashed."""
        return self.data_dir / "cache" / "firmware-staging"

    def installed_app(self, name: str) -> dict[str, Any] | None:
        """The installed app for module ``name`` (app name or npm package name)."""
        app = self.host.apps.get(name)
        if app is not None:
            return app
        return next((a for a in self.host.apps.list() if a.get("package") == name), None)
