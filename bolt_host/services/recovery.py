"""Boot after a host restart or crash: what becomes of each process record the last host left.

- A recorded process that still runs and is provably ours (its pid, start time and
  ``BOLT_SUPERVISOR_ID`` marker all match) is adopted; if its app was removed while the host
  was down, it is stopped.
- The old process of a rolling restart the crash cut short is ended (its successor, if it got
  so far, is the one recorded as the app's).
- A record whose process is gone is forgotten, never signalled: its pid may belong to
  someone else by now.
- Processes spawned but never recorded (the host was killed between the spawn and the
  write) are found by their marker and ended when they hold that app's token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bolt_host.services.app_runtime import DESIRED_RUNNING, DESIRED_STOPPED, AppRuntime
from bolt_host.services.processes import AppProcess
from bolt_host.services.rollover import recorded_retiring

if TYPE_CHECKING:
    from bolt_host.services.machine import Machine
    from bolt_host.services.runtimes import Runtimes
    from bolt_host.services.spawner import Spawner

LoadApp = Callable[[str], dict[str, Any] | None]


async def recover(
    records: Iterable[dict[str, Any]],
    *,
    machine: Machine,
    runtimes: Runtimes,
    spawner: Spawner,
    load_app: LoadApp | None,
    autostart: bool,
) -> list[dict[str, Any]]:
    """Adopt or forget each recorded process; the apps to start now (each once: its start
    brings up its other instances, and is a no-op for an adopted process)."""
    to_start: list[dict[str, Any]] = []
    unrecorded: list[AppRuntime] = []
    for record in records:
        name = record["name"]
        app = load_app(name) if load_app is not None else None
        runtime = runtimes.slot(name, app or {"name": name}, int(record.get("instance") or 0))
        runtime.load_record(record)
        retiring = recorded_retiring(runtime, record)
        if retiring is not None:
            await spawner.retire(runtime, retiring)
        process = None
        if record.get("pid") and record.get("create_time"):
            process = AppProcess.adopt(int(record["pid"]), float(record["create_time"]), runtime.marker)
        if process is not None:
            await machine.adopt(runtime, process, record)
            # uninstalled while the host was down, or a stop had recorded its intent when the host died
            if (load_app is not None and app is None) or runtime.desired == DESIRED_STOPPED:
                async with runtime.lock:
                    await machine.stop_locked(runtime, desired_after=DESIRED_STOPPED)
            elif autostart and app is not None and not runtime.instance:
                to_start.append(app)
            continue
        if record.get("pid"):
            machine.persist_soon(runtime)  # gone or pid reused: forget it, never signal it
        unrecorded.append(runtime)
        if runtime.desired == DESIRED_RUNNING and autostart and app is not None and not runtime.instance:
            to_start.append(app)
    await spawner.end_unrecorded(unrecorded)
    return to_start
