"""Append-only task logs, one UTF-8 file per task, readable by character range.

The files live in ``data_dir/logs/tasks/<id>.log``.  Lines are only ever
appended (one ``write`` of a file opened in append mode, unbuffered), so a reader
polling a log while its task runs always sees a prefix of the final text.  A task's
file stays open from its first line to its end (:meth:`TaskLogs.finished`; at most
``MAX_OPEN`` at once): a task writes five or so appends, and opening and closing the
file for each was a tenth of a device agent's event-loop time per install.  Ranges are in
*characters* (not bytes), as the robot App Store API counts them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_OPEN = 64  # task logs kept open at once (the oldest is closed for a new one)
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def format_time(timestamp: float | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in the host's local time, as the robot API shows it."""
    return time.strftime(TIME_FORMAT, time.localtime(time.time() if timestamp is None else timestamp))


class TaskLogs:
    """The folder of task log files."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open: dict[int, int] = {}  # task id -> descriptor of its log, while it is being written

    def path(self, task_id: int) -> Path:
        return self.folder / f"{int(task_id)}.log"

    def append(self, task_id: int, line: str) -> None:
        """Append ``line`` (one or more lines; a final newline is added)."""
        text = line if line.endswith("\n") else line + "\n"
        fd = self._open.get(task_id)
        if fd is None:
            fd = os.open(self.path(task_id), _APPEND_FLAGS, 0o666)
            if len(self._open) >= MAX_OPEN:
                os.close(self._open.pop(next(iter(self._open))))
            self._open[task_id] = fd
        data = memoryview(text.encode("utf-8", errors="replace"))
        while data:
            data = data[os.write(fd, data):]

    def finished(self, task_id: int) -> None:
        """The task wrote its last line: close its file (a later append opens it again)."""
        fd = self._open.pop(task_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for task_id in list(self._open):
            self.finished(task_id)

    def text(self, task_id: int) -> str:
        try:
            return self.path(task_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def read(self, task_id: int, start: int = 0, end: int | None = None) -> tuple[str, int]:
        """Characters ``[start, end)`` of the log (``end`` None: to the end) and the total size."""
        text = self.text(task_id)
        total = len(text)
        start = min(max(int(start), 0), total)
        stop = total if end is None else min(max(int(end), start), total)
        return text[start:stop], total

    def remove(self, task_id: int) -> None:
        self.finished(task_id)
        self.path(task_id).unlink(missing_ok=True)
