"""``bolt-host registry serve DIR``: a read-only npm-protocol registry of a folder of apps."""

from __future__ import annotations

from pathlib import Path

import click

from bolt_host.cli_errors import StartupError
from bolt_host.listener import ListenError, UnknownHost, bind_listener
from bolt_host.log_levels import configure_logging

DEFAULT_PORT = 4873  # npm registries' customary port (Verdaccio's)


@click.group("registry")
def registry() -> None:
    """A package source for hosts: serve a folder of app folders and tarballs as an npm registry."""


@registry.command("serve")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 for a fleet).")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to serve on.")
@click.option("--url", "public_url", default=None, help="Base URL written into tarball links (default: as requested).")
@click.option("--log-level", default="warning", show_default=True, help="Log level.")
def registry_serve(folder: Path, host: str, port: int, public_url: str | None, log_level: str) -> None:
    """Serve FOLDER read-only: each sub-folder with a package.json is a package (packed like
    `npm pack`), each *.tgz is served as it is; several versions of a name make one packument.
    New or changed entries are picked up on the next request.

    \b
    Examples:
      bolt-host registry serve node_modules_sample
      bolt-host serve --registry http://127.0.0.1:4873
      npm view hello-web --registry http://127.0.0.1:4873
    """
    import uvicorn

    from bolt_host.services.package_folder import PackageFolder
    from bolt_host.web.registry_app import create_registry_app

    if not folder.is_dir():
        raise StartupError(f"FOLDER {folder}: not a directory")
    if not 0 < port < 65536:
        raise StartupError(f"--port {port}: not a port number (1-65535)")
    try:
        listener = bind_listener(host, port)
    except UnknownHost as exc:
        raise StartupError(f"--host {host}: {exc}") from exc
    except ListenError as exc:
        raise StartupError(f"--port {port} ({host}:{port}): {exc}") from exc
    configure_logging(log_level)
    packages = PackageFolder(folder)
    found = packages.packages()
    shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    url = public_url or f"http://{shown}:{listener.getsockname()[1]}"
    click.echo(f"registry serving {len(found)} packages from {folder} on {url} (read-only)", err=True)
    for name, package in sorted(found.items()):
        click.echo(f"  {name:<24} {', '.join(sorted(package.versions))}", err=True)
    for problem in packages.problems:
        click.echo(f"  skipped {problem}", err=True)
    click.echo(f"  use it: bolt-host serve --registry {url}", err=True)
    config = uvicorn.Config(
        create_registry_app(packages, public_url), log_level=log_level, access_log=False, server_header=False
    )
    uvicorn.Server(config).run(sockets=[listener])
