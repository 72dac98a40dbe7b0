"""Installed apps: the records (reads, previews of the local repository, changes, delete)
and boot's recovery of installs a crash cut off; installs themselves are :mod:`app_installs`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Query

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.app_folders import move_aside, recover_leftovers, remove_all
from bolt_host.services.app_installs import AppInstalls, Publish
from bolt_host.services.app_records import SCHEMAS, TABLE, checked_changes, checked_env, matches
from bolt_host.services.dependencies import DependencySteps
from bolt_host.services.envnames import caller_env_problem
from bolt_host.services.integrity import with_app_hash
from bolt_host.services.manifest import (
    ADMIN_FIELDS,
    KEPT_ON_UPGRADE,
    UPDATABLE_FIELDS,
    build_app,
    inside,
    read_manifest,
    validate_app_name,
    without_folder,
)
from bolt_host.services.python_env import venv_python
from bolt_host.storage import Database, json_copy

if TYPE_CHECKING:
    from bolt_host.services.appdb import AppDatabases
    from bolt_host.services.envnames import AdminEnv
    from bolt_host.services.registry import RegistryClient
    from bolt_host.services.sandbox import Isolation
    from bolt_host.services.supervisor import Supervisor
    from bolt_host.services.visibility import Visibility

log = logging.getLogger("bolt_host.apps")


class Apps(AppInstalls):
    def __init__(self, db: Database, data_dir: Path, local_repo: Path, publish: Publish) -> None:
        self._db = db
        db.migrate_all(SCHEMAS)
        self.apps_dir = data_dir / "apps"
        self.public_dir = data_dir / "public"
        self.databases_dir = data_dir / "databases"
        self.local_repo = local_repo
        self._publish = publish
        self._locks: dict[str, asyncio.Lock] = {}
        # Set by the Host as the services they name start (they need the apps service first).
        self.supervisor: Supervisor | None = None
        self.registry: RegistryClient | None = None  # only when a registry is configured
        self.appdb: AppDatabases | None = None
        self.visibility: Visibility | None = None
        self.isolation: Isolation | None = None  # set by the Host (None: isolation off)
        self.admin_env: AdminEnv | None = None  # set by the Host
        self.dependencies = DependencySteps(data_dir / "cache")

    # reads -------------------------------------------------------------------
    def get(self, name: Any) -> dict[str, Any] | None:
        """The app named ``name`` in any case (Bolt lower-cases app names); None for a non-string."""
        if not isinstance(name, str):
            return None
        doc_id = self._db.ids_by(TABLE, "name").get(name.lower())
        row = self._db.table(TABLE).get(doc_id=doc_id) if doc_id is not None else None
        return dict(row) if row else None

    def installed_name(self, name: Any) -> str | None:
        """The name of the installed app ``name`` names (in any case), without copying its record;
        None when there is none."""
        if not isinstance(name, str):
            return None
        return name.lower() if name.lower() in self._db.ids_by(TABLE, "name") else None

    @property
    def revision(self) -> int:
        """Changes whenever the host database is written (so after any install, update, delete)."""
        return self._db.revision

    def require(self, name: str) -> dict[str, Any]:
        app = self.get(name)
        if app is None:
            raise BoltError(errors.APP_NOT_FOUND, f"No app named {name!r} is installed")
        return app

    def list(self, criteria: dict[str, str] | None = None) -> list[dict[str, Any]]:
        found = [dict(row) for row in self._db.table(TABLE).all()]
        for key, wanted in (criteria or {}).items():
            found = [app for app in found if matches(app.get(key), wanted)]
        return sorted(found, key=lambda app: (app.get("order", 0), app["name"]))

    def with_field(self, field: str) -> builtins.list[tuple[str, Any]]:
        """``(name, its field)`` of each app whose record sets ``field``, in :meth:`list`'s order; only
        those values are copied (an event's fan-out to app hooks copied every record, at each install)."""
        found = [row for row in self._db.shared_rows(TABLE) if row.get(field)]
        found.sort(key=lambda app: (app.get("order", 0), app["name"]))
        return [(app["name"], json_copy(app[field])) for app in found]

    def lock_for(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # previews ----------------------------------------------------------------
    def local_folder(self, relative: Any, code: int = errors.LOCAL_PACKAGE_FAILED) -> Path:
        """The app folder ``relative`` names inside the local repository."""
        if relative is None or relative == "":
            raise BoltError(errors.APP_PATH_MISSING)
        folder = inside(self.local_repo, relative, code)
        if not folder.is_dir():
            raise BoltError(code, f"No app folder {relative!r} in the local repository")
        return folder

    def local_package(self, relative: Any) -> dict[str, Any]:
        return read_manifest(self.local_folder(relative))

    def local_readme(self, relative: Any) -> str:
        folder = self.local_folder(relative, errors.LOCAL_README_FAILED)
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and candidate.name.lower() in {"readme.md", "readme.markdown", "readme"}:
                inside(folder, candidate.name, errors.LOCAL_README_FAILED)
                return candidate.read_text(encoding="utf-8", errors="replace")
        raise BoltError(errors.LOCAL_README_FAILED, f"No README.md in {relative!r}")

    def local_catalog(self) -> builtins.list[dict[str, Any]]:
        """package.json of every app folder in the local repository."""
        found: list[dict[str, Any]] = []
        if not self.local_repo.is_dir():
            return found
        for folder in sorted(self.local_repo.iterdir()):
            if folder.is_dir() and (folder / "package.json").is_file():
                with contextlib.suppress(BoltError):
                    found.append({"path": folder.name, "package": read_manifest(folder)})
        return found

    # installs ----------------------------------------------------------------
    async def install_local(
        self, relative: Any, system: bool | None = None, upgrade: bool = False, *, run_scripts: bool = False
    ) -> dict[str, Any]:
        folder = self.local_folder(relative)
        source = {"type": "local", "path": str(relative)}
        return await self.install_folder(folder, source, system, upgrade, run_scripts=run_scripts)

    # changes -----------------------------------------------------------------
    async def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change fields of an installed app; ``isolation`` and ``limits`` (admin-only: the
        caller checks) apply from the app's next start."""
        unknown = set(changes) - UPDATABLE_FIELDS - ADMIN_FIELDS
        if unknown:
            raise BoltError(errors.BAD_REQUEST, f"Cannot change: {', '.join(sorted(unknown))}")
        changes = dict(changes)
        env = checked_env(changes.pop("env")) if "env" in changes else None
        checked = checked_changes(changes)
        name = name.lower()  # app names are lowercase; callers may name them in any case
        async with self.lock_for(name):
            app = self.require(name)
            if env is not None:
                problem = caller_env_problem(env, set(app.get("env") or {}))
                if problem:
                    raise BoltError(errors.BAD_REQUEST, problem)
                assert self.admin_env is not None  # set by the Host before any request
                await self.admin_env.change(name, env)
            app.update(checked)
            with self._db.transaction():
                self._db.table(TABLE).update(checked, Query().name == name)
        await self._publish("app-updated", {"app": without_folder(app), "changed": sorted(checked)})
        return app

    async def delete(
        self, name: str, delete_database: bool = False, delete_public: bool = False, delete_source: bool = False
    ) -> dict[str, Any]:
        name = name.lower()  # app names are lowercase; callers may name them in any case
        async with self.lock_for(name):
            app = self.require(name)
            await self._publish("app-uninstalling", {"app": without_folder(app)})
            await self._stop_before_delete(name)
            # Folders are moved aside (one rename each), the record goes, then the moved folders:
            # a kill before the record's removal leaves the app whole (boot puts the folders
            # back), one after it leaves only ``.old-*`` leftovers, which boot removes and never
            # resurrects. A removal that fails is such a leftover too, never an unlisted folder
            # in a reinstall's way.
            aside = [
                moved
                for wanted, folder in ((delete_source, self.apps_dir / name), (delete_public, self.public_dir / name))
                if wanted and (moved := move_aside(folder)) is not None
            ]
            if delete_database and self.appdb is not None:
                self.appdb.drop_app(name)
            with self._db.transaction():
                self._db.table(TABLE).remove(Query().name == name)
            await asyncio.to_thread(remove_all, aside)
            if self.admin_env is not None:
                self.admin_env.forget(name)
            if self.isolation is not None:
                self.isolation.forget(name)
                await asyncio.to_thread(self.isolation.hand_back_data, name, delete_data=delete_database)
            if self.visibility is not None:
                self.visibility.forget_app(name)
        await self._publish("app-uninstalled", {"app": without_folder(app)})
        return app

    async def _stop_before_delete(self, name: str) -> None:
        """Stop ``name`` if it runs; a stop that fails (or leaves it running) aborts the delete.

        Other exceptions (a full disk, say) propagate as they are and abort it too.
        """
        if self.supervisor is None or not self.supervisor.is_active(name):
            return
        try:
            await self.supervisor.stop_app(name)
        except BoltError as exc:
            if exc.code != errors.APP_NOT_RUNNING:  # stopped meanwhile: nothing to abort for
                raise _stop_failed(name, exc.message) from exc
        if self.supervisor.is_active(name):
            raise _stop_failed(name, "it is still running")

    def clean_staging(self) -> None:
        """Recover from installs a crash cut off (at boot, before anything runs).

        Staging dirs go.  A folder moved aside for a swap (``.old-<name>-XXXXXXXX``) is put
        back when the swap never completed (its place is empty) and the app is still
        recorded, else removed: an unrecorded folder never comes back as ``apps/<name>``.  A record
        whose folder already holds the new version (killed between the swap and the db
        write) is rolled forward to it, so record and files always agree.
        """
        if not self.apps_dir.is_dir():
            return
        recover_leftovers(self.apps_dir, self.public_dir, {row.get("name") for row in self._db.table(TABLE).all()})
        self._roll_forward_records()

    def _roll_forward_records(self) -> None:
        for row in self._db.table(TABLE).all():
            app = dict(row)
            folder = Path(str(app.get("folder") or ""))
            try:
                manifest = read_manifest(folder)
                if manifest.get("version") == app.get("version"):
                    continue
                source = dict(app.get("source") or {})
                if "version" in source:
                    source["version"] = manifest.get("version")
                fresh = build_app(manifest, folder, source, app.get("system"), app["dateCreated"])
                fresh = with_app_hash(fresh, folder)
            except (BoltError, KeyError):
                continue  # nothing whole to roll forward to; the record stays as it is
            if fresh["name"] != app["name"]:
                continue
            fresh.update({k: app[k] for k in KEPT_ON_UPGRADE if k in app})
            python = venv_python(folder)  # the dependency step's venv came with the folder
            fresh["python"] = str(python) if python.exists() else None
            with self._db.transaction():
                self._db.table(TABLE).upsert(fresh, Query().name == app["name"])
            log.warning(
                "%s: its folder holds %s (an install cut off by a crash); record updated", app["name"], fresh["version"]
            )


def _stop_failed(name: str, why: str) -> BoltError:
    return BoltError(
        errors.APP_STOP_FAILED,
        f"Could not stop {name!r} ({why}); nothing was deleted",
        user_message="The app could not be stopped, so it was not deleted. Try again, or stop it first.",
    )


__all__ = ["TABLE", "Apps", "validate_app_name"]
