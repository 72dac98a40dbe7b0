"""Bolt's apps API: list, install (registry, local), preview, update, delete."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.app_installs import optional_version, registry_call
from bolt_host.services.instances import instances_problem
from bolt_host.services.limits import LimitError, check_limits
from bolt_host.services.manifest import app_name_for, install_preview, without_folder
from bolt_host.services.readme_html import render_readme
from bolt_host.web.auth import (
    host_of,
    refuse_non_system_app,
    require_admin,
    require_caller,
    require_installer,
    require_user,
)
from bolt_host.web.envelope import flag, ok, read_body

INSTALL_FIELDS = {"name", "version", "system", "upgrade", "installScripts"}
LOCAL_FIELDS = {"path", "system", "upgrade", "installScripts"}
UPLOAD_FIELDS = {"filename", "system", "upgrade", "installScripts"}
UPLOAD_PATH = "/api/apps/upload"  # also in Host.large_body_prefixes: its body may be up to max_upload_bytes
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+@-]")


def _optional_system(body: dict[str, Any]) -> bool | None:
    return flag(body, "system") if "system" in body else None


def with_install_preview(manifest: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """The package.json plus ``_install``: how bolt-host will start it, its dependency count,
    whether it asks to run install scripts (see docs/manifest.md)."""
    return {**manifest, "_install": install_preview(manifest, folder)}


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise BoltError(errors.BAD_REQUEST, f"Unknown fields: {', '.join(sorted(unknown))}")


def _preview(host: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """A package's facts plus ``_isolation``: how it would run here (mode, limits, mechanisms)."""
    if host.isolation is None:
        return {**manifest, "_isolation": {"mode": "off"}}
    bolt = manifest.get("bolt")
    bolt = bolt if isinstance(bolt, dict) else {}
    try:
        app = {"name": app_name_for(manifest.get("name")), "limits": check_limits(bolt.get("limits") or {})}
    except (BoltError, LimitError):
        return manifest  # the install itself will name what is wrong
    described = host.isolation.describe(app)
    return {**manifest, "_isolation": {key: described[key] for key in ("mode", "limits", "mechanisms")}}


def _registry_target(body: dict[str, Any]) -> tuple[str, str | None]:
    """The package name and version a registry preview asks about, both checked."""
    name = body.get("name")
    app_name_for(name)  # raises unless it is a valid package name
    return str(name), optional_version(body.get("version"))


async def list_apps(request: Request) -> Response:
    """Installed apps matching the query criteria (``?tags=demo&system=false``)."""
    who = await require_user(request, "apps.read")
    host = host_of(request)
    found = [_with_last_exit(host, app) for app in host.apps.list(dict(request.query_params))]
    return ok(found if who.is_admin else [without_folder(app) for app in found])


async def get_app(request: Request) -> Response:
    """One installed app, its name in any case (403 when not installed)."""
    who = await require_user(request, "apps.read")
    host = host_of(request)
    app = _with_last_exit(host, host.apps.require(request.path_params["name"]))
    if host.isolation is not None:
        app["confinement"] = host.isolation.describe(app)
    app["adminEnv"] = host.admin_env.names(app["name"])  # names only: values may be secrets
    if not who.is_admin:
        app.get("confinement", {}).pop("dataFolder", None)  # a host path, as without_folder drops
    return ok(app if who.is_admin else without_folder(app))


def _with_last_exit(host: Any, app: dict[str, Any]) -> dict[str, Any]:
    """The app with how its process last ended on its own (``lastExit``, ``errored``), if it did."""
    context = host.supervisor.context(app["name"])
    if not context or not context.get("lastExit"):
        return app
    return {**app, "lastExit": context["lastExit"], "errored": context["errored"]}


async def install(request: Request) -> Response:
    """Install from the configured registry: ``{name, version?, system?, upgrade?}``."""
    refuse_non_system_app(request)
    require_caller(request)
    body = await read_body(request)
    await require_installer(request, "apps.install", body.get("name"))
    _check_fields(body, INSTALL_FIELDS)
    app = await host_of(request).apps.install_registry(
        body.get("name"),
        body.get("version"),
        _optional_system(body),
        flag(body, "upgrade"),
        run_scripts=flag(body, "installScripts"),
    )
    return ok(app, status=201)


async def registry_package(request: Request) -> Response:
    """A registry package's package.json (``{name, version?}``), to preview before installing."""
    await require_admin(request, "apps.preview")
    body = await read_body(request)
    name, version = _registry_target(body)
    registry = host_of(request).apps.require_registry()
    meta = await registry_call(registry.manifest(name, version), errors.REGISTRY_PACKAGE_FAILED)
    package = with_install_preview({k: v for k, v in meta.items() if k not in {"readme", "_npmUser"}}, None)
    return ok(_preview(host_of(request), package))


async def registry_readme(request: Request) -> Response:
    """A registry package's README (markdown), to preview before installing."""
    await require_admin(request, "apps.preview")
    body = await read_body(request)
    name, version = _registry_target(body)
    registry = host_of(request).apps.require_registry()
    return ok(_readme_as(body, await registry_call(registry.readme(name, version), errors.REGISTRY_README_FAILED)))


async def install_local(request: Request) -> Response:
    """Install from the local repository: ``{path, system?, upgrade?}`` (path relative to it)."""
    refuse_non_system_app(request)
    require_caller(request)
    body = await read_body(request)
    await require_installer(request, "apps.install", body.get("path"))
    _check_fields(body, LOCAL_FIELDS)
    app = await host_of(request).apps.install_local(
        body.get("path"), _optional_system(body), flag(body, "upgrade"), run_scripts=flag(body, "installScripts")
    )
    return ok(app, status=201)


