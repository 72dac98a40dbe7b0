"""The package list of the robot App Store: one ``Package`` object per module, with its status.

A module's status is derived, in this order, from

1. an active (queued or running) uninstall, install or download task of the
   module: ``uninstall_queueing``/``uninstalling``, ``install_queueing``/
   ``installing``, ``download_queueing``/``downloading``;
2. the module's most recent finished task, if it failed: ``uninstall_failed``,
   ``install_failed`` (with ``install_failed_reason``), ``download_failed``;
3. otherwise the versions: a downloaded version above the installed one is
   ``downloaded``; an installed app is ``up_to_date`` when its version is at
   least the catalog's latest, else ``upgradable``; the rest ``not_installed``.

``downloaded_versions`` lists only downloads above the installed version: an
install done another way (the Bolt API, another backend) makes older downloads
stale, and they no longer show.

Firmware modules have their own list (``/app_store/firmware/packages``), with
the current version taken from the last successful flash; a flashed module
stays listed after it has left the catalog.
"""

from __future__ import annotations

from typing import Any

from bolt_host.plugin import compare_versions, is_firmware

from .state import Robot

APP_KINDS = ("download", "install", "uninstall")
ACTIVE = ("queued", "running")


def list_packages(robot: Robot, with_install: bool = False) -> list[dict[str, Any]]:
    """Every non-firmware module the catalog knows plus every installed app, by name;
    ``with_install`` adds each catalog module's ``install`` preview (see :func:`install_view`)."""
    entries = {e["name"]: e for e in robot.host.catalog.entries() if not is_firmware(e)}
    apps = {app.get("package") or app["name"]: app for app in robot.host.apps.list() if not app.get("firmware")}
    tasks: dict[str, list[dict[str, Any]]] = {}
    for task in robot.host.tasks.list():
        if task["kind"] in APP_KINDS:
            tasks.setdefault(task["module"], []).append(task)
    return [
        _with_install(package_view(robot, name, entries.get(name), apps.get(name), tasks.get(name, [])),
                      entries.get(name) if with_install else None)
        for name in sorted(set(entries) | set(apps))
    ]


def list_firmware(robot: Robot) -> list[dict[str, Any]]:
    """Every firmware module of the catalog plus every one flashed before, by name."""
    entries = {e["name"]: e for e in robot.host.catalog.entries() if is_firmware(e)}
    names = sorted(set(entries) | set(robot.firmware.names()))
    return [firmware_view(robot, name, entries.get(name)) for name in names]


