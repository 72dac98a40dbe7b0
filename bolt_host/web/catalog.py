"""The catalog over HTTP: what can be installed, merged from every package source."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.catalog import CatalogError
from bolt_host.services.readme_html import render_readme
from bolt_host.web.auth import host_of, require_admin
from bolt_host.web.envelope import ok


async def list_catalog(request: Request) -> Response:
    """Installable packages ``{entries, errors, sources, refreshedAt}`` (admin; ``?refresh=true`` re-lists)."""
    await require_admin(request, "catalog.read")
    catalog = host_of(request).catalog
    if request.query_params.get("refresh") == "true":
        await catalog.refresh()
    else:
        await catalog.ready(timeout=10)
    return ok(
        {
            "entries": catalog.entries(),
            "errors": catalog.errors(),
            "sources": [source.name for source in catalog.sources()],
            "refreshedAt": catalog.last_refresh,
        }
    )


async def catalog_package(request: Request) -> Response:
    """One catalog package: ``?name=&version=`` gives ``{entry, manifest, readme, readmeHtml}`` (admin; the
    readme may be null; ``readmeHtml`` is it rendered and sanitized for a page)."""
    await require_admin(request, "catalog.read")
    name = request.query_params.get("name")
    if not name:
        raise BoltError(errors.APP_NAME_MISSING)
    version = request.query_params.get("version") or None
    catalog = host_of(request).catalog
    try:
        entry, _ = catalog.source_for(name, version)
        manifest = await catalog.manifest(name, version)
    except CatalogError as exc:
        raise BoltError(errors.REGISTRY_PACKAGE_FAILED, str(exc)) from exc
    except BoltError:
        raise
    except Exception as exc:  # a source that fails to deliver is an upstream failure
        raise BoltError(errors.REGISTRY_PACKAGE_FAILED, getattr(exc, "message", None) or str(exc)) from exc
    try:
        readme: str | None = await catalog.readme(name, version)
    except Exception:  # no README is not an error for a preview
        readme = None
    manifest = {k: v for k, v in manifest.items() if k not in {"readme", "_npmUser"}}
    readme_html = render_readme(readme) if readme is not None else None
    return ok({"entry": entry, "manifest": manifest, "readme": readme, "readmeHtml": readme_html})


routes = [
    Route("/api/catalog", list_catalog, methods=["GET"]),
    Route("/api/catalog/package", catalog_package, methods=["GET"]),
]
