"""The data dir before the host opens it: is it usable, and is another host already using it.

``serve`` checks the folder without creating anything (a refused start leaves no trace), then
holds an exclusive ``flock`` on ``<data-dir>/host.lock`` for its whole life.  The kernel drops
the lock when the process dies, however it dies, so a stale lock file never blocks a start.
The offline ``admin`` commands that write take the same lock, so they cannot race a running host.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "host.lock"


class DataDirError(Exception):
    """The data dir cannot be used; the message says why (without the path, which callers name)."""


class DataDirBusy(DataDirError):
    """Another process holds the data dir's lock."""


def check_usable(data_dir: Path) -> None:
    """Raise :class:`DataDirError` unless ``data_dir`` is (or can be created as) a writable folder.

    Creates nothing: a missing folder is judged by its nearest existing parent.
    """
    if data_dir.exists():
        if not data_dir.is_dir():
            raise DataDirError("not a directory")
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise DataDirError("not writable")
        return
    parent = data_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataDirError(f"cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataDirError(f"cannot be created: {parent} is not writable")


class DataDirLock:
    """An exclusive, non-blocking ``flock`` on ``<data-dir>/host.lock``, holding the owner's pid."""

    def __init__(self, data_dir: Path, purpose: str = "serve") -> None:
        self.path = data_dir / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise :class:`DataDirBusy` naming the holder's pid and purpose."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise DataDirBusy(f"in use by {holder}" if holder else "in use by another process") from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.purpose} pid {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """What the holder wrote ("serve pid 1234"); empty when it has not written yet."""
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