async def install_upload(request: Request) -> Response:
    """Install a package tarball sent as the raw body: ``?filename=&system=&upgrade=`` (201, the app)."""
    await require_installer(request, "apps.install")
    options = dict(request.query_params)
    _check_fields(options, UPLOAD_FIELDS)
    if request.headers.get("content-type", "").startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise BoltError(errors.BAD_REQUEST, "Send the package tarball as the raw body (Content-Type: application/gzip)")
    name = _UNSAFE_NAME.sub("_", PurePosixPath(options.get("filename") or "").name)[:200] or "upload.tgz"
    app = await host_of(request).apps.install_upload(
        request.stream(),
        name,
        _optional_system(options),
        flag(options, "upgrade"),
        run_scripts=flag(options, "installScripts"),
    )
    return ok(app, status=201)


install_upload.openapi = {  # type: ignore[attr-defined]
    "requestBody": {
        "required": True,
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    },
    "parameters": [
        {"name": key, "in": "query", "required": False, "schema": {"type": "string"}} for key in sorted(UPLOAD_FIELDS)
    ],
}


async def local_package(request: Request) -> Response:
    """A local app's package.json: ``{path}``."""
    await require_admin(request, "apps.preview")
    body = await read_body(request)
    host = host_of(request)
    path = body.get("path")
    package = with_install_preview(host.apps.local_package(path), host.apps.local_folder(path))
    return ok(_preview(host, package))


async def local_readme(request: Request) -> Response:
    """A local app's README.md: ``{path}``."""
    await require_admin(request, "apps.preview")
    body = await read_body(request)
    return ok(_readme_as(body, host_of(request).apps.local_readme(body.get("path"))))


def _readme_as(body: dict[str, Any], markdown: str) -> str:
    """The README as asked: markdown as Bolt served it, or ``"format": "html"`` rendered and sanitized."""
    wanted = body.get("format", "markdown")
    if wanted == "html":
        return render_readme(markdown)
    if wanted != "markdown":
        raise BoltError(errors.BAD_REQUEST, "'format' must be \"markdown\" or \"html\"")
    return markdown


async def local_catalog(request: Request) -> Response:
    """Every app folder in the local repository, with its package.json."""
    await require_admin(request, "apps.preview")
    return ok(host_of(request).apps.local_catalog())


async def update_app(request: Request) -> Response:
    """Change ``displayName, description, order, system, tags, controlledVisibility``, and the
    admin's ``isolation`` (false: run as the host's user), ``limits`` (over the manifest's) and
    ``instances`` (over the manifest's; a running app is scaled to it at once)."""
    name = request.path_params["name"]
    await require_installer(request, "apps.update", name)
    body = await read_body(request)
    if not body:
        raise BoltError(errors.BAD_REQUEST, "Nothing to change")
    host = host_of(request)
    if "instances" in body:
        _check_instances(host.apps.require(name), body["instances"], host.settings.max_instances)
    app = await host.apps.update(name, body)
    if "instances" in body:
        await host.supervisor.scale(app)
    return ok(app)


def _check_instances(app: dict[str, Any], value: Any, cap: int) -> None:
    problem = instances_problem(value, cap)
    if problem is None and value not in (None, 1) and app.get("server") is False:
        problem = "is for server apps only (this app has no server to balance over)"
    if problem is not None:
        raise BoltError(errors.BAD_REQUEST, f"'instances' {problem}")


def _delete_flags(body: dict[str, Any]) -> dict[str, bool]:
    return {
        "delete_database": flag(body, "deleteDatabase"),
        "delete_public": flag(body, "deletePublicFolder"),
        "delete_source": flag(body, "deleteSourceFolder"),
    }


async def delete_app(request: Request) -> Response:
    """Delete one app; body flags ``deleteDatabase, deletePublicFolder, deleteSourceFolder``."""
    name = request.path_params["name"]
    await require_installer(request, "apps.delete", name)
    body = await read_body(request)
    host = host_of(request)
    flags = _delete_flags(body)
    return ok(await host.apps.delete(name, **flags))


async def delete_apps(request: Request) -> Response:
    """Delete every app matching the query criteria (120 without criteria)."""
    await require_installer(request, "apps.delete")
    criteria = dict(request.query_params)
    if not criteria:
        raise BoltError(errors.BULK_DELETE_CRITERIA)
    body = await read_body(request)
    flags = _delete_flags(body)
    host = host_of(request)
    deleted = []
    for app in host.apps.list(criteria):
        deleted.append(await host.apps.delete(app["name"], **flags))
    return ok(deleted)


routes = [
    Route("/api/apps", list_apps, methods=["GET"]),
    Route("/api/apps", install, methods=["POST"]),
    Route("/api/apps", delete_apps, methods=["DELETE"]),
    Route("/api/apps/package", registry_package, methods=["POST"]),
    Route("/api/apps/readme", registry_readme, methods=["POST"]),
    Route("/api/apps/local", install_local, methods=["POST"]),
    Route(UPLOAD_PATH, install_upload, methods=["POST"]),
    Route("/api/apps/local", local_catalog, methods=["GET"]),
    Route("/api/apps/local-package", local_package, methods=["POST"]),
    Route("/api/apps/local-readme", local_readme, methods=["POST"]),
]

# After the fixed paths, so "@live", "local" and friends are not taken for app names.
item_routes = [
    Route("/api/apps/{name}", get_app, methods=["GET"]),
    Route("/api/apps/{name}", update_app, methods=["PUT"]),
    Route("/api/apps/{name}", delete_app, methods=["DELETE"]),
]
