"""What the supervisor writes into each app's own log, and what it reads back from it.

The app's output goes straight to the file (the spawner hands it the descriptor); the
supervisor adds one-line notes about what became of a run (started, stopping, crashed,
restart in N s) so that ``apps logs`` tells the whole story, and quotes a run's last lines in
the reason of a failed start or a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from bolt_host.services.app_runtime import AppRuntime
from bolt_host.services.applogs import AppLogFiles

log = logging.getLogger("bolt_host.supervisor")

LOG_TAIL_LINES = 20
LOG_CHECK_SECONDS = 60.0


class RunLog:
    def __init__(self, files: AppLogFiles) -> None:
        self.files = files

    def path(self, name: str) -> Path:
        return self.files.path(name)

    def note(self, runtime: AppRuntime, text: str) -> None:
        """A supervisor event in the app's own log (instances beyond the first say which)."""
        try:
            self.files.note(runtime.name, f"[instance {runtime.instance}] {text}" if runtime.instance else text)
        except OSError as exc:
            log.warning("%s: could not write to its log: %s", runtime.name, exc)

    def tail(self, runtime: AppRuntime) -> list[str]:
        """This run's last log lines (before the supervisor notes what became of it)."""
        return self.files.tail(runtime.name, LOG_TAIL_LINES, runtime.log_offset)

    def with_tail(self, runtime: AppRuntime, summary: str, lines: list[str] | None = None) -> str:
        """``summary`` followed by this run's last lines, for a reason shown to the admin."""
        lines = self.tail(runtime) if lines is None else lines
        return f"{summary}; last log lines:\n" + "\n".join(lines) if lines else summary

    def rotate(self, runtimes: Iterable[AppRuntime]) -> list[str]:
        """Rotate over-size app logs (in place under running apps); the names rotated."""
        runtimes = list(runtimes)
        rotated = self.files.rotate({rt.name for rt in runtimes if rt.process is not None})
        for runtime in runtimes:
            cut = rotated.get(runtime.name)
            if cut:
                runtime.log_offset = max(0, runtime.log_offset - cut)  # this run's first line moved
        return sorted(rotated)

    async def rotate_periodically(self, runtimes: Callable[[], Iterable[AppRuntime]]) -> None:
        while True:
            await asyncio.sleep(LOG_CHECK_SECONDS)
            try:
                self.rotate(runtimes())
            except OSError:
                log.exception("rotating app logs failed")
