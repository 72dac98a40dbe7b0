"""Status correction at start-up: operations a host stop cut off end in their failure state."""

from __future__ import annotations

from typing import Any

from . import lifecycle as lc
from .market import Market


def recover(market: Market) -> list[str]:
    """Move instances stuck in an in-flight state (their task died with the host) to where they really are."""
    fixed = []
    tasks = market.host.tasks
    for row in market.store.instances():
        state = row.get("state") or ""
        in_flight = state in lc.IN_FLIGHT or state in (lc.UNINSTALLING, lc.STOPPING) or state.endswith("Canceling")
        if not in_flight:
            continue
        task = tasks.get(row["taskId"]) if row.get("taskId") is not None else None
        if task is not None and task["status"] in ("queued", "running"):
            continue
        app = market.host.apps.get(row["name"])
        installed = app is not None
        _settle_pending_upgrade(market, row, app)
        if state == lc.UNINSTALLING:
            new_state = "uninstallFailed" if installed else lc.UNINSTALLED
        elif installed:
            new_state = lc.STOPPED
        else:
            phase = state.removesuffix("Canceling")
            new_state = lc.failed(phase) if not state.endswith("Canceling") else lc.cancel_outcome(phase)
        market.set_state(row["name"], new_state, message="the host stopped during the operation",
                         reason="interrupted by a host restart")
        fixed.append(row["name"])
    return fixed


def _settle_pending_upgrade(market: Market, row: dict[str, Any], app: dict[str, Any] | None) -> None:
    """An upgrade cut off after its swap keeps its envs (the new version runs); else they are dropped."""
    pending = row.get("pendingUpgrade")
    if not pending:
        return
    swapped = app is not None and app.get("version") == pending.get("version")
    market.store.update_instance(row["name"], pendingUpgrade=None, **({"envs": pending["envs"]} if swapped else {}))
