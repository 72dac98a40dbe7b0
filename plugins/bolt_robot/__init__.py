"""The `robot` store backend: the robot App Store API (``/app_store/...``) on bolt-host.

Registered through the `bolt_host` entry-point group like any third-party
plugin (the host registers its :data:`plugin`).  It imports only
``bolt_host.plugin`` and answers in the robot's own format.  See docs/robot.md.

Modules: ``route_table`` (every path; the handlers load at the first request), ``routes``
(HTTP and access), ``packages`` (package list and status),
``jobs`` (download/install/uninstall tasks), ``firmware`` (flash tasks),
``uploads`` (staging folder), ``state`` (downloads and flashed versions).
"""

from __future__ import annotations

import shutil
from typing import Any

from bolt_host.plugin import Host, clean_partial_uploads, hookimpl

__version__ = "0.2.0"


class RobotPlugin:
    """The backend's hooks; its per-host state lives in ``host.state["robot"]``."""

    @hookimpl
    def register_routes(self, host: Host) -> list[Any]:
        from .route_table import routes

        return routes()

    @hookimpl
    def register_upload_paths(self, host: Host) -> list[str]:
        from .route_table import UPLOAD_PATH

        return [UPLOAD_PATH]

    @hookimpl
    def startup(self, host: Host) -> None:
        from .state import Robot

        robot = Robot.create(host)
        host.state["robot"] = robot
        robot.uploads_dir.mkdir(parents=True, exist_ok=True)
        clean_partial_uploads(robot.uploads_dir)
        shutil.rmtree(robot.staging_dir, ignore_errors=True)
        shutil.rmtree(robot.local_copies_dir, ignore_errors=True)


plugin = RobotPlugin()
