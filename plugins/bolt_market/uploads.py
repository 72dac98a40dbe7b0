"""``POST /apps/upload``: a chart tarball streamed to disk, capped while it streams, then validated.

The multipart ``chart`` field is written straight into the target source's
folder as a hidden ``.part`` file (never held in memory); past the cap the
request ends with 413 and the part is removed.  The finished file must be a
``.tgz``/``.tar.gz`` whose package passes the same safe extraction and manifest
checks an install uses, or it is refused (400) and removed.  Only then is it
published in the source folder, where the source lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request

from bolt_host.plugin import (
    BoltError,
    CatalogError,
    ExtractError,
    Host,
    build_app,
    read_tarball_manifest,
    safe_extract,
)
from bolt_host.plugin import uploads as streamed

from .envelope import MarketError

MAX_CHART_BYTES = 100 * 1024 * 1024
SUFFIXES = (".tgz", ".tar.gz")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")


def upload_limit(host: Host) -> int:
    return min(MAX_CHART_BYTES, int(host.settings.max_upload_bytes))


_MESSAGES = {
    streamed.NOT_MULTIPART: "Failed to parse form data: send multipart/form-data with a 'chart' file",
    streamed.NO_BOUNDARY: "Failed to parse form data: no multipart boundary",
    streamed.MALFORMED: "Failed to parse form data: {detail}",
    streamed.TOO_LARGE: "The chart is larger than the limit of {limit} bytes",
    streamed.NO_FILE: "Missing 'chart' file in the form",
    streamed.WRONG_SUFFIX: "Only .tgz or .tar.gz chart packages are accepted",
}


async def receive_chart(request: Request, staging: Path, limit: int) -> tuple[Path, str, dict[str, str]]:
    """Stream the multipart body; ``(part file, client filename, text fields)``."""
    try:
        received = await streamed.receive_multipart(
            request, staging, limit, file_field="chart", accept=lambda filename: filename.lower().endswith(SUFFIXES)
        )
    except streamed.UploadRefused as exc:
        message = _MESSAGES.get(exc.kind, exc.message).format(limit=limit, detail=exc.detail)
        raise MarketError(exc.status, message) from None
    return received.path, received.filename, received.fields


def validate_package(part: Path, scratch: Path) -> dict[str, Any]:
    """The package's manifest, after the checks an install would make; raises MarketError (400)."""
    try:
        manifest = read_tarball_manifest(part)
    except CatalogError as exc:
        raise MarketError(400, f"Invalid chart package: {exc}") from None
    scratch.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=".check-", dir=scratch))
    try:
        try:
            root = safe_extract(part, holder)
        except ExtractError as exc:
            raise MarketError(400, f"Invalid chart package: {exc.reason}") from None
        try:
            build_app(manifest, root, {"type": "upload"}, False, "")
        except BoltError as exc:
            raise MarketError(400, f"Invalid chart package: {exc.message}") from None
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    return manifest


def publish(part: Path, folder: Path, manifest: dict[str, Any]) -> Path:
    """Move the checked upload to ``<name>-<version>.tgz`` in ``folder`` (a new upload replaces that version)."""
    stem = _UNSAFE.sub("_", f"{manifest['name'].replace('/', '+')}-{manifest['version']}").lstrip(".") or "chart"
    final = folder / f"{stem}.tgz"
    os.replace(part, final)
    return final


def find_uploaded(folder: Path, name: str, version: str) -> Path | None:
    """The file in ``folder`` holding ``name@version``, if any."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(SUFFIXES) or not path.is_file():
            continue
        with contextlib.suppress(CatalogError):
            manifest = read_tarball_manifest(path)
            if manifest.get("name") == name and manifest.get("version") == version:
                return path
    return None


def clean_partials(folder: Path) -> None:
    streamed.clean_partial_uploads(folder, recursive=True)


async def validate_in_thread(part: Path, scratch: Path) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(validate_package, part, scratch)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
