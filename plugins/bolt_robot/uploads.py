"""Local package files: uploads into the staging folder, and installs from it.

``POST /app_store/services/upload_local_file`` streams one tarball (a multipart
``file`` field, or the raw body with ``?filename=``) into ``data_dir/uploads``,
never holding it in memory and refusing it once it passes
``settings.max_upload_bytes``.  ``install_local_file`` takes a bare name (looked up
in that folder) or an absolute path inside the configured folders (by default that
folder and the system temp folder): a regular file with no link on its path, copied
with ``O_NOFOLLOW`` before it is checked and installed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from bolt_host.plugin import (
    BoltError,
    CatalogError,
    TaskHandle,
    app_name_for,
    fits_filesystem,
    install_as_task,
    read_tarball_manifest,
)
from bolt_host.plugin import open_part_file as open_part_file  # what publish_part expects; tests use it
from bolt_host.plugin import uploads as streamed

from .answers import RobotError
from .jobs import record_installed
from .state import Robot, sha512_file

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
_TARBALL = (".tgz", ".tar.gz", ".tar")
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


class UploadError(RobotError):
    """The upload or the named file was refused; ``status`` is the HTTP status to answer."""


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


def local_file(robot: Robot, filename: Any) -> Path:
    """The file ``filename`` names: a bare name in the upload staging folder, or an absolute
    path inside one of ``robot.local_file_dirs``; a regular file with no link anywhere on
    its path.  Anything else is refused with a message saying what is accepted."""
    folders = [folder.resolve() for folder in robot.local_file_dirs]
    hint = local_file_hint(robot)
    if not isinstance(filename, str) or not filename or "\x00" in filename:
        raise UploadError(hint)
    given = Path(filename)
    if not given.is_absolute():
        given = robot.uploads_dir.resolve() / given
    if not fits_filesystem(given):
        raise UploadError(hint)
    if ".." in given.parts or not any(given.is_relative_to(f) and given != f for f in folders):
        raise UploadError(hint)
    return given


def local_file_hint(robot: Robot) -> str:
    folders = [folder.resolve() for folder in robot.local_file_dirs]
    return (
        "filename must name a regular file (no symbolic links on its path) in the upload staging "
        f"folder or, by absolute path, in one of {', '.join(str(f) for f in folders)} "
        "(upload it with POST /app_store/services/upload_local_file)"
    )


def _open_without_links(path: Path) -> int:
    """A read-only descriptor of the absolute ``path``, opened one component at a time with
    ``O_NOFOLLOW``, so a link anywhere on the path (even one swapped in meanwhile) fails."""
    fd = os.open(path.anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path.parts[1:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def copy_local_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``: a regular file reached without following any link."""
    try:
        fd = _open_without_links(source)
    except OSError as exc:
        raise UploadError(f"{source} cannot be opened without following a link ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UploadError(f"{source} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            shutil.copyfileobj(handle, out, 1 << 20)


async def install_local_file(robot: Robot, filename: Any) -> tuple[int, dict[str, Any]]:
    """Install a staged tarball as an ``install`` task and wait for it: ``(status, body)``.

    The wait is bounded by ``robot.install_wait``: an install still queued or
    running then is answered ``202`` with its ``task_id`` (follow it in the
    install jobs), so no request is held open for as long as an install takes.
    """
    original = local_file(robot, filename)
    copy_id = uuid.uuid4().hex
    path = robot.local_copies_dir / f"{copy_id}.tgz"  # the bytes checked are the bytes installed
    try:
        await asyncio.to_thread(copy_local_file, original, path)
        manifest = await asyncio.to_thread(read_tarball_manifest, path)
        app_name_for(manifest["name"])
    except (CatalogError, BoltError, UploadError) as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, UploadError):
            raise UploadError(f"{exc.message}; {local_file_hint(robot)}") from exc
        raise UploadError(f"{original.name} is not a package tarball: {getattr(exc, 'message', None) or exc}") from exc
    name, version = manifest["name"], manifest["version"]
    source = {"type": "upload", "filename": original.name, "version": version}
    before, after = _local_install_steps(robot, name, version, path, original.name)
    try:
        record = install_as_task(
            robot.host, path, source, name=name, version=version, expect_name=name, before=before, after=after,
            discard_package=True, dedupe_key=f"robot:install-file:{original}",
            meta={"backend": "robot", "filename": original.name, "copy": copy_id},
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if (record.get("meta") or {}).get("copy") != copy_id:  # the same file is being installed already
        path.unlink(missing_ok=True)
    try:
        done = await robot.host.tasks.wait(record["id"], timeout=robot.install_wait)
    except TimeoutError:
        return 202, {"module_name": name, "version": version, "task_id": record["id"]}
    if done["status"] != "succeeded":
        return 400, {"error": done["error"] or done["status"], "task_id": done["id"]}
    return 201, {"module_name": name, "version": version}


def _local_install_steps(robot: Robot, name: str, version: str, path: Path, filename: str) -> tuple[
    Callable[[TaskHandle], Awaitable[None]], Callable[[TaskHandle, dict[str, Any]], Awaitable[None]]
]:
    """The robot's steps around the API's install: the checksum first, its bookkeeping after."""
    was_running = False

    async def before(task: TaskHandle) -> None:
        nonlocal was_running
        task.log(f"=== installing {name}:{version} from the local file {filename}")
        task.log("=== checking checksum")
        task.log(f"sha512 {await asyncio.to_thread(sha512_file, path)}")
        was_running = robot.host.supervisor.is_active(app_name_for(name))
        task.log("=== extract")

    async def after(task: TaskHandle, app: dict[str, Any]) -> None:
        record_installed(robot, task, name, app, was_running)

    return before, after
