"""Ending the operations that no notification will ever end.

Kapua leaves an operation RUNNING when its device crashes mid-job or never
comes back; the manager does better, in two ways:

* **a device that restarted**: a bolt agent's BIRTH carries ``bolt.boot`` (an id
  per start) and ``bolt.jobs`` (every job it follows, including the ones a crash
  cut off, whose last word it sends right after: see :mod:`bolt_device.recovery`).
  When the boot id changes, a RUNNING operation of that device whose job is not in
  the list ends FAILED at once: the device cannot finish what it does not know.
  Only a changed boot counts, so a mere reconnect (broker restart) never races a
  request that is still on its way.  Devices that send no ``bolt.jobs`` (Kura, or
  too many jobs to list) are left to the deadline.
* **a device that never returns**: a RUNNING operation whose device has been
  disconnected (or deleted) for ``BOLT_DEVICE_OFFLINE_DEADLINE_SECONDS`` ends
  FAILED with the reason.  The manager's own start counts as a disconnection of
  every device (they re-announce themselves within moments).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from .devices import CONNECTED, Devices
from .operations import FAILED, Operations

log = logging.getLogger("bolt_device.reconciler")
FORGOTTEN = "the device restarted (crash or kill) and does not know this operation: it will never finish"
MAX_SWEEP_SECONDS = 5.0


def _epoch(iso_time: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso_time).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Reconciler:
    def __init__(
        self, devices: Devices, operations: Operations, deadline_seconds: float,
        ended: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.devices = devices
        self.operations = operations
        self.deadline = deadline_seconds
        self._ended = ended
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="device-operation-deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper

    async def _close(self, operation: dict[str, Any], reason: str) -> None:
        closed = self.operations.close(operation, FAILED, reason)
        if closed.get("status") == FAILED:
            log.warning("operation %s of device %s ended FAILED: %s", operation["id"], operation["deviceId"], reason)
            await self._ended(closed)

    # a device that restarted -----------------------------------------------------
    async def on_birth(self, before: dict[str, Any] | None, device: dict[str, Any], metrics: dict[str, Any]) -> None:
        boot, jobs = metrics.get("bolt.boot"), metrics.get("bolt.jobs")
        if not boot or not isinstance(jobs, str):
            return
        if before is not None and before.get("agentBoot") == str(boot):
            return  # the same start reconnecting: it still follows its jobs
        known = set(filter(None, jobs.split(",")))
        for operation in self.operations.running():
            if operation["deviceId"] == device["id"] and operation["operationId"] not in known:
                await self._close(operation, FORGOTTEN)

    # a device that never returns -------------------------------------------------
    async def _sweep_forever(self) -> None:
        interval = min(MAX_SWEEP_SECONDS, max(0.2, self.deadline / 4))
        while True:
            await asyncio.sleep(interval)  # a periodic check, not a wait for an event
            try:
                await self.sweep()
            except Exception:
                log.exception("the operation deadline sweep failed")

    async def sweep(self) -> None:
        now = time.time()
        for operation in self.operations.running():
            device = self.devices.by_id(operation["deviceId"])
            if device is None:
                await self._close(operation, "the device was deleted from the registry")
                continue
            if device["connectionStatus"] == CONNECTED:
                continue
            since = _epoch(device.get("connectionModifiedOn"))
            if since is not None and now - since >= self.deadline:
                await self._close(operation, (
                    f"the device has been disconnected since {device['connectionModifiedOn']} and did not come "
                    f"back within {self.deadline:g} s (BOLT_DEVICE_OFFLINE_DEADLINE_SECONDS)"
                ))
