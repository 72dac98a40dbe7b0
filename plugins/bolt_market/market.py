"""The Market's state for one host, kept in ``host.state["market"]``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from bolt_host.plugin import Host, SystemCpu, TaskCancelled

from . import lifecycle as lc
from .envelope import MarketError
from .identity import MarketUser
from .sources import Sources
from .store import MarketStore

# Tasks of these kinds belong to the Market (their records carry meta.backend == "market").
BACKEND = "market"


@dataclass
class Market:
    host: Host
    store: MarketStore
    sources: Sources
    payments: Any = None
    started_at: float = field(default_factory=time.time)
    cpu: SystemCpu = field(default_factory=SystemCpu)  # the machine's CPU use, measured from start-up on
    _cancel_events: dict[str, asyncio.Event] = field(default_factory=dict)

    @classmethod
    def create(cls, host: Host) -> Market:
        from .payments import Payments

        market = cls(host=host, store=MarketStore(host.db), sources=Sources(host))
        market.payments = Payments(market)
        return market

    # instances -----------------------------------------------------------------
    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with its state reconciled against the host (app removed, process stopped or crashed)."""
        row = dict(row)
        state = row.get("state")
        if state in lc.IN_FLIGHT or state in (lc.UNINSTALLING, lc.STOPPING) or not lc.is_installed(state):
            return row
        if state == lc.INSTALL_FAILED:  # the record of a failure, whether or not it left anything on the host
            return row
        if self.host.apps.get(row["name"]) is None:
            row["state"] = lc.UNINSTALLED
        elif state in (lc.RUNNING, lc.STOPPED):
            context = self.host.supervisor.context(row["name"])
            live = context is not None and context["status"] in ("starting", "running", "backoff")
            row["state"] = lc.RUNNING if live else lc.STOPPED
            if context is not None and context["status"] in ("crashed", "failed") and context.get("reason"):
                row["reason"] = context["reason"]
        return row

    def instance_for(self, user: MarketUser, name: str) -> dict[str, Any]:
        """The instance ``name`` as ``user`` may see it: owners and admins; 404 for everyone else."""
        row = self.store.instance(name)
        if row is None or (row["user"] != user.name and not user.is_admin):
            raise MarketError(404, f"App not found: {name}")
        return self.view(row)

    def visible_instances(self, user: MarketUser, everyone: bool = False) -> list[dict[str, Any]]:
        rows = self.store.instances(None if (everyone and user.is_admin) else user.name)
        return [self.view(r) for r in rows]

    def set_state(self, name: str, state: str, **changes: Any) -> dict[str, Any] | None:
        return self.store.update_instance(name, state=state, **changes)

    # cancellation ----------------------------------------------------------------
    def cancel_event(self, name: str) -> asyncio.Event:
        event = self._cancel_events.get(name)
        if event is None:
            event = self._cancel_events[name] = asyncio.Event()
        return event

    def clear_cancel(self, name: str) -> None:
        self._cancel_events.pop(name, None)

    async def until_cancelled(self, name: str, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` unless the operation on ``name`` is cancelled first (then TaskCancelled)."""
        event = self.cancel_event(name)
        work = asyncio.ensure_future(awaitable)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise TaskCancelled("canceled by the user")

    # tasks -------------------------------------------------------------------------
    def tasks(self, user: MarketUser | None = None) -> list[dict[str, Any]]:
        found = [t for t in self.host.tasks.list() if (t.get("meta") or {}).get("backend") == BACKEND]
        if user is not None and not user.is_admin:
            found = [t for t in found if t["meta"].get("user") == user.name]
        return found

    async def close(self) -> None:
        # Cancel events stay unset: a host shutting down fails running jobs, it does not undo installs.
        await self.sources.close()


def market_of(host: Host) -> Market:
    market = host.state.get("market")
    if market is None:
        raise MarketError(503, "The Market is starting; try again shortly")
    return market
