"""Every route of the robot App Store API, each handler named ``"routes:function"``
(:func:`lazy_endpoint`): the handlers' module, with the jobs, firmware, package-list and upload
modules behind it, is imported at the first request, not when the host starts."""

from __future__ import annotations

from starlette.routing import Route

from bolt_host.plugin import lazy_endpoint

PREFIX = "/app_store"
UPLOAD_PATH = f"{PREFIX}/services/upload_local_file"
JOBS = f"{PREFIX}/jobs/{{group}}/tasks"

# (path, handler in routes.py, methods); in the order the routes are matched
TABLE: list[tuple[str, str, list[str]]] = [
    (f"{PREFIX}/packages", "get_packages", ["GET"]),
    (f"{PREFIX}/services/refresh_store", "refresh_store", ["POST"]),
    (f"{PREFIX}/services/download_packages", "download_packages", ["POST"]),
    (f"{PREFIX}/services/install_packages", "install_packages", ["POST"]),
    (f"{PREFIX}/services/install_local_file", "install_local", ["POST"]),
    (UPLOAD_PATH, "upload_local", ["POST"]),
    (f"{PREFIX}/services/uninstall_packages", "uninstall_packages", ["POST"]),
    (JOBS, "list_tasks", ["GET"]),
    (f"{JOBS}/{{task_id}}/log", "task_log", ["GET", "POST"]),
    (f"{JOBS}/{{task_id}}/cancel", "cancel_task", ["POST"]),
    (f"{PREFIX}/firmware/packages", "get_firmware", ["GET"]),
    (f"{PREFIX}/firmware/install_packages", "install_firmware", ["POST"]),
]


def routes() -> list[Route]:
    return [
        Route(path, lazy_endpoint(f"{__package__}.routes:{handler}"), methods=methods)
        for path, handler, methods in TABLE
    ]
