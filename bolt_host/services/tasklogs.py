"""Append-only task logs, one UTF-8 file per task, readable by character range.

The files live in ``data_dir/logs/tasks/<id>.log``.  Lines are only ever
appended (opened in append mode, flushed at once), so a reader polling a log
while its task runs always sees a prefix of the final text.  Ranges are in
*characters* (not bytes), as the robot App Store API counts them.
"""

from __future__ import annotations

import time
from pathlib import Path

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_time(timestamp: float | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in the host's local time, as the robot API shows it."""
    return time.strftime(TIME_FORMAT, time.localtime(time.time() if timestamp is None else timestamp))


class TaskLogs:
    """The folder of task log files."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, task_id: int) -> Path:
        return self.folder / f"{int(task_id)}.log"

    def append(self, task_id: int, line: str) -> None:
        """Append ``line`` (one or more lines; a final newline is added)."""
        text = line if line.endswith("\n") else line + "\n"
        with open(self.path(task_id), "a", encoding="utf-8", errors="replace") as handle:
            handle.write(text)
            handle.flush()

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
        self.path(task_id).unlink(missing_ok=True)
