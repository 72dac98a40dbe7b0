"""Per-app log files: size rotation, character-range reads, follow.

An app's stdout and stderr are one file descriptor on ``logs/apps/<name>.log``
opened ``O_APPEND``: the app writes straight to disk, never blocks on a pipe
the host must drain, and keeps writing if the host dies.

Rotation: a log nothing writes to is renamed to ``.1`` (older ones shifted,
``keep`` kept) by :func:`rotate_if_needed`, right before each spawn and for apps
that are not running.  The host cannot make a running app reopen its stdout, so
a running app's log is rotated in place by :func:`trim_head`: its oldest bytes
(whole filesystem blocks, all but the newest half of the cap) are copied to
``.1`` and then cut out of the file with ``FALLOC_FL_COLLAPSE_RANGE``.  The app's
appends land after the cut, so no line is lost (copy-truncate loses the lines
written between the copy and the truncate); the cut may split a line between
``.1`` and the log.  A filesystem without collapse-range (tmpfs, NFS) keeps the
log growing until the app's next start.

Character ranges: ``read_range`` counts characters of the file decoded as
UTF-8, an undecodable byte counting as one character (shown as U+FFFD), an
incomplete multibyte sequence at the very end (a write in progress) not yet
counted.  Ranges are over the current file only; rotated files are not part
of it.  A sparse index of (byte, character) checkpoints per file, extended as
the file grows, keeps reads proportional to the range asked for.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import ctypes
import ctypes.util
import functools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from bolt_host.errors import APP_NAME_INVALID, BoltError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 3
CHUNK = 64 * 1024
MAX_INDEXED_FILES = 128
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
NOTE_TAG = "[bolt-host]"
_NOTE_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) \[bolt-host\] ")


class AppLogFiles:
    """The folder of app logs (``logs/apps/<name>.log``) and its size caps."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self._folder_text = str(folder)  # notes join their path as text: a pathlib join cost more than the write

    def path(self, name: str) -> Path:
        """The log of app ``name`` (a name that could leave the folder is refused)."""
        return self.folder / _log_name(name)

    def open_for_spawn(self, name: str) -> tuple[int, int]:
        """Rotate the log if it is over the cap (nothing writes to it yet), open it for the new
        process: ``(fd, size)``, the size being where this run's lines start."""
        path = self.path(name)
        rotate_if_needed(path, self.max_bytes, self.keep)
        fd = open_for_append(path)
        return fd, os.fstat(fd).st_size

    def rotate(self, running: set[str]) -> dict[str, int]:
        """Rotate every over-size log: renamed when nothing writes to it, cut in place
        (:func:`trim_head`) under the apps in ``running``.  Returns name -> bytes cut (0 when
        renamed).  Call it on the event loop that follows logs, as :func:`follow` assumes."""
        rotated = {}
        for path in self.folder.glob("*.log"):
            if path.stem in running:
                cut = trim_head(path, self.max_bytes, self.keep)
                if cut:
                    rotated[path.stem] = cut
            elif rotate_if_needed(path, self.max_bytes, self.keep):
                rotated[path.stem] = 0
        return rotated

    def tail(self, name: str, count: int, from_byte: int) -> list[str]:
        return tail_lines(self.path(name), count, from_byte)

    def note(self, name: str, text: str) -> None:
        """Append one timestamped host line (``<UTC time> [bolt-host] text``) to the app's log.

        One ``write`` on an ``O_APPEND`` descriptor: it lands whole between the app's own writes.
        """
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fd = open_for_append(f"{self._folder_text}/{_log_name(name)}")
        try:
            os.write(fd, f"{stamp} {NOTE_TAG} {text}\n".encode())
        finally:
            os.close(fd)


def _log_name(name: str) -> str:
    """The file name of app ``name``'s log (a name that could leave the folder is refused)."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise BoltError(APP_NAME_INVALID, f"Invalid app name {name!r}")
    return f"{name}.log"


def open_for_append(path: Path | str) -> int:
    """A write-only O_APPEND descriptor for an app's stdout and stderr."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:  # the folder is there but for the first log: no mkdir per supervisor note
        return os.open(path, flags, 0o640)
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o640)


