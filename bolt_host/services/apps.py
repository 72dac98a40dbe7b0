"""Installed apps: install from a folder, a registry or a tarball; upgrade; update; delete.

Every install stages the new tree next to its final place, validates it, then
swaps it in with renames; any failure leaves the previous version (files,
record, running process) as it was.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Query
from tinydb.table import Table

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.dependencies import DependencySteps
from bolt_host.services.envnames import caller_env_problem
from bolt_host.services.integrity import with_app_hash
from bolt_host.services.limits import LimitError, check_limits
from bolt_host.services.manifest import (
    ADMIN_FIELDS,
    KEPT_ON_UPGRADE,
    UPDATABLE_FIELDS,
    app_name_for,
    build_app,
    inside,
    read_manifest,
    validate_app_name,
    without_folder,
)
from bolt_host.services.python_env import venv_python
from bolt_host.services.trees import remove_tree
from bolt_host.services.users import now_iso
from bolt_host.storage import INITIAL_SCHEMA, Database

if TYPE_CHECKING:
    from bolt_host.services.appdb import AppDatabases
    from bolt_host.services.envnames import AdminEnv
    from bolt_host.services.registry import RegistryClient
    from bolt_host.services.sandbox import Isolation
    from bolt_host.services.supervisor import Supervisor
    from bolt_host.services.visibility import Visibility

log = logging.getLogger("bolt_host.apps")

TABLE = "apps"


def _split_path_and_folder(table: Table) -> None:
    """Version 2: ``path`` is Bolt's (where the app came from); the host's folder moves to ``folder``."""
    for row in table.all():
        if "folder" in row:
            continue
        source = row.get("source") or {}
        path = source.get("path") or source.get("package") or row["name"]
        moved = {"folder": row.get("path"), "path": path, "module": row.get("module", False)}
        table.update(moved, doc_ids=[row.doc_id])


SCHEMAS = {TABLE: {**INITIAL_SCHEMA, 2: _split_path_and_folder}}
Publish = Callable[[str, Any], Awaitable[Any]]


class Apps:
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
        row = self._db.table(TABLE).get(Query().name == name.lower())
        return dict(row) if row else None

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
            found = [app for app in found if _matches(app.get(key), wanted)]
        return sorted(found, key=lambda app: (app.get("order", 0), app["name"]))

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

    async def install_folder(
        self,
        folder: Path,
        source: dict[str, Any],
        system: bool | None = None,
        upgrade: bool = False,
        *,
        run_scripts: bool = False,
    ) -> dict[str, Any]:
        """Install a copy of the app folder ``folder`` (the caller has checked where it is)."""
        staging = self._staging_dir()
        try:
            root = staging / "package"
            await asyncio.to_thread(_copy_tree, folder, root)
            return await self.install_tree(root, source, system, upgrade, run_scripts=run_scripts)
        finally:
            remove_tree(staging, ignore_errors=True)

    async def install_tarball(
        self,
        tarball: Path,
        source: dict[str, Any],
        system: bool | None = None,
        upgrade: bool = False,
        expect_name: str | None = None,
        prepare: Callable[[Path], None] | None = None,
        *,
        run_scripts: bool = False,
    ) -> dict[str, Any]:
        """Extract ``tarball`` safely and install it; ``prepare(root)`` runs (in a thread) on the
        extracted package first: a check that raises to refuse it, or a rewrite (a clone's name)."""
        from bolt_host.services.extract import ExtractError, safe_extract

        staging = self._staging_dir()
        try:
            try:
                root = await asyncio.to_thread(safe_extract, tarball, staging)
            except ExtractError as exc:
                raise BoltError(errors.DOWNLOAD_FAILED, f"Unsafe or broken package: {exc.reason}") from exc
            if prepare is not None:
                await asyncio.to_thread(prepare, root)
            return await self.install_tree(
                root, source, system, upgrade, expect_name=expect_name, run_scripts=run_scripts
            )
        finally:
            remove_tree(staging, ignore_errors=True)

    async def install_upload(
        self,
        chunks: AsyncIterator[bytes],
        filename: str,
        system: bool | None = None,
        upgrade: bool = False,
        *,
        run_scripts: bool = False,
    ) -> dict[str, Any]:
        """Install a package tarball that arrives as a stream of bytes (an upload), written to staging first."""
        staging = self._staging_dir()
        try:
            tarball = staging / "upload.tgz"
            size = 0
            with open(tarball, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    handle.write(chunk)
            if size == 0:
                raise BoltError(errors.BAD_REQUEST, "The upload is empty: send the package tarball as the body")
            source = {"type": "upload", "filename": filename}
            return await self.install_tarball(tarball, source, system, upgrade, run_scripts=run_scripts)
        except BoltError as exc:
            if exc.code == errors.DOWNLOAD_FAILED:  # a broken tarball: the uploader's input, not an upstream failure
                raise BoltError(errors.BAD_REQUEST, exc.message) from exc
            raise
        finally:
            remove_tree(staging, ignore_errors=True)

    async def install_registry(
        self,
        package: Any,
        version: Any = None,
        system: bool | None = None,
        upgrade: bool = False,
        progress: Callable[[int, int | None], None] | None = None,
        *,
        run_scripts: bool = False,
    ) -> dict[str, Any]:
        registry = self.require_registry()
        version = optional_version(version)
        app_name = app_name_for(package)
        assert isinstance(package, str)
        if not upgrade and self.get(app_name):
            raise BoltError(errors.APP_NAME_TAKEN)
        meta = await registry_call(registry.manifest(package, version), errors.REGISTRY_PACKAGE_FAILED)
        tarball = await registry_call(
            registry.download(package, meta["version"], progress=progress), errors.DOWNLOAD_FAILED
        )
        await self._publish("app-downloaded", {"name": app_name, "version": meta["version"]})
        source = {"type": "registry", "registry": registry.base_url, "package": package, "version": meta["version"]}
        return await self.install_tarball(
            tarball, source, system, upgrade, expect_name=package, run_scripts=run_scripts
        )

    def require_registry(self) -> Any:
        if self.registry is None:
            raise BoltError(
                errors.DOWNLOAD_FAILED,
                "No registry is configured; start the host with --registry URL (env BOLT_REGISTRY_URL)",
            )
        return self.registry

    async def install_tree(
        self,
        root: Path,
        source: dict[str, Any],
        system: bool | None,
        upgrade: bool,
        expect_name: str | None = None,
        *,
        run_scripts: bool = False,
    ) -> dict[str, Any]:
        """Validate the staged tree at ``root``, install its dependencies there, swap it into place.

        An upgrade of a running app is a rolling restart onto the new version: the previous
        version serves until the new one is ready.  When the new one never becomes ready the
        previous folder and record are put back, and the previous process serves on (apps with
        ``bolt.rolling: false``: the previous version is started again).
        """
        manifest = read_manifest(root)
        if expect_name is not None and manifest.get("name") != expect_name:
            raise BoltError(
                errors.REGISTRY_PACKAGE_FAILED,
                f"The package names itself {manifest.get('name')!r}, expected {expect_name!r}",
            )
        _check_registry_version(manifest, source)
        name = build_app(manifest, self.apps_dir / "pending", source, system, now_iso(), root=root)["name"]
        if self.get(name) and not upgrade:  # before spending minutes on dependencies
            raise BoltError(errors.APP_NAME_TAKEN)
        registry = self.registry.base_url if self.registry is not None else None
        credentials = self.registry.npm_credentials() if self.registry is not None else None
        confined = self._confined_install(name, root)
        try:
            prepared = await self.dependencies.prepare(
                root,
                manifest,
                registry=registry,
                run_scripts=run_scripts,
                confine=confined,
                registry_credentials=credentials,
            )
        finally:
            if confined is not None and self.isolation is not None:  # the app's uid wrote there:
                # its code is root's again before it runs
                await asyncio.to_thread(self.isolation.share_code, self._install_identity(name, root), root)
        async with self.lock_for(name):
            previous = self.get(name)
            if previous and not upgrade:
                raise BoltError(errors.APP_NAME_TAKEN)
            created = previous["dateCreated"] if previous else now_iso()
            if previous and system is None:
                system = previous.get("system")
            app = build_app(manifest, self.apps_dir / name, source, system, created, root=root)
            app.update(prepared.fields(root, self.apps_dir / name))
            with_app_hash(app, root)
            if previous:
                app.update({k: previous[k] for k in KEPT_ON_UPGRADE if k in previous})
            restart = previous is not None and self.supervisor is not None and self.supervisor.is_active(name)
            swapped = await asyncio.to_thread(self._swap_in, root, app)
            with self._db.transaction():
                self._db.table(TABLE).upsert(app, Query().name == name)
        try:
            if restart:
                assert previous is not None
                await self._restart_or_roll_back(app, previous, swapped)
        finally:
            await asyncio.to_thread(_remove_all, [old for _, old in swapped if old is not None])
        await self._publish(
            "app-updated" if previous else "app-installed",
            {"app": without_folder(app), "previousVersion": previous["version"] if previous else None},
        )
        return app

    def _install_identity(self, name: str, root: Path) -> dict[str, Any]:
        installed = self.get(name) or {}
        return {"name": name, "folder": str(root), "isolation": installed.get("isolation", True)}

    def _confined_install(
        self, name: str, root: Path
    ) -> Callable[[str], Awaitable[tuple[builtins.list[str], Path, bool]]] | None:
        """How the dependency step runs a tool as the app (its uid or sandbox), or None."""
        isolation = self.isolation
        if isolation is None:
            return None
        app = self._install_identity(name, root)
        isolation.assign(app)

        async def confine(tool: str) -> tuple[builtins.list[str], Path, bool]:
            return await asyncio.to_thread(isolation.install_prefix, app, root, tool)

        return confine

    def _swap_in(self, root: Path, app: dict[str, Any]) -> builtins.list[tuple[Path, Path | None]]:
        """Move the staged app (and its public files) into place: ``(final place, what it replaced,
        kept aside or None)`` for each, so a failed upgrade can put things back."""
        name = app["name"]
        public_stage = root.parent / "public"
        for entry in app["public"]:
            src = inside(root, entry, errors.LOCAL_PACKAGE_FAILED)
            if src.is_dir():
                _copy_tree(src, public_stage, merge=True)
            elif src.is_file():
                public_stage.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, public_stage / src.name)
        swapped = [(self.apps_dir / name, _replace_dir(root, self.apps_dir / name))]
        if public_stage.exists():
            swapped.append((self.public_dir / name, _replace_dir(public_stage, self.public_dir / name)))
        return swapped

    async def _restart_or_roll_back(
        self, app: dict[str, Any], previous: dict[str, Any], swapped: builtins.list[tuple[Path, Path | None]]
    ) -> None:
        """Restart ``app`` on its new version; if it does not become ready, reinstate ``previous``."""
        name = app["name"]
        assert self.supervisor is not None  # an upgrade of a running app: supervision is up
        try:
            await self.supervisor.restart_app(app, rolling=True)
            return
        except BoltError as exc:
            failure = exc.message
        log.warning("%s %s did not start; rolling back to %s", name, app["version"], previous["version"])
        async with self.lock_for(name):
            await asyncio.to_thread(_swap_back, swapped)
            with self._db.transaction():
                self._db.table(TABLE).upsert(previous, Query().name == name)
        swapped.clear()  # nothing left aside to remove
        try:
            if self._still_serving(previous):
                outcome = f"rolled back to {previous['version']}, which kept serving"
            else:
                await self.supervisor.restart_app(previous)
                outcome = f"rolled back to {previous['version']}, which is running again"
        except BoltError as exc:
            outcome = f"rolled back to {previous['version']}, which did not start either: {exc.message}"
        raise BoltError(
            errors.APP_START_FAILED,
            f"The upgrade of {name} to {app['version']} did not start ({failure}); {outcome}",
            user_message=f"The new version of {name} did not start, so the previous one was put back.",
        )

    def _still_serving(self, previous: dict[str, Any]) -> bool:
        """Whether the previous version's process is running (a rolling upgrade that failed)."""
        assert self.supervisor is not None
        context = self.supervisor.context(previous["name"]) or {}
        return context.get("status") == "running" and context["app"].get("version") == previous["version"]

    # changes -----------------------------------------------------------------
    async def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change fields of an installed app; ``isolation`` and ``limits`` (admin-only: the
        caller checks) apply from the app's next start."""
        unknown = set(changes) - UPDATABLE_FIELDS - ADMIN_FIELDS
        if unknown:
            raise BoltError(errors.BAD_REQUEST, f"Cannot change: {', '.join(sorted(unknown))}")
        changes = dict(changes)
        env = _checked_env(changes.pop("env")) if "env" in changes else None
        checked = _checked_changes(changes)
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
                if wanted and (moved := _move_aside(folder)) is not None
            ]
            if delete_database and self.appdb is not None:
                self.appdb.drop_app(name)
            with self._db.transaction():
                self._db.table(TABLE).remove(Query().name == name)
            await asyncio.to_thread(_remove_all, aside)
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

    def _staging_dir(self) -> Path:
        self.apps_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.apps_dir))

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
        for leftover in self.apps_dir.glob(".staging-*"):
            remove_tree(leftover, ignore_errors=True)
        recorded = {row.get("name") for row in self._db.table(TABLE).all()}
        for leftover in [*self.apps_dir.glob(".old-*"), *self.public_dir.glob(".old-*")]:
            original = leftover.parent / leftover.name[len(".old-") : -len("-XXXXXXXX")]
            if original.name in recorded and not original.exists():
                leftover.rename(original)
            else:
                remove_tree(leftover, ignore_errors=True)
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


