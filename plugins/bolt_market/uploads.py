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

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.catalog import CatalogError, read_tarball_manifest
from bolt_host.services.extract import ExtractError, safe_extract
from bolt_host.services.manifest import build_app

from .envelope import MarketError

MAX_CHART_BYTES = 100 * 1024 * 1024
PART_SUFFIX = ".part"
SUFFIXES = (".tgz", ".tar.gz")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
_MAX_FIELD_BYTES = 4096


class _TooLarge(Exception):
    pass


class _Form:
    """python-multipart callbacks: the ``chart`` file goes to disk, small text fields to memory."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.filename: str | None = None
        self.path: Path | None = None
        self.size = 0
        self.fields: dict[str, str] = {}
        self._handle: Any = None
        self._field: str | None = None
        self._value = b""
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
        value = getattr(self, attribute) + data
        if len(value) > _MAX_FIELD_BYTES:
            raise MarketError(400, "A multipart header is too long")
        setattr(self, attribute, value)

    def _part_begin(self) -> None:
        self._disposition = b""
        self._field = None
        self._value = b""

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        field = options.get(b"name", b"").decode("utf-8", errors="replace")
        if field == "chart" and b"filename" in options:
            if self.path is not None:
                raise MarketError(400, "Send exactly one 'chart' file")
            self.filename = options[b"filename"].decode("utf-8", errors="replace")
            if not self.filename.lower().endswith(SUFFIXES):
                raise MarketError(400, "Only .tgz or .tar.gz chart packages are accepted")
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".upload-", suffix=PART_SUFFIX, dir=self.folder)
            self.path, self._handle = Path(name), os.fdopen(fd, "wb")
            self._writing = True
        else:
            self._field = field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.size += end - start
            if self.size > self.limit:
                raise _TooLarge
            self._handle.write(data[start:end])
        elif self._field is not None:
            self._value += data[start:end]
            if len(self._value) > _MAX_FIELD_BYTES:
                raise MarketError(400, f"The form field {self._field!r} is too long")

    def _part_end(self) -> None:
        if self._writing:
            self._handle.close()
            self._writing = False
        elif self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", errors="replace")
            self._field = None

    def discard(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def upload_limit(host: Any) -> int:
    return min(MAX_CHART_BYTES, int(host.settings.max_upload_bytes))


async def receive_chart(request: Request, staging: Path, limit: int) -> tuple[Path, str, dict[str, str]]:
    """Stream the multipart body; ``(part file, client filename, text fields)``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise MarketError(400, "Failed to parse form data: send multipart/form-data with a 'chart' file")
    _, params = parse_options_header(content_type)
    if not params.get(b"boundary"):
        raise MarketError(400, "Failed to parse form data: no multipart boundary")
    form = _Form(staging, limit)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        form.discard()
        too_large = isinstance(exc, _TooLarge) or (isinstance(exc, BoltError) and exc.code == errors.PAYLOAD_TOO_LARGE)
        if too_large:
            raise MarketError(413, f"The chart is larger than the limit of {limit} bytes") from None
        if isinstance(exc, Exception) and type(exc).__module__.startswith("python_multipart"):
            raise MarketError(400, f"Failed to parse form data: {exc}") from None
        raise
    if form.path is None:
        raise MarketError(400, "Missing 'chart' file in the form")
    return form.path, form.filename or "", form.fields


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
    if folder.is_dir():
        for leftover in folder.rglob(f".upload-*{PART_SUFFIX}"):
            with contextlib.suppress(OSError):
                leftover.unlink()


async def validate_in_thread(part: Path, scratch: Path) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(validate_package, part, scratch)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
