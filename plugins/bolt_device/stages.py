"""When each job request reached each stage on the manager: a diagnostic for the fan-out
benchmark, off unless ``BOLT_DEVICE_STAGE_LOG`` names a file.

Stages of one ``_download``/``_uninstall`` call, in order: ``call`` (the handler began),
``created`` (its operation is stored), ``published`` (the broker acknowledged the request),
``reply`` (the device's reply was read from the broker), ``answered`` (the handler returns
its answer), ``sent`` (the answer's body was handed to the connection).  Times are
``time.monotonic()``, the same clock in every process of a machine, so the benchmark sets
them against its own and the broker's timestamps.  Written as JSON when the manager stops.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.responses import Response


class StageLog:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._rows: dict[str, dict[str, float | str]] = {}
        self._aliases: dict[str, str] = {}  # request id -> job id

    def alias(self, request_id: str, job_id: str) -> None:
        if self.path is not None:
            self._aliases[request_id] = job_id

    def mark(self, job_id: str, stage: str, client_id: str | None = None, at: float | None = None) -> None:
        if self.path is None:
            return
        row = self._rows.setdefault(self._aliases.get(job_id, job_id), {})
        row[stage] = time.monotonic() if at is None else at
        if client_id is not None:
            row["clientId"] = client_id

    def after_sending(self, response: Response, job_id: str) -> Response:
        """``response``, marking ``sent`` once its body is handed to the connection."""
        if self.path is not None:
            response.background = BackgroundTask(self.mark, job_id, "sent")
        return response

    def write(self) -> None:
        if self.path is None or not self._rows:
            return
        self.path.write_text(json.dumps(self._rows))
