"""The `robot` store backend: the robot App Store API (``/app_store/...``) on bolt-host.

Registered through the `bolt_host` entry-point group like any third-party
plugin.  It uses only the Host's public services (``apps``, ``tasks``,
``catalog``, ``supervisor``, ``settings``) and answers in the robot's own
format.  See docs/robot.md.

Modules: ``routes`` (HTTP and access), ``packages`` (package list and status),
``jobs`` (download/install/uninstall tasks), ``firmware`` (flash tasks),
``uploads`` (staging folder), ``state`` (downloads and flashed versions).
"""

from __future__ import annotations

import shutil
from typing import Any

from bolt_host import hookimpl

__version__ = "0.2.0"


@hookimpl
def register_routes(host: Any) -> list[Any]:
    from .routes import routes

    return routes()


@hookimpl
def register_permissions(host: Any) -> list[tuple[str, str]]:
    return [("/app_store/", "admin")]  # or the robot's Secret header, when BOLT_ROBOT_SECRET is set


@hookimpl
def startup(host: Any) -> None:
    from .routes import UPLOAD_PATH
    from .state import Robot
    from .uploads import clean_partial_uploads

    robot = Robot.create(host)
    host.state["robot"] = robot
    if UPLOAD_PATH not in host.large_body_prefixes:
        host.large_body_prefixes.append(UPLOAD_PATH)
    robot.uploads_dir.mkdir(parents=True, exist_ok=True)
    clean_partial_uploads(robot.uploads_dir)
    shutil.rmtree(robot.staging_dir, ignore_errors=True)
    shutil.rmtree(robot.local_copies_dir, ignore_errors=True)