def rotate_if_needed(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> bool:
    """Rename ``path`` to ``path.1`` (shifting older ones) when it passed ``max_bytes``.

    Call only while no process writes to ``path``.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if keep < 1:
        path.unlink(missing_ok=True)
        return True
    _shift_rotated(path, keep)
    os.replace(path, path.with_name(f"{path.name}.1"))
    return True


def _shift_rotated(path: Path, keep: int) -> None:
    """``.N-1`` -> ``.N`` down to ``.1`` -> ``.2``, so ``.1`` is free (``.keep`` is overwritten)."""
    for number in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{number + 1}"))


FALLOC_FL_COLLAPSE_RANGE = 0x08
_collapsed_lock = threading.Lock()
_collapsed: dict[str, int] = {}  # bytes cut from each log's head in this process (for follow)


def trim_head(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> int:
    """Rotate a log a running app still writes to; returns the bytes cut from its head (0: none).

    The oldest bytes never change in an append-only file, so they are copied to ``.1``
    first and only then cut out; a failure anywhere leaves the log as it was.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0
    block = stat.st_blksize or 4096
    cut = (stat.st_size - max_bytes // 2) // block * block
    if stat.st_size <= max_bytes or cut <= 0:
        return 0
    head = path.with_name(f".{path.name}.head.tmp")
    with path.open("r+b") as log_file:
        with head.open("wb") as copy:
            _copy_bytes(log_file, copy, cut)
            os.fsync(copy.fileno())
        if not _collapse(log_file.fileno(), cut):
            head.unlink(missing_ok=True)
            return 0
    if keep < 1:
        head.unlink(missing_ok=True)
    else:
        _shift_rotated(path, keep)
        os.replace(head, path.with_name(f"{path.name}.1"))
    with _collapsed_lock:
        _collapsed[str(path)] = _collapsed.get(str(path), 0) + cut
    with _index_lock:
        _indexes.pop(str(path), None)
    return cut


def _copy_bytes(source: BinaryIO, target: BinaryIO, count: int) -> None:
    source.seek(0)
    while count > 0:
        data = source.read(min(CHUNK, count))
        if not data:
            break
        target.write(data)
        count -= len(data)


def _collapse(fd: int, length: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, ctypes.c_int64(0), ctypes.c_int64(length)) == 0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    return libc if libc is not None and hasattr(libc, "fallocate") else None


def _collapsed_bytes(path: Path) -> int:
    with _collapsed_lock:
        return _collapsed.get(str(path), 0)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail_lines(path: Path, count: int = 20, from_byte: int = 0, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` lines written after byte ``from_byte`` (at most ``max_bytes`` read)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(from_byte, size - max_bytes, 0)
            handle.seek(start)
            data = handle.read(size - start)
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-count:]


@dataclass
class _CharIndex:
    """Sparse (byte, char) checkpoints, at least CHUNK bytes apart, of one append-only file.

    Checkpoints sit at clean UTF-8 boundaries, where a fresh decoder can start.
    ``scanned_bytes``/``chars`` say how far the file has been counted.
    """

    device: int
    inode: int
    byte_marks: list[int] = field(default_factory=lambda: [0])
    char_marks: list[int] = field(default_factory=lambda: [0])
    scanned_bytes: int = 0
    chars: int = 0

    def extend(self, handle: BinaryIO, size: int) -> None:
        """Count characters from where the last scan stopped up to ``size`` bytes."""
        position, chars = self.scanned_bytes, self.chars
        decoder = _decoder()
        handle.seek(position)
        while position < size:
            data = handle.read(min(CHUNK, size - position))
            if not data:
                break
            chars += len(decoder.decode(data))
            position += len(data)
            # Bytes of a multibyte sequence still waiting for its end are not counted yet.
            self.scanned_bytes, self.chars = position - len(decoder.getstate()[0]), chars
            if self.scanned_bytes - self.byte_marks[-1] >= CHUNK:
                self.byte_marks.append(self.scanned_bytes)
                self.char_marks.append(chars)

    def locate(self, handle: BinaryIO, char_offset: int) -> int:
        """The byte offset where character ``char_offset`` starts."""
        slot = bisect.bisect_right(self.char_marks, char_offset) - 1
        position, chars = self.byte_marks[slot], self.char_marks[slot]
        handle.seek(position)
        decoder = _decoder()
        while chars < char_offset:
            data = handle.read(CHUNK)
            text = decoder.decode(data, final=not data)
            if chars + len(text) >= char_offset or not data:
                text = text[: char_offset - chars]
            # surrogateescape round-trips, so the encoded length is the bytes consumed.
            position += len(text.encode("utf-8", "surrogateescape"))
            chars += len(text)
            if not data:
                break
        return position


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("surrogateescape")


_index_lock = threading.Lock()
_indexes: OrderedDict[str, _CharIndex] = OrderedDict()


def _index_for(path: Path, stat: os.stat_result) -> _CharIndex:
    """The cached index of ``path``; call with ``_index_lock`` held."""
    key = str(path)
    index = _indexes.get(key)
    if index is None or (index.device, index.inode) != (stat.st_dev, stat.st_ino) or stat.st_size < index.scanned_bytes:
        index = _indexes[key] = _CharIndex(stat.st_dev, stat.st_ino)
    _indexes.move_to_end(key)
    while len(_indexes) > MAX_INDEXED_FILES:
        _indexes.popitem(last=False)
    return index


def read_range(path: Path, start: int, end: int | None = None) -> tuple[str, bool, int]:
    """Characters ``[start, end)`` of the log: ``(text, more, total_chars)``.

    ``end=None`` reads to the current end.  ``more`` is True when the file
    holds characters beyond ``end``.  Blocking file I/O: call it through
    ``asyncio.to_thread`` for large ranges.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return "", False, 0
    with handle:
        stat = os.fstat(handle.fileno())
        with _index_lock:
            index = _index_for(path, stat)
            index.extend(handle, stat.st_size)
            total = index.chars
            start = max(0, min(start, total))
            stop = total if end is None else max(start, min(end, total))
            if start == stop:
                return "", stop < total, total
            first_byte = index.locate(handle, start)
        text = _read_chars(handle, first_byte, stop - start)
    return text, stop < total, total


def select_lines(path: Path, lines: int | None = None, since: float | None = None) -> tuple[str, int]:
    """The log's last ``lines`` lines, from about time ``since`` on; and the log's size in characters.

    An app's own output carries no time, the host's notes do (:meth:`AppLogFiles.note`), so
    ``since`` starts right after the last note stamped before it: the lines kept may reach
    back to that note, never less.  The size is where a follow continues.  Blocking I/O.
    """
    text, _, total = read_range(path, 0, None)
    kept = text.splitlines(keepends=True)
    if since is not None:
        kept = kept[_first_line_since(kept, since) :]
    if lines is not None:
        kept = kept[len(kept) - lines :] if lines < len(kept) else kept
    return "".join(kept), total


def _first_line_since(lines: list[str], since: float) -> int:
    first = 0
    for number, line in enumerate(lines):
        stamp = _NOTE_STAMP.match(line)
        if stamp is None:
            continue
        when = datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00")).timestamp()
        if when >= since:
            break
        first = number + 1
    return first


def _read_chars(handle: BinaryIO, first_byte: int, count: int) -> str:
    handle.seek(first_byte)
    decoder = _decoder()
    parts: list[str] = []
    remaining = count
    while remaining > 0:
        data = handle.read(max(CHUNK, remaining))
        text = decoder.decode(data, final=not data)
        parts.append(text[:remaining])
        remaining -= len(parts[-1])
        if not data:
            break
    return _ESCAPED_BYTE.sub("\ufffd", "".join(parts))


async def follow(path: Path, from_offset: int = 0, poll_interval: float = 0.25) -> AsyncIterator[str]:
    """Yield the log's text from character ``from_offset`` on, then new text as it is written.

    Polls the file size every ``poll_interval`` while idle; a rotation (the
    path now names another file) is followed by draining the old file and
    continuing at the start of the new one.  Ends only when cancelled or closed.
    """
    handle: BinaryIO | None = None
    try:
        while handle is None:
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                await asyncio.sleep(poll_interval)
        with _index_lock:
            stat = os.fstat(handle.fileno())
            index = _index_for(path, stat)
            index.extend(handle, stat.st_size)
            handle.seek(index.locate(handle, min(max(from_offset, 0), index.chars)))
        decoder = _decoder()
        collapsed = _collapsed_bytes(path)
        while True:
            # Its head was cut (trim_head runs on this event loop too, never between this
            # check and the read): the bytes not yet read now sit that much earlier.
            if _collapsed_bytes(path) != collapsed:
                cut, collapsed = _collapsed_bytes(path) - collapsed, _collapsed_bytes(path)
                handle.seek(max(0, handle.tell() - cut))
            data = handle.read(CHUNK)
            if data:
                text = decoder.decode(data)
                if text:
                    yield _ESCAPED_BYTE.sub("\ufffd", text)
                continue
            replacement = _reopen_if_rotated(path, handle)
            if replacement is not None:
                handle.close()
                handle, decoder = replacement, _decoder()
                continue
            await asyncio.sleep(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def _reopen_if_rotated(path: Path, handle: BinaryIO) -> BinaryIO | None:
    try:
        current = path.stat()
    except FileNotFoundError:
        return None
    opened = os.fstat(handle.fileno())
    if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
        return path.open("rb")
    if current.st_size < handle.tell():  # truncated in place: start over
        handle.seek(0)
    return None
