"""Install a package (a tarball or an app folder) as a Task: queued, logged, with progress.

Store backends call this instead of extracting and installing themselves, so every
install goes through the same safe extraction, manifest checks, atomic swap and
``app-installed`` event as the core's own.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bolt_host.services.tasks import TaskHandle

if TYPE_CHECKING:
    from bolt_host.services.apps import Apps
    from bolt_host.services.tasks import Tasks

Before = Callable[[TaskHandle], Awaitable[None]]
After = Callable[[TaskHandle, dict[str, Any]], Awaitable[None]]


def install_job(
    apps: Apps,
    package: Path,
    source: dict[str, Any],
    *,
    upgrade: bool = True,
    expect_name: str | None = None,
    system: bool | None = None,
    before: Before | None = None,
    after: After | None = None,
    discard_package: bool = False,
) -> Callable[[TaskHandle], Awaitable[dict[str, Any]]]:
    """The task job that installs ``package`` (a ``.tgz``/``.tar`` file or an app folder)."""

    async def run(task: TaskHandle) -> dict[str, Any]:
        try:
            if before is not None:
                await before(task)
            task.check_cancelled()
            task.progress(0.1)
            if package.is_dir():
                app = await apps.install_folder(package, source, system, upgrade)
            else:
                app = await apps.install_tarball(package, source, system, upgrade, expect_name=expect_name)
            if after is not None:
                await after(task, app)
            task.progress(1.0)
            task.log(f"installed {app['name']}@{app.get('version', '')}")
            return app
        finally:
            if discard_package:
                _discard(package)

    return run


def _discard(package: Path) -> None:
    if package.is_dir() and not package.is_symlink():
        shutil.rmtree(package, ignore_errors=True)
    else:
        package.unlink(missing_ok=True)


def submit_install(
    tasks: Tasks,
    apps: Apps,
    package: Path,
    source: dict[str, Any],
    *,
    name: str,
    version: str | None,
    kind: str = "install",
    upgrade: bool = True,
    expect_name: str | None = None,
    dedupe_key: str | None = None,
    meta: dict[str, Any] | None = None,
    before: Before | None = None,
    after: After | None = None,
    discard_package: bool = False,
) -> dict[str, Any]:
    """Queue the install of ``package`` as a ``kind`` task; its record (follow it with ``tasks.wait``)."""
    job = install_job(apps, package, source, upgrade=upgrade, expect_name=expect_name, before=before, after=after,
                      discard_package=discard_package)
    return tasks.submit(kind, name, version, job, dedupe_key=dedupe_key, meta=meta)