def _check_registry_version(manifest: dict[str, Any], source: dict[str, Any]) -> None:
    """A registry tarball must be the version the registry listed it as (npm refuses a mismatch too)."""
    listed = source.get("version") if source.get("type") == "registry" else None
    if listed is not None and manifest.get("version") != listed:
        raise BoltError(
            errors.REGISTRY_PACKAGE_FAILED,
            f"Version mismatch: the registry lists {listed!r}, the package's package.json says "
            f"{manifest.get('version')!r}; refused",
        )


def _stop_failed(name: str, why: str) -> BoltError:
    return BoltError(
        errors.APP_STOP_FAILED,
        f"Could not stop {name!r} ({why}); nothing was deleted",
        user_message="The app could not be stopped, so it was not deleted. Try again, or stop it first.",
    )


def optional_version(version: Any) -> str | None:
    """A requested version: absent (the latest) or a non-empty string; a 400 otherwise."""
    if version is None:
        return None
    if not isinstance(version, str) or not version.strip():
        raise BoltError(errors.BAD_REQUEST, "'version' must be a non-empty string")
    return version


async def registry_call(awaitable: Awaitable[Any], code: int) -> Any:
    """Await a registry client call, mapping its errors to Bolt codes."""
    from bolt_host.services.registry import RegistryError

    try:
        return await awaitable
    except RegistryError as exc:
        if exc.kind == "readme":
            code = errors.REGISTRY_README_FAILED
        elif exc.kind in {"download", "integrity"}:
            code = errors.DOWNLOAD_FAILED
        raise BoltError(code, str(exc)) from exc


