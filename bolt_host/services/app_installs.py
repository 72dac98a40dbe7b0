"""Installs of apps: from a folder, a tarball, an upload or a registry; upgrades that roll back.

Every install stages the new tree next to its final place, validates it, installs its
dependencies there, then swaps it in with renames; any failure leaves the previous version
(files, record, running process) as it was.  :class:`AppInstalls` is the part of the apps
service (:class:`~bolt_host.services.apps.Apps`) that does this; the records it writes are
the apps table's (:mod:`app_records`), the folders it moves :mod:`app_folders`'.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Query

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.app_folders import copy_tree, remove_all, replace_dir, staging_dir, swap_back
from bolt_host.services.app_records import TABLE
from bolt_host.services.dependencies import DependencySteps
from bolt_host.services.integrity import with_app_hash
from bolt_host.services.manifest import (
    KEPT_ON_UPGRADE,
    app_name_for,
    build_app,
    inside,
    read_manifest,
    without_folder,
)
from bolt_host.services.rollover import SwitchFailed
from bolt_host.services.trees import remove_tree
from bolt_host.services.users import now_iso

if TYPE_CHECKING:
    from bolt_host.services.registry import RegistryClient
    from bolt_host.services.sandbox import Isolation
    from bolt_host.services.supervisor import Supervisor
    from bolt_host.storage import Database

log = logging.getLogger("bolt_host.apps")

Publish = Callable[[str, Any], Awaitable[Any]]


class AppInstalls:
    """Install, upgrade and roll back; mixed into :class:`~bolt_host.services.apps.Apps`,
    whose records, locks and collaborators (set by the Host) these are."""

    _db: Database
    _publish: Publish
    apps_dir: Path
    public_dir: Path
    dependencies: DependencySteps
    supervisor: Supervisor | None
    registry: RegistryClient | None
    isolation: Isolation | None

    def get(self, name: Any) -> dict[str, Any] | None:
        raise NotImplementedError  # the apps table's read, in Apps

    def lock_for(self, name: str) -> asyncio.Lock:
        raise NotImplementedError  # one lock per app name, in Apps

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
        staging = staging_dir(self.apps_dir)
        try:
            root = staging / "package"
            await asyncio.to_thread(copy_tree, folder, root)
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

        staging = staging_dir(self.apps_dir)
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
        staging = staging_dir(self.apps_dir)
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

        An upgrade of a running app restarts it on the new version; when that does not become
        ready the previous folder and record are put back and the previous version restarted.
        """
        manifest = read_manifest(root)
        if expect_name is not None and manifest.get("name") != expect_name:
            raise BoltError(
                errors.REGISTRY_PACKAGE_FAILED,
                f"The package names itself {manifest.get('name')!r}, expected {expect_name!r}",
            )
        _check_registry_version(manifest, source)
        name = build_app(manifest, self.apps_dir / "pending", source, system, now_iso(), root=root)["name"]
        installed = self.get(name)
        if installed and not upgrade:  # before spending minutes on dependencies
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
                previous=installed,
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
        if not restart:
            await self._prepare_confinement(app)
        try:
            if restart:
                assert previous is not None
                await self._restart_or_roll_back(app, previous, swapped)
        finally:
            await asyncio.to_thread(remove_all, [old for _, old in swapped if old is not None])
        await self._publish(
            "app-updated" if previous else "app-installed",
            {"app": without_folder(app), "previousVersion": previous["version"] if previous else None},
        )
        return app

    async def _prepare_confinement(self, app: dict[str, Any]) -> None:
        """Make ready now what the app's first start would (its data folder, its code handed to its
        gid, its groups): that start then spawns on the event loop, with no worker thread."""
        if self.isolation is None:
            return
        try:
            await asyncio.to_thread(self.isolation.prepare, app)
        except (OSError, RuntimeError) as exc:  # its start tries again, and says why it cannot
            log.warning("%s: could not prepare its confinement at install: %s", app["name"], exc)

    def _install_identity(self, name: str, root: Path) -> dict[str, Any]:
        installed = self.get(name) or {}
        return {"name": name, "folder": str(root), "isolation": installed.get("isolation", True)}

    def _confined_install(
        self, name: str, root: Path
    ) -> Callable[[str], Awaitable[tuple[list[str], Path, bool]]] | None:
        """How the dependency step runs a tool as the app (its uid or sandbox), or None."""
        isolation = self.isolation
        if isolation is None:
            return None
        app = self._install_identity(name, root)
        isolation.assign(app)

        async def confine(tool: str) -> tuple[list[str], Path, bool]:
            return await asyncio.to_thread(isolation.install_prefix, app, root, tool)

        return confine

    def _swap_in(self, root: Path, app: dict[str, Any]) -> list[tuple[Path, Path | None]]:
        """Move the staged app (and its public files) into place: ``(final place, what it replaced,
        kept aside or None)`` for each, so a failed upgrade can put things back."""
        name = app["name"]
        public_stage = root.parent / "public"
        for entry in app["public"]:
            src = inside(root, entry, errors.LOCAL_PACKAGE_FAILED)
            if src.is_dir():
                copy_tree(src, public_stage, merge=True)
            elif src.is_file():
                public_stage.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, public_stage / src.name)
        swapped = [(self.apps_dir / name, replace_dir(root, self.apps_dir / name))]
        if public_stage.exists():
            swapped.append((self.public_dir / name, replace_dir(public_stage, self.public_dir / name)))
        return swapped

    async def _restart_or_roll_back(
        self, app: dict[str, Any], previous: dict[str, Any], swapped: list[tuple[Path, Path | None]]
    ) -> None:
        """Switch ``app`` to its new version with a rolling restart, one instance at a time (the
        previous version serves until the new one is ready); if an instance does not become ready,
        reinstate ``previous``: that instance's process serves on, and the instances already
        switched go back to it the same way, so the app serves throughout and ends on one version
        (apps with ``bolt.rolling: false``: restarted on it)."""
        name = app["name"]
        assert self.supervisor is not None  # an upgrade of a running app: supervision is up
        try:
            await self.supervisor.restart_app(app, rolling=True)
            return
        except SwitchFailed as exc:  # back: the switched instances, and the failed one if it is down
            failure, switched, kept = exc.message, exc.switched, exc.kept
            again = switched if kept else [*switched, exc.failed]
        except BoltError as exc:  # not from one instance's switch: every instance starts again
            failure, switched, kept, again = exc.message, None, False, None
        log.warning("%s %s did not start; rolling back to %s", name, app["version"], previous["version"])
        async with self.lock_for(name):
            await asyncio.to_thread(swap_back, swapped)
            with self._db.transaction():
                self._db.table(TABLE).upsert(previous, Query().name == name)
        swapped.clear()  # nothing left aside to remove
        try:
            if again is None:
                await self.supervisor.restart_app(previous)
            else:
                await self.supervisor.restart_app(previous, rolling=True, only=again)
            outcome = f"rolled back to {previous['version']}, which {'kept serving' if kept else 'is running again'}"
            if switched:
                outcome += f"; {_instances_phrase(switched)} went back to it one at a time"
        except BoltError as exc:
            outcome = f"rolled back to {previous['version']}, which did not start either: {exc.message}"
        raise BoltError(
            errors.APP_START_FAILED,
            f"The upgrade of {name} to {app['version']} did not start ({failure}); {outcome}",
            user_message=f"The new version of {name} did not start, so the previous one was put back.",
        )


def _instances_phrase(indexes: list[int]) -> str:
    """``instance 0`` or ``instances 0, 1``."""
    return ("instance " if len(indexes) == 1 else "instances ") + ", ".join(map(str, indexes))


def _check_registry_version(manifest: dict[str, Any], source: dict[str, Any]) -> None:
    """A registry tarball must be the version the registry listed it as (npm refuses a mismatch too)."""
    listed = source.get("version") if source.get("type") == "registry" else None
    if listed is not None and manifest.get("version") != listed:
        raise BoltError(
            errors.REGISTRY_PACKAGE_FAILED,
            f"Version mismatch: the registry lists {listed!r}, the package's package.json says "
            f"{manifest.get('version')!r}; refused",
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