def package_view(
    robot: Robot,
    name: str,
    entry: dict[str, Any] | None,
    app: dict[str, Any] | None,
    tasks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``Package`` object of one module; ``tasks`` are its app tasks, newest first."""
    current = app["version"] if app else ""
    latest = entry["version"] if entry else current
    view: dict[str, Any] = {"name": name, "latest_version": latest, "current_version": current}
    active = {kind: _first(tasks, kind, ACTIVE) for kind in APP_KINDS}
    downloaded = [v for v in robot.downloads.versions(name) if app is None or compare_versions(v, current) > 0]
    if downloaded:
        view["downloaded_versions"] = downloaded
    _add_task_fields(view, active)
    view["status"] = _active_status(active) or _failed_status(view, tasks) or _base_status(
        current, latest, downloaded, app is not None
    )
    optional = _optional(entry, app)
    if optional is not None:
        view["optional"] = optional
    return _ordered(view)


def _with_install(view: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
    """``view`` plus ``install`` (last, after the seed's fields) when ``entry`` has a preview."""
    if entry is not None and isinstance(entry.get("install"), dict):
        view["install"] = install_view(entry["install"])
    return view


def install_view(preview: dict[str, Any]) -> dict[str, Any]:
    """The host's install preview in the robot's snake_case: how the latest version would
    start (``serverless`` when there is nothing to run), its npm dependency count, whether
    it asks to run install scripts, and why it could not be installed."""
    return {
        "start_from": preview.get("startFrom"),
        "start_command": preview.get("startCommand"),
        "serverless": preview.get("serverless"),
        "dependencies": preview.get("dependencies"),
        "install_scripts": preview.get("installScripts"),
        "problem": preview.get("problem"),
    }


def firmware_view(robot: Robot, name: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    """The ``Package`` object of one firmware module (``entry`` is None once it left the catalog)."""
    current = robot.firmware.version(name) or ""
    latest = entry["version"] if entry else current
    view: dict[str, Any] = {"name": name, "latest_version": latest, "current_version": current}
    tasks = robot.host.tasks.list(module=name, kind="firmware")
    task = _first(tasks, "firmware", ACTIVE)
    if task is not None:
        view["status"] = "install_queueing" if task["status"] == "queued" else "installing"
        view.update(installing_version=task["version"], installing_progress=task["progress"])
        view["install_task_id"] = task["id"]
    elif tasks and tasks[0]["status"] == "failed":
        view.update(status="install_failed", install_task_id=tasks[0]["id"])
        view["install_failed_reason"] = tasks[0]["error"] or "failed"
    else:
        view["status"] = _base_status(current, latest, [], bool(current))
    return _ordered(view)


def _first(tasks: list[dict[str, Any]], kind: str, statuses: tuple[str, ...]) -> dict[str, Any] | None:
    return next((t for t in tasks if t["kind"] == kind and t["status"] in statuses), None)


def _add_task_fields(view: dict[str, Any], active: dict[str, dict[str, Any] | None]) -> None:
    if download := active["download"]:
        view.update(
            downloading_version=download["version"],
            downloading_progress=download["progress"],
            download_task_id=download["id"],
        )
    if install := active["install"]:
        view.update(
            installing_version=install["version"],
            installing_progress=install["progress"],
            install_task_id=install["id"],
        )
    if uninstall := active["uninstall"]:
        view["uninstall_task_id"] = uninstall["id"]


def _active_status(active: dict[str, dict[str, Any] | None]) -> str | None:
    for kind, queued, running in (
        ("uninstall", "uninstall_queueing", "uninstalling"),
        ("install", "install_queueing", "installing"),
        ("download", "download_queueing", "downloading"),
    ):
        task = active[kind]
        if task is not None:
            return queued if task["status"] == "queued" else running
    return None


def _failed_status(view: dict[str, Any], tasks: list[dict[str, Any]]) -> str | None:
    latest = next((t for t in tasks if t["status"] not in ACTIVE), None)
    if latest is None or latest["status"] != "failed":
        return None
    if latest["kind"] == "download":
        view.setdefault("download_task_id", latest["id"])
        return "download_failed"
    if latest["kind"] == "install":
        view.setdefault("install_task_id", latest["id"])
        view["install_failed_reason"] = latest["error"] or "failed"
        return "install_failed"
    view.setdefault("uninstall_task_id", latest["id"])
    return "uninstall_failed"


def _base_status(current: str, latest: str, downloaded: list[str], installed: bool) -> str:
    if downloaded:  # only versions above the installed one
        return "downloaded"
    if not installed:
        return "not_installed"
    return "up_to_date" if compare_versions(current, latest) >= 0 else "upgradable"


def _optional(entry: dict[str, Any] | None, app: dict[str, Any] | None) -> bool | None:
    """``bolt.optional`` from the manifest if it says; system apps are not optional."""
    bolt = (entry or {}).get("bolt") or {}
    if isinstance(bolt.get("optional"), bool):
        return bolt["optional"]
    if (app and app.get("system")) or bolt.get("system"):
        return False
    return None


_ORDER = (
    "name",
    "latest_version",
    "current_version",
    "status",
    "downloaded_versions",
    "downloading_version",
    "downloading_progress",
    "download_task_id",
    "installing_version",
    "installing_progress",
    "install_task_id",
    "install_failed_reason",
    "uninstall_task_id",
    "optional",
)


def _ordered(view: dict[str, Any]) -> dict[str, Any]:
    return {key: view[key] for key in _ORDER if key in view}
