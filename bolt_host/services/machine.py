"""The supervisor's state machine of one process, as the code beside it drives it.

:class:`~bolt_host.services.supervisor.Supervisor` implements it; :mod:`scaling` (instances,
restarts, rolling hand-overs) and :mod:`recovery` (boot) use only these transitions, so
the machine's rules (one lock per instance, one start task, a generation per start) stay
in one place.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bolt_host.services.app_runtime import AppRuntime
    from bolt_host.services.processes import AppProcess


class Machine(Protocol):
    """The supervisor's state machine of one process, as its collaborators drive it."""

    async def start_one(self, runtime: AppRuntime, app: dict[str, Any]) -> dict[str, Any]:
        """Start one instance (idempotent); its context once ready."""

    async def stop_locked(self, runtime: AppRuntime, *, desired_after: str, by: str | None = None) -> dict[str, Any]:
        """Stop the instance; the caller holds ``runtime.lock``."""

    async def verify(self, app: dict[str, Any]) -> None:
        """The host's checks before a start; raises before anything changes."""

    def begin_start(self, runtime: AppRuntime, app: dict[str, Any], *, automatic: bool) -> asyncio.Task[Any]:
        """Reserve ``starting`` and create the start task; the caller holds ``runtime.lock``."""

    async def join_start(self, task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
        """Wait for a start task (outside the lock); its context, or its BoltError."""

    async def restart_one(self, runtime: AppRuntime, app: dict[str, Any], by: str | None) -> dict[str, Any]:
        """Stop the instance (if it runs), then start it; its context once ready."""

    async def persist(self, runtime: AppRuntime) -> None:
        """Write the instance's record and wait until it is on disk."""

    async def emit(self, event: str, runtime: AppRuntime) -> dict[str, Any]:
        """Publish an app event with the instance's context."""

    def context_of(self, runtime: AppRuntime) -> dict[str, Any]:
        """The instance's context object."""

    async def adopt(self, runtime: AppRuntime, process: AppProcess, record: dict[str, Any]) -> None:
        """Take over a process a previous host started (verified ours) as the instance's process."""

    def persist_soon(self, runtime: AppRuntime) -> None:
        """Write the instance's record without waiting for the disk."""
