"""Streamed uploads: a request body (multipart or raw) written to disk while it arrives, capped.

Nothing is held in memory: the file part goes into a hidden ``.upload-*.part`` file in
the folder given, which is removed again when the upload is refused (too large,
malformed, dropped).  Small text fields of a multipart form are kept, each capped.
A caller answers a refusal (:class:`UploadRefused`) in its own API's format and
publishes the finished file with :meth:`ReceivedUpload.publish`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from bolt_host import errors
from bolt_host.errors import BoltError

PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"
MAX_FIELD_BYTES = 4096

# Why an upload was refused; ``UploadRefused.kind`` is one of these.
TOO_LARGE = "too-large"  # 413: the file passed the cap
NOT_MULTIPART = "not-multipart"  # the body is not multipart/form-data
NO_BOUNDARY = "no-boundary"
MALFORMED = "malformed"  # the multipart parser refused it; ``detail`` says why
HEADER_TOO_LONG = "header-too-long"
FIELD_TOO_LONG = "field-too-long"  # ``detail`` is the field's name
NO_FILE = "no-file"
TWO_FILES = "two-files"
WRONG_SUFFIX = "wrong-suffix"  # ``detail`` is the client's file name
EMPTY = "empty"


class UploadRefused(Exception):
    """The upload was refused; nothing of it is left on disk.  ``status`` is 413 or 400."""

    def __init__(self, kind: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail
        self.status = 413 if kind == TOO_LARGE else 400


@dataclass
class ReceivedUpload:
    """The file an upload wrote (``path``, hidden until published), its client name and text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def publish(self, final: Path) -> Path:
        """Move the file to ``final`` (same filesystem), replacing what is there."""
        os.replace(self.path, final)
        return final


def open_part_file(folder: Path) -> tuple[Path, IO[bytes]]:
    """A new hidden part file in ``folder``, open for writing."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=PART_PREFIX, suffix=PART_SUFFIX, dir=folder)
    return Path(name), os.fdopen(fd, "wb")


def clean_partial_uploads(folder: Path, recursive: bool = False) -> None:
    """Remove part files a crash or a dropped connection left behind."""
    if not folder.is_dir():
        return
    pattern = f"{PART_PREFIX}*{PART_SUFFIX}"
    for leftover in folder.rglob(pattern) if recursive else folder.glob(pattern):
        with contextlib.suppress(OSError):
            leftover.unlink()


class _TooLarge(Exception):
    pass


class _Form:
    """python-multipart callbacks: the wanted file part to disk, small text fields to memory."""

    def __init__(self, folder: Path, limit: int, file_field: str | None, accept: Callable[[str], bool]) -> None:
        self.folder, self.limit, self.file_field, self.accept = folder, limit, file_field, accept
        self.filename = ""
        self.path: Path | None = None
        self.size = 0
        self.fields: dict[str, str] = {}
        self._handle: IO[bytes] | None = None
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
        if len(value) > MAX_FIELD_BYTES:
            raise UploadRefused(HEADER_TOO_LONG, "A multipart header is too long")
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
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        is_file = b"filename" in options and (self.file_field is None or name == self.file_field)
        if not is_file:
            self._field = name  # a text field (or a file in another field: kept as text, capped)
            return
        if self.path is not None:
            if self.file_field is None:
                return  # the first file counts; later ones are skipped
            raise UploadRefused(TWO_FILES, f"Send exactly one {self.file_field!r} file", self.file_field)
        filename = options[b"filename"].decode("utf-8", errors="replace")
        if not self.accept(filename):
            raise UploadRefused(WRONG_SUFFIX, f"{filename!r} is not an accepted file", filename)
        self.filename = filename
        self.path, self._handle = open_part_file(self.folder)
        self._writing = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing and self._handle is not None:
            self.size += end - start
            if self.size > self.limit:
                raise _TooLarge
            self._handle.write(data[start:end])
        elif self._field is not None:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise UploadRefused(FIELD_TOO_LONG, f"The form field {self._field!r} is too long", self._field)

    def _part_end(self) -> None:
        if self._writing and self._handle is not None:
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


async def receive_multipart(
    request: Request,
    folder: Path,
    limit: int,
    file_field: str | None = None,
    accept: Callable[[str], bool] = lambda filename: True,
) -> ReceivedUpload:
    """Stream a ``multipart/form-data`` body: its file part into ``folder`` (capped at ``limit``).

    ``file_field`` names the field that carries the file (None: the first file part of any
    name; later file parts are skipped).  ``accept(filename)`` may refuse the client's file
    name before a byte is written.  Raises :class:`UploadRefused`, leaving nothing behind.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadRefused(NOT_MULTIPART, "Send multipart/form-data")
    _, params = parse_options_header(content_type)
    if not params.get(b"boundary"):
        raise UploadRefused(NO_BOUNDARY, "multipart upload without a boundary")
    form = _Form(folder, limit, file_field, accept)
    parser = MultipartParser(params[b"boundary"], form.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        form.discard()
        raise _refusal(exc, limit) from None
    if form.path is None:
        raise UploadRefused(NO_FILE, "The upload has no file", file_field or "")
    return ReceivedUpload(form.path, form.filename, form.size, form.fields)


async def receive_raw(request: Request, folder: Path, limit: int) -> ReceivedUpload:
    """Stream the raw request body into a part file in ``folder`` (capped at ``limit``; not empty)."""
    path, handle = open_part_file(folder)
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
        raise _refusal(exc, limit) from None
    if size == 0:
        path.unlink(missing_ok=True)
        raise UploadRefused(EMPTY, "The upload is empty")
    return ReceivedUpload(path, "", size)


def _refusal(exc: BaseException, limit: int) -> BaseException:
    """What to raise for ``exc``: an UploadRefused for every refusal, anything else unchanged."""
    if isinstance(exc, UploadRefused):
        return exc
    too_large = isinstance(exc, _TooLarge) or (isinstance(exc, BoltError) and exc.code == errors.PAYLOAD_TOO_LARGE)
    if too_large:
        return UploadRefused(TOO_LARGE, f"The upload is larger than the limit of {limit} bytes")
    if isinstance(exc, Exception) and type(exc).__module__.startswith("python_multipart"):
        return UploadRefused(MALFORMED, f"invalid multipart upload: {exc}", str(exc))
    return exc
