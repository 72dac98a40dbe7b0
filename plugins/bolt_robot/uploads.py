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
import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.catalog import CatalogError, read_tarball_manifest
from bolt_host.services.manifest import app_name_for, fits_filesystem
from bolt_host.services.tasks import TaskHandle

from .jobs import install_package
from .state import Robot, sha512_file

PART_SUFFIX = ".part"
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


class _TooLarge(Exception):
    pass


class _FilePart:
    """Callbacks for python-multipart that write the first file part straight to disk."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.filename: str | None = None
        self.path: Path | None = None
        self.size = 0
        self._handle: Any = None
        self._writing = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._grow("_header_name", data[start:end]),
            "on_header_value": lambda data, start, end: self._grow("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _grow(self, attribute: str, data: bytes) -> None:
        setattr(self, attribute, getattr(self, attribute) + data)

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._writing = b"filename" in options and self.path is None
        if self._writing:
            self.filename = options[b"filename"].decode("utf-8", errors="replace")
            self.path, self._handle = open_part_file(self.folder)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.size += end - start
            if self.size > self.limit:
                raise _TooLarge
            self._handle.write(data[start:end])

    def _part_end(self) -> None:
        if self._writing:
            self._handle.close()
            self._writing = False

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()


def open_part_file(folder: Path) -> tuple[Path, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=PART_SUFFIX, dir=folder)
    return Path(name), os.fdopen(fd, "wb")


async def receive_upload(robot: Robot, request: Request) -> dict[str, Any]:
    """Store the request's tarball in the staging folder; ``{filename, module_name, version}``."""
    limit = int(robot.host.settings.max_upload_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        part, wanted = await _receive_multipart(robot, request, content_type, limit)
    else:
        part, wanted = await _receive_raw(robot, request, limit), request.query_params.get("filename") or ""
    try:
        manifest = await asyncio.to_thread(read_tarball_manifest, part)
        app_name_for(manifest["name"])
    except (CatalogError, BoltError) as exc:
        part.unlink(missing_ok=True)
        raise UploadError(f"not a package tarball: {getattr(exc, 'message', None) or exc}") from exc
    final = publish_part(part, robot.uploads_dir, wanted or f"{manifest['name']}-{manifest['version']}.tgz")
    return {"filename": str(final), "module_name": manifest["name"], "version": manifest["version"]}


async def _receive_multipart(robot: Robot, request: Request, content_type: str, limit: int) -> tuple[Path, str]:
    _, params = parse_options_header(content_type)
    if not params.get(b"boundary"):
        raise UploadError("multipart upload without a boundary")
    part = _FilePart(robot.uploads_dir, limit)
    parser = MultipartParser(params[b"boundary"], part.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        part.close()
        if part.path is not None:
            part.path.unlink(missing_ok=True)
        raise _translated(exc, limit) from None
    part.close()
    if part.path is None:
        raise UploadError("the upload has no file; send the tarball as the multipart field 'file'")
    return part.path, part.filename or ""


async def _receive_raw(robot: Robot, request: Request, limit: int) -> Path:
    path, handle = open_part_file(robot.uploads_dir)
    size = 0
    try:
        with handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                handle.write(chunk)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        raise _translated(exc, limit) from None
    if size == 0:
        path.unlink(missing_ok=True)
        raise UploadError("the upload is empty")
    return path


def _translated(exc: BaseException, limit: int) -> BaseException:
    too_large = isinstance(exc, _TooLarge) or (isinstance(exc, BoltError) and exc.code == errors.PAYLOAD_TOO_LARGE)
    if too_large:
        return UploadError(f"the upload is larger than the limit of {limit} bytes", status=413)
    if isinstance(exc, Exception) and type(exc).__module__.startswith("python_multipart"):
        return UploadError(f"invalid multipart upload: {exc}")
    return exc


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


def clean_partial_uploads(folder: Path) -> None:
    """Remove uploads a crash or a dropped connection left half-written."""
    for leftover in folder.glob(f".upload-*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


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
    try:
        record = robot.host.tasks.submit(
            "install", name, version, _local_install_job(robot, name, version, path, source),
            dedupe_key=f"robot:install-file:{original}",
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


def _local_install_job(robot: Robot, name: str, version: str, path: Path, source: dict[str, Any]):
    async def run(task: TaskHandle) -> dict[str, Any]:
        try:
            task.log(f"=== installing {name}:{version} from the local file {source['filename']}")
            task.log("=== checking checksum")
            task.log(f"sha512 {await asyncio.to_thread(sha512_file, path)}")
            return await install_package(robot, task, name, path, source, version)
        finally:
            path.unlink(missing_ok=True)

    return run
