"""Local package files: uploads into the staging folder, and installs from it.

``POST /app_store/services/upload_local_file`` streams one tarball (a multipart
``file`` field, or the raw body with ``?filename=``) into ``data_dir/uploads``,
never holding it in memory and refusing it once it passes
``settings.max_upload_bytes``.  ``install_local_file`` only accepts files inside
that folder: a bare name is looked up there, an absolute path must resolve
(links followed) to a file in it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request

from bolt_host.plugin import BoltError, CatalogError, TaskHandle, app_name_for, read_tarball_manifest
from bolt_host.plugin import open_part_file as open_part_file  # what publish_part expects; tests use it
from bolt_host.plugin import uploads as streamed

from .jobs import install_package
from .state import Robot, sha512_file

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
_TARBALL = (".tgz", ".tar.gz", ".tar")
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


class UploadError(Exception):
    """The upload or the named file was refused; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# ---------------------------------------------------------------- receiving

_MESSAGES = {
    streamed.TOO_LARGE: "the upload is larger than the limit of {limit} bytes",
    streamed.NO_BOUNDARY: "multipart upload without a boundary",
    streamed.MALFORMED: "invalid multipart upload: {detail}",
    streamed.NO_FILE: "the upload has no file; send the tarball as the multipart field 'file'",
    streamed.EMPTY: "the upload is empty",
}


async def receive_upload(robot: Robot, request: Request) -> dict[str, Any]:
    """Store the request's tarball in the staging folder; ``{filename, module_name, version}``."""
    limit = int(robot.host.settings.max_upload_bytes)
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            received = await streamed.receive_multipart(request, robot.uploads_dir, limit)
            wanted = received.filename
        else:
            received = await streamed.receive_raw(request, robot.uploads_dir, limit)
            wanted = request.query_params.get("filename") or ""
    except streamed.UploadRefused as exc:
        message = _MESSAGES.get(exc.kind, exc.message).format(limit=limit, detail=exc.detail)
        raise UploadError(message, status=exc.status) from None
    part = received.path
    try:
        manifest = await asyncio.to_thread(read_tarball_manifest, part)
        app_name_for(manifest["name"])
    except (CatalogError, BoltError) as exc:
        part.unlink(missing_ok=True)
        raise UploadError(f"not a package tarball: {getattr(exc, 'message', None) or exc}") from exc
    final = publish_part(part, robot.uploads_dir, wanted or f"{manifest['name']}-{manifest['version']}.tgz")
    return {"filename": str(final), "module_name": manifest["name"], "version": manifest["version"]}


def publish_part(part: Path, folder: Path, wanted: str) -> Path:
    """Give the finished upload its name (made safe and unique) in ``folder``; never overwrite another."""
    stem = _UNSAFE.sub("_", Path(wanted).name).lstrip(".") or "upload.tgz"
    if not stem.endswith(_TARBALL):
        stem += ".tgz"
    suffix = next(s for s in _TARBALL if stem.endswith(s))
    base = stem[: -len(suffix)]
    for attempt in range(1000):
        candidate = folder / (f"{base}{suffix}" if attempt == 0 else f"{base}-{attempt}{suffix}")
        try:
            claim_name(part, candidate)
        except FileExistsError:
            continue
        return candidate
    part.unlink(missing_ok=True)
    raise UploadError("too many uploads with this name")


def claim_name(part: Path, candidate: Path) -> None:
    """Move ``part`` to ``candidate``, or raise FileExistsError if that name is taken.

    A hard link claims the name atomically; on a filesystem without hard links
    the name is claimed by an exclusive create instead, and ``part`` is renamed
    over that empty placeholder.
    """
    try:
        os.link(part, candidate)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.replace(part, candidate)
        except OSError:
            candidate.unlink(missing_ok=True)  # do not leave an empty placeholder behind
            raise
        return
    part.unlink()


# ---------------------------------------------------------------- installing


def staged_file(robot: Robot, filename: Any) -> Path:
    """The file ``filename`` names, which must lie inside the upload staging folder."""
    hint = (
        f"filename must name a file in the upload staging folder {robot.uploads_dir} "
        "(upload it with POST /app_store/services/upload_local_file)"
    )
    if not isinstance(filename, str) or not filename or "\x00" in filename:
        raise UploadError(hint)
    folder = robot.uploads_dir.resolve()
    given = Path(filename)
    resolved = (given if given.is_absolute() else folder / given).resolve()
    if not resolved.is_relative_to(folder) or resolved == folder or not resolved.is_file():
        raise UploadError(hint)
    return resolved


async def install_local_file(robot: Robot, filename: Any) -> tuple[int, dict[str, Any]]:
    """Install a staged tarball as an ``install`` task and wait for it: ``(status, body)``.

    The wait is bounded by ``robot.install_wait``: an install still queued or
    running then is answered ``202`` with its ``task_id`` (follow it in the
    install jobs), so no request is held open for as long as an install takes.
    """
    path = staged_file(robot, filename)
    try:
        manifest = await asyncio.to_thread(read_tarball_manifest, path)
        app_name_for(manifest["name"])
    except (CatalogError, BoltError) as exc:
        raise UploadError(f"{path.name} is not a package tarball: {getattr(exc, 'message', None) or exc}") from exc
    name, version = manifest["name"], manifest["version"]
    source = {"type": "upload", "filename": path.name, "version": version}
    record = robot.host.tasks.submit(
        "install", name, version, _local_install_job(robot, name, version, path, source),
        dedupe_key=f"robot:install-file:{path}", meta={"backend": "robot", "filename": path.name},
    )
    try:
        done = await robot.host.tasks.wait(record["id"], timeout=robot.install_wait)
    except TimeoutError:
        return 202, {"module_name": name, "version": version, "task_id": record["id"]}
    if done["status"] != "succeeded":
        return 400, {"error": done["error"] or done["status"], "task_id": done["id"]}
    return 201, {"module_name": name, "version": version}


def _local_install_job(robot: Robot, name: str, version: str, path: Path, source: dict[str, Any]):
    async def run(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== installing {name}:{version} from the local file {path.name}")
        task.log("=== checking checksum")
        task.log(f"sha512 {await asyncio.to_thread(sha512_file, path)}")
        return await install_package(robot, task, name, path, source, version)

    return run