def _replace_dir(new: Path, final: Path) -> Path | None:
    """Move ``new`` to ``final``; an existing ``final`` is moved aside (``.old-<name>-XXXXXXXX``,
    which boot's recovery understands) and returned, for the caller to remove or put back."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = _move_aside(final)
    try:
        new.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    return old


def _move_aside(folder: Path) -> Path | None:
    """Rename ``folder`` (if there) to ``.old-<name>-XXXXXXXX`` beside it; return the new path."""
    if not folder.exists():
        return None
    old = Path(tempfile.mkdtemp(prefix=f".old-{folder.name}-", dir=folder.parent))
    old.rmdir()
    folder.rename(old)
    return old


def _swap_back(swapped: list[tuple[Path, Path | None]]) -> None:
    """Undo ``_swap_in``: each folder it replaced goes back; one it created goes."""
    for final, old in swapped:
        replaced = _replace_dir(old, final) if old is not None else final
        if replaced is not None:
            remove_tree(replaced, ignore_errors=True)


def _remove_all(folders: list[Path]) -> None:
    for folder in folders:
        remove_tree(folder, ignore_errors=True)


def _copy_tree(src: Path, dest: Path, merge: bool = False) -> None:
    """Copy a folder without following links that leave it and without VCS/cache folders."""
    base = src.resolve()

    def ignore(folder: str, names: list[str]) -> builtins.list[str]:
        skipped = []
        for entry in names:
            path = Path(folder) / entry
            if entry in {".git", "__pycache__", "node_modules"} or (
                path.is_symlink() and not path.resolve().is_relative_to(base)
            ):
                skipped.append(entry)
        return skipped

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=merge, symlinks=False)


def _checked_env(value: Any) -> dict[str, str | None]:
    """An admin's ``env``: names to string values (``null`` removes the admin's value)."""
    if not isinstance(value, dict) or not value:
        raise BoltError(errors.BAD_REQUEST, "'env' must be an object of declared names to strings (null removes one)")
    for key, item in value.items():
        if item is not None and (not isinstance(item, str) or "\x00" in item or len(item) > 4096):
            problem = f"The value of env {key[:40]!r} must be a string (4096 characters at most)"
            raise BoltError(errors.BAD_REQUEST, problem)
    return dict(value)


def _checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "limits":
            try:
                checked["adminLimits"] = check_limits(value, allow_null=True)
            except LimitError as exc:
                raise BoltError(errors.BAD_REQUEST, f"'limits' {exc}") from exc
            continue
        if key == "instances":  # the range against the host's cap: the caller checks
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise BoltError(errors.BAD_REQUEST, "'instances' must be a whole number from 1 up, or null")
            checked["adminInstances"] = value
            continue
        if key in {"system", "controlledVisibility", "isolation"}:
            if not isinstance(value, bool):
                raise BoltError(errors.BAD_REQUEST, f"'{key}' must be true or false")
        elif key == "order":
            if not isinstance(value, int) or isinstance(value, bool):
                raise BoltError(errors.BAD_REQUEST, "'order' must be an integer")
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise BoltError(errors.BAD_REQUEST, "'tags' must be a list of strings")
        elif not isinstance(value, str):
            raise BoltError(errors.BAD_REQUEST, f"'{key}' must be a string")
        checked[key] = value
    return checked


def _matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, list):
        return wanted in [str(a) for a in actual]
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    if isinstance(actual, dict):
        return False
    return str(actual) == wanted


__all__ = ["Apps", "validate_app_name"]
