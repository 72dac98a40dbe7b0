"""Uploading a package from the CLI's machine: a folder is packed, a tarball sent as it is.

``POST /api/apps/upload`` takes the tarball as the raw request body, streamed from
disk; the host checks and installs it like any other package.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from bolt_host.cli_client import Client

TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")
CHUNK = 64 * 1024


def upload_package(client: Client, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Install the app folder or tarball at ``path`` on the host; the installed app."""
    if path.is_dir():
        if not (path / "package.json").is_file():
            raise click.UsageError(f"{path} has no package.json, so it is not an app folder")
        with tempfile.TemporaryDirectory(prefix="bolt-host-pack-") as scratch:
            tarball = pack_folder(path, Path(scratch) / f"{path.resolve().name}.tgz")
            return _send(client, tarball, options)
    if path.is_file() and path.name.endswith(TARBALL_SUFFIXES):
        return _send(client, path, options)
    raise click.UsageError(f"{path} is neither an app folder nor a package tarball ({', '.join(TARBALL_SUFFIXES)})")


def pack_folder(folder: Path, out: Path) -> Path:
    """An npm-style tarball of ``folder``; symlinks, node_modules, .git and __pycache__ stay out."""
    from bolt_host.services.extract import pack_directory

    try:
        return pack_directory(folder, out)
    except OSError as exc:
        raise click.ClickException(f"cannot pack {folder}: {exc.strerror or exc}") from exc


def _send(client: Client, tarball: Path, options: dict[str, Any]) -> dict[str, Any]:
    params = {"filename": tarball.name, **{key: "true" if value else "false" for key, value in options.items()}}
    headers = {"Content-Type": "application/gzip", "Content-Length": str(tarball.stat().st_size)}
    answer: dict[str, Any] = client.call("POST", "/api/apps/upload", params=params, headers=headers,
                                         content=_chunks(tarball))
    return answer


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
