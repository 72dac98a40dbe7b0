"""Download, install and uninstall tasks of the robot App Store, on the host's Tasks service.

Each ``queue_*`` function takes the module names of one request and returns
``(queued, skipped)``: ``queued`` maps a module to ``{"task_id", "version"}``,
``skipped`` maps a module to the reason it was not queued (the seed's messages).
A module that already has an active task of the same kind gets that task back,
so concurrent requests never make two tasks for one module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bolt_host.plugin import TaskCancelled, TaskHandle, app_name_for, compare_versions, is_firmware, max_version

from .state import Robot, sha512_file

Outcome = tuple[dict[str, dict[str, Any]], dict[str, Any]]
DOWNLOAD_SHARE = 0.95  # of a download task's progress; the checksum is the rest


class JobError(Exception):
    """A task step failed; the message becomes the task's error and install_failed_reason."""


def invalid(name: Any) -> str:
    return f"invalid module {name}, skip..."


def unique_names(packages: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for name in packages:
        if name not in seen:
            seen.append(name)
    return seen


def _queued(record: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": record["id"], "version": record["version"]}


# ---------------------------------------------------------------- download


def queue_downloads(robot: Robot, packages: Iterable[Any]) -> Outcome:
    queued: dict[str, dict[str, Any]] = {}
    skipped: dict[str, Any] = {}
    for name in unique_names(packages):
        found = robot.host.catalog.find(name) if isinstance(name, str) and name else None
        if found is None or is_firmware(found[0]):
            skipped[str(name)] = invalid(name)
            continue
        latest = found[0]["version"]
        app = robot.installed_app(name)
        if app is not None and compare_versions(app["version"], latest) >= 0:
            skipped[name] = f"installed version({app['version']}) is already up to date"
            continue
        record = robot.host.tasks.submit(
            "download", name, latest, download_job(robot, name, latest),
            dedupe_key=f"robot:download:{name}", meta={"backend": "robot", "source": found[1].name},
        )
        queued[name] = _queued(record)
    return queued, skipped


async def fetch_package(
    robot: Robot, task: TaskHandle, name: str, version: str, share: float
) -> tuple[Path, dict[str, Any]]:
    """Fetch ``name@version`` through the catalog, the download counting for ``share`` of the progress;
    cancellable while it streams."""

    def progress(received: int, total: int | None) -> None:
        task.check_cancelled()
        if total:
            task.progress(share * min(received / total, 1.0))

    try:
        return await robot.host.catalog.fetch(name, version, progress=progress)
    except TaskCancelled:
        raise
    except Exception as exc:
        raise JobError(f"download of {name}:{version} failed: {getattr(exc, 'message', None) or exc}") from exc


def download_job(robot: Robot, name: str, version: str):
    async def run(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== downloading {name}:{version}")
        path, source = await fetch_package(robot, task, name, version, DOWNLOAD_SHARE)
        task.log(f"=== fetched from {source.get('type')}")
        task.log("=== checking checksum")
        digest = await asyncio.to_thread(sha512_file, path)
        task.log(f"sha512 {digest}")
        robot.downloads.record(name, version, path, digest, source)
        task.log(f"=== {name}:{version} downloaded")
        return {"path": str(path), "sha512": digest}

    return run


# ---------------------------------------------------------------- install


def queue_installs(robot: Robot, packages: Iterable[Any]) -> Outcome:
    queued: dict[str, dict[str, Any]] = {}
    skipped: dict[str, Any] = {}
    for name in unique_names(packages):
        reason, version = _install_precondition(robot, name)
        if reason is not None:
            skipped[str(name)] = {"error": reason}
            continue
        record = robot.host.tasks.submit(
            "install", name, version, install_job(robot, name, version),
            dedupe_key=f"robot:install:{name}", meta={"backend": "robot"},
        )
        queued[name] = _queued(record)
    return queued, skipped


def _install_precondition(robot: Robot, name: Any) -> tuple[str | None, str]:
    if not isinstance(name, str) or not name:
        return invalid(name), ""
    app = robot.installed_app(name)
    version = max_version(robot.downloads.versions(name))
    if version is None:
        if app is None and robot.host.catalog.find(name) is None:
            return invalid(name), ""
        return f"module {name} has no downloaded version, download it first, skip...", ""
    if app is not None:
        order = compare_versions(app["version"], version)
        if order > 0:
            return f"installed version({app['version']}) is higher than downloaded version({version}), skip...", ""
        if order == 0:
            return f"installed version({app['version']}) is already up to date, skip...", ""
    return None, version


def install_job(robot: Robot, name: str, version: str):
    async def run(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== installing {name}:{version}")
        download = robot.downloads.get(name, version)
        if download is None:
            raise JobError(f"the downloaded package {name}:{version} is gone from the cache; download it again")
        task.log("=== checking checksum")
        digest = await asyncio.to_thread(sha512_file, Path(download["path"]))
        if digest != download["sha512"]:
            raise JobError(f"checksum mismatch: {name}:{version} changed after it was downloaded; download it again")
        task.progress(0.2)
        task.check_cancelled()
        return await install_package(robot, task, name, Path(download["path"]), download["source"], version)

    return run


async def install_package(
    robot: Robot, task: TaskHandle, name: str, path: Path, source: dict[str, Any], version: str | None
) -> dict[str, Any]:
    """Extract and install (upgrading, restarting a running app) through ``host.apps``."""
    apps = robot.host.apps
    app_name = app_name_for(name)
    running = robot.host.supervisor.is_active(app_name)
    task.log("=== extract")
    task.progress(0.3)
    try:
        app = await apps.install_tarball(path, source, upgrade=True, expect_name=name)
    except Exception as exc:
        raise JobError(getattr(exc, "message", None) or str(exc)) from exc
    task.progress(0.9)
    record_installed(robot, task, name, app, running)
    return {"name": app["name"], "version": app["version"]}


def record_installed(robot: Robot, task: TaskHandle, name: str, app: dict[str, Any], was_running: bool) -> None:
    """The robot's bookkeeping once ``name`` is installed: older downloads forgotten, the log told."""
    if was_running:
        task.log(f"=== {app['name']} was running: restarted with version {app['version']}")
    robot.downloads.forget_up_to(name, app["version"])
    task.log(f"=== {name}:{app['version']} installed")


# ---------------------------------------------------------------- uninstall


def queue_uninstalls(robot: Robot, packages: Iterable[Any]) -> Outcome:
    queued: dict[str, dict[str, Any]] = {}
    skipped: dict[str, Any] = {}
    for name in unique_names(packages):
        app = robot.installed_app(name) if isinstance(name, str) and name else None
        if app is None:
            skipped[str(name)] = f"module {name} is not installed, skip..."
            continue
        record = robot.host.tasks.submit(
            "uninstall", name, app["version"], uninstall_job(robot, name, app["name"]),
            dedupe_key=f"robot:uninstall:{name}", meta={"backend": "robot"},
        )
        queued[name] = _queued(record)
    return queued, skipped


def uninstall_job(robot: Robot, name: str, app_name: str):
    async def run(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== uninstalling {name}:{task.version}")
        if robot.host.apps.get(app_name) is None:
            raise JobError(f"module {name} is no longer installed")
        if robot.host.supervisor.is_active(app_name):
            task.log(f"=== stopping {app_name}")
        task.progress(0.2)
        try:
            await robot.host.apps.delete(app_name, delete_source=True, delete_public=True)
        except Exception as exc:
            raise JobError(getattr(exc, "message", None) or str(exc)) from exc
        task.log(f"=== {name} removed (its data in /api/db is kept)")
        return {"name": app_name}

    return run
