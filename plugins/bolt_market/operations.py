"""Install, clone, upgrade, uninstall and cancel as host Tasks, driving the state machine.

Each operation is checked against the instance's state when it is requested
(400 naming the state otherwise), recorded as ``pending`` with its task id,
and run by a job on ``host.tasks`` (kind ``install`` for install/clone/upgrade,
``uninstall``, ``market-cancel``) whose phases move the state forward.  A job
watches the instance's cancel event while it downloads or starts the app, so a
cancel takes effect at once; cancelling a pending, downloading or installing
operation removes everything it made.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, overload

from bolt_host.plugin import TaskCancelled, TaskHandle, is_port_free, resolve_version

from . import lifecycle as lc
from .envelope import MarketError
from .identity import MarketUser
from .market import BACKEND, Market
from .packages import declared_defaults, missing_required_envs, put_on_host, requested_port, restrict_to_owner

CANCEL_WAIT_SECONDS = 120.0


@dataclass
class Plan:
    op: str
    user: str
    name: str
    package: str
    source: str
    version: str
    title: str | None = None
    envs: list[dict[str, str]] = field(default_factory=list)
    entrances: list[dict[str, Any]] = field(default_factory=list)
    clone_of: str | None = None
    delete_data: bool = False
    by: str | None = None  # who asked, when not the owner (an admin acting on a user's app)

    @property
    def actor(self) -> str:
        return self.by or self.user


# ---------------------------------------------------------------- planning


def refuse_state(name: str, state: str | None, op: str) -> MarketError:
    allowed = sorted(lc.allowed_ops(state))
    shown = state or "not installed"
    return MarketError(
        400, f"Cannot {op} {name}: the app is {shown} (allowed now: {', '.join(allowed) or 'nothing, wait'})"
    )


@overload
async def catalog_entry(market: Market, source_id: str, package: str, version: str) -> tuple[dict[str, Any], str]: ...
@overload
async def catalog_entry(
    market: Market, source_id: str, package: str, version: str | None
) -> tuple[dict[str, Any], str | None]: ...
async def catalog_entry(
    market: Market, source_id: str, package: str, version: str | None
) -> tuple[dict[str, Any], str | None]:
    """The source's entry for ``package`` and the exact version ``version`` (an npm range too) picks."""
    handle = market.sources.get(source_id)
    entry = await handle.find(package)
    if entry is None:
        raise MarketError(404, f"App not found: {package} in source {source_id}")
    if version is None:
        return entry, None
    resolved = entry_version(entry, version)
    if resolved is None:
        raise MarketError(404, f"App not found: {package} has no version {version} in source {source_id}")
    return entry, resolved


def entry_version(entry: dict[str, Any], version: str) -> str | None:
    return resolve_version(version, entry.get("versions") or [entry["version"]], {"latest": entry["version"]})


async def check_new_instance(market: Market, user: MarketUser, plan: Plan, entry: dict[str, Any]) -> None:
    """May ``user`` put ``plan.name`` on the host now?  Raises the Market's answer if not."""
    row = market.store.instance(plan.name)
    state = market.view(row)["state"] if row else None
    if row is not None and row["user"] != user.name and _still_held(market, plan.name, state):
        raise MarketError(400, f"The app name {plan.name} is taken on this host by another user; clone the app instead")
    if not lc.can(state, lc.INSTALL):
        raise refuse_state(plan.name, state, plan.op)
    if market.host.apps.get(plan.name) is not None and state != lc.INSTALL_FAILED:
        raise MarketError(400, f"An app named {plan.name} is already installed on this host outside the Market")
    _check_port(market, plan)
    bolt = entry.get("bolt") or {}
    missing = missing_required_envs(bolt, plan.envs)
    if missing:
        raise MarketError(
            422, f"Missing required envs: {', '.join(missing)}",
            {"type": "appenv", "missing": missing},
        )
    await market.payments.require_purchase(user, plan.source, entry)


def _check_port(market: Market, plan: Plan) -> None:
    """A requested entrance port must be in the host's range and free (no app, Market or not, holds it)."""
    port = requested_port(plan.entrances)
    if port is None:
        return
    low, high = market.host.settings.port_range
    if not low <= port <= high:
        raise MarketError(400, f"Port {port} is outside this host's port range {low}-{high}")
    live = {c.get("port") for c in market.host.supervisor.contexts()}
    asked = {requested_port(r.get("entrances") or []) for r in market.store.instances()
             if r["name"] != plan.name and _still_held(market, r["name"], market.view(r)["state"])}
    if port in live or port in asked or not is_port_free(port):
        raise MarketError(400, f"Port {port} is in use on this host")


def _still_held(market: Market, name: str, state: str | None) -> bool:
    """Whether another user's record still holds ``name``: something is on the host, or an operation is not done.

    A finished record (uninstalled, canceled, failed) with nothing on the host is history:
    the next install takes the name over.
    """
    return market.host.apps.get(name) is not None or not lc.can(state, lc.INSTALL)


def submit(market: Market, plan: Plan, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the instance as ``pending`` (or ``upgrading``) and queue its job."""
    market.clear_cancel(plan.name)
    if plan.op == lc.UPGRADE:
        record = _queue(market, plan, "install", _upgrade_job(market, plan, previous or {}))
        # The new envs belong to the new version: kept aside until the upgrade succeeds.
        pending = {"version": plan.version, "envs": plan.envs} if plan.envs else None
        market.set_state(plan.name, lc.UPGRADING, opType=lc.UPGRADE, taskId=record["id"], progress=0.0,
                         message=f"upgrade to {plan.version} queued", reason=None, pendingUpgrade=pending)
    else:
        record = _queue(market, plan, "install", _install_job(market, plan))
        existing = market.store.instance(plan.name) or {}
        market.store.save_instance({
            "name": plan.name, "user": plan.user, "rawAppName": plan.package, "source": plan.source,
            "version": plan.version, "title": plan.title, "state": lc.PENDING, "opType": lc.INSTALL,
            "progress": 0.0, "message": "queued", "reason": None, "envs": plan.envs,
            "entrances": plan.entrances, "cloneOf": plan.clone_of, "taskId": record["id"],
            "createdAt": existing.get("createdAt") if existing.get("user") == plan.user else None,
        })
    market.store.log(plan.op, plan.user, plan.name, source=plan.source, version=plan.version, by=plan.actor,
                     task_id=record["id"], status="accepted", message=f"{plan.op} {plan.package} {plan.version}")
    return record


def _queue(market: Market, plan: Plan, kind: str, job: Any) -> dict[str, Any]:
    # Tasks and records belong to the instance's owner, whoever asked (``by``).
    meta = {"backend": BACKEND, "op": plan.op, "user": plan.user, "by": plan.actor, "instance": plan.name,
            "source": plan.source}
    return market.host.tasks.submit(kind, plan.name, plan.version, job, dedupe_key=f"market:{plan.name}", meta=meta)


# ---------------------------------------------------------------- jobs


def _progress(market: Market, task: TaskHandle, name: str, share: float):
    # Kept on the task (memory) while it runs; views read it from there, so no db write per chunk.
    def report(received: int, total: int | None) -> None:
        if total:
            task.progress(share * min(received / total, 1.0))

    return report


def _advance(market: Market, plan: Plan, phase: str, message: str) -> None:
    if market.cancel_event(plan.name).is_set():
        raise TaskCancelled("canceled by the user")
    market.set_state(plan.name, phase, message=message)


def _install_job(market: Market, plan: Plan):
    host = market.host

    async def run(task: TaskHandle) -> dict[str, Any]:
        # Each _advance checks for a cancel before the phase moves on, so a cancel seen
        # there is handled as the phase the job was still in.
        phase = lc.DOWNLOADING
        try:
            _advance(market, plan, phase, f"downloading {plan.package} {plan.version}")
            task.log(f"=== downloading {plan.package} {plan.version} from {plan.source}")
            handle = market.sources.get(plan.source)
            progress = _progress(market, task, plan.name, 0.6)
            fetching = handle.fetch(plan.package, plan.version, progress)
            path, app_source = await market.until_cancelled(plan.name, fetching)
            _advance(market, plan, lc.INSTALLING, "installing")
            phase = lc.INSTALLING
            task.log(f"=== installing as {plan.name}")
            app_source = {**app_source, "user": plan.user}
            app = await put_on_host(host, path, app_source, plan.name, plan.package, plan.title,
                                    upgrade=host.apps.get(plan.name) is not None,
                                    cancel=market.cancel_event(plan.name))
            await restrict_to_owner(host, plan.name, plan.user)
            task.progress(0.8)
            _advance(market, plan, lc.INITIALIZING, "starting")
            phase = lc.INITIALIZING
            task.log(f"=== starting {plan.name}")
            try:
                context = await market.until_cancelled(plan.name, host.supervisor.start_app(app))
            except TaskCancelled:
                raise
            except Exception as exc:
                reason = getattr(exc, "message", None) or str(exc)
                market.set_state(plan.name, lc.STOPPED, message="installed, but the app did not start", reason=reason)
                _log_outcome(market, plan, "failed", reason, task.id)
                raise MarketError(500, f"the app did not start: {reason}") from None
            market.set_state(plan.name, lc.RUNNING, progress=1.0, version=app["version"], message="running",
                             reason=None)
            _log_outcome(market, plan, "succeeded", f"{plan.name} {app['version']} running", task.id)
            task.log(f"=== {plan.name} {app['version']} running on port {context.get('port')}")
            return {"name": plan.name, "version": app["version"], "state": lc.RUNNING}
        except TaskCancelled:
            await _undo_install(market, plan, phase)
            market.set_state(plan.name, lc.cancel_outcome(phase), message="canceled by the user", progress=0.0)
            _log_outcome(market, plan, "canceled", f"canceled while {phase}", task.id)
            raise
        except Exception as exc:
            if phase != lc.INITIALIZING:  # a start failure is recorded where it happens: the app stays, stopped
                reason = getattr(exc, "message", None) or str(exc)
                market.set_state(plan.name, lc.failed(phase), message=reason, reason=reason)
                _log_outcome(market, plan, "failed", reason, task.id)
            raise

    return run


async def _undo_install(market: Market, plan: Plan, phase: str) -> None:
    """Cancelling before the app runs leaves nothing behind; later it only stops the app."""
    host = market.host
    if phase in lc.TEAR_DOWN_ON_CANCEL or phase == lc.INITIALIZING:
        with contextlib.suppress(Exception):
            if host.supervisor.is_active(plan.name):
                await host.supervisor.stop_app(plan.name)
    if phase in lc.TEAR_DOWN_ON_CANCEL and host.apps.get(plan.name) is not None:
        await host.apps.delete(plan.name, delete_database=True, delete_public=True, delete_source=True)


def _upgrade_job(market: Market, plan: Plan, previous: dict[str, Any]):
    host = market.host
    stable = lc.RUNNING if previous.get("state") == lc.RUNNING else lc.STOPPED

    async def run(task: TaskHandle) -> dict[str, Any]:
        try:
            task.log(f"=== downloading {plan.package} {plan.version} from {plan.source}")
            handle = market.sources.get(plan.source)
            progress = _progress(market, task, plan.name, 0.6)
            fetching = handle.fetch(plan.package, plan.version, progress)
            path, app_source = await market.until_cancelled(plan.name, fetching)
            if market.cancel_event(plan.name).is_set():
                raise TaskCancelled("canceled by the user")
            task.log(f"=== upgrading {plan.name} to {plan.version}")
            app_source = {**app_source, "user": plan.user}
            app = await put_on_host(host, path, app_source, plan.name, plan.package, previous.get("title"),
                                    upgrade=True, cancel=market.cancel_event(plan.name))
            await restrict_to_owner(host, plan.name, plan.user)
        except TaskCancelled:
            market.set_state(plan.name, stable, message="upgrade canceled", reason="upgradeCancelByUser",
                             pendingUpgrade=None)
            _log_outcome(market, plan, "canceled", "upgrade canceled", task.id)
            raise
        except Exception as exc:
            reason = getattr(exc, "message", None) or str(exc)
            market.set_state(plan.name, "upgradeFailed", message=reason, reason=reason, pendingUpgrade=None)
            _log_outcome(market, plan, "failed", reason, task.id)
            raise
        state = lc.RUNNING if host.supervisor.is_active(plan.name) else lc.STOPPED
        envs = {"envs": plan.envs} if plan.envs else {}
        market.set_state(plan.name, state, version=app["version"], progress=1.0, source=plan.source,
                         message=f"upgraded to {app['version']}", reason=None, pendingUpgrade=None, **envs)
        _log_outcome(market, plan, "succeeded", f"upgraded to {app['version']}", task.id)
        return {"name": plan.name, "version": app["version"], "state": state}

    return run


def submit_uninstall(market: Market, user: MarketUser, names: list[str], delete_data: bool) -> dict[str, Any]:
    first = market.store.instance(names[0]) or {}
    plan = Plan(lc.UNINSTALL, first.get("user") or user.name, names[0], first.get("rawAppName") or names[0],
                first.get("source") or "", first.get("version") or "", delete_data=delete_data, by=user.name)
    for name in names:
        market.clear_cancel(name)
        market.set_state(name, lc.UNINSTALLING, opType=lc.UNINSTALL, message="uninstall queued")

    async def run(task: TaskHandle) -> dict[str, Any]:
        removed = []
        for name in names:
            task.log(f"=== uninstalling {name}")
            try:
                if market.host.apps.get(name) is not None:
                    await market.host.apps.delete(name, delete_database=delete_data, delete_public=True,
                                                  delete_source=True)
            except Exception as exc:
                reason = getattr(exc, "message", None) or str(exc)
                market.set_state(name, "uninstallFailed", message=reason, reason=reason)
                _log_outcome(market, plan, "failed", f"{name}: {reason}", task.id)
                raise
            market.set_state(name, lc.UNINSTALLED, message="uninstalled", reason=None, progress=0.0)
            removed.append(name)
        _log_outcome(market, plan, "succeeded", f"uninstalled {', '.join(removed)}", task.id)
        return {"uninstalled": removed}

    meta = {"backend": BACKEND, "op": lc.UNINSTALL, "user": plan.user, "by": plan.actor, "instance": names[0],
            "all": names}
    record = market.host.tasks.submit("uninstall", names[0], plan.version or None, run,
                                      dedupe_key=f"market:uninstall:{names[0]}", meta=meta)
    for name in names:
        market.store.update_instance(name, taskId=record["id"])
    market.store.log(lc.UNINSTALL, plan.user, names[0], by=plan.actor, task_id=record["id"], status="accepted",
                     message=f"uninstall {', '.join(names)}")
    return record


def submit_cancel(market: Market, user: MarketUser, row: dict[str, Any]) -> dict[str, Any]:
    name, target = row["name"], row.get("taskId")
    phase = row["state"]
    plan = _cancel_plan(user, row)
    market.set_state(name, f"{phase}Canceling", message="cancel requested")

    async def run(task: TaskHandle) -> dict[str, Any]:
        tasks = market.host.tasks
        record = tasks.get(target) if target is not None else None
        if target is None or record is None or record["status"] not in ("queued", "running"):
            market.set_state(name, f"{phase}CancelFailed", message="nothing to cancel")
            raise MarketError(400, f"{name} has no operation in progress")
        if record["status"] == "queued":
            tasks.cancel(target)
            market.set_state(name, lc.cancel_outcome(phase), message="canceled by the user", progress=0.0)
            _log_outcome(market, plan, "succeeded", f"canceled while {phase}", task.id)
            return {"name": name, "state": lc.cancel_outcome(phase)}
        market.cancel_event(name).set()
        tasks.cancel(target)
        final = await tasks.wait(target, timeout=CANCEL_WAIT_SECONDS)
        if final["status"] != "canceled":
            current = market.view(market.store.instance(name) or {"name": name, "state": phase})["state"]
            _log_outcome(market, plan, "failed", "the operation finished first", task.id)
            raise MarketError(400, f"{name} finished its operation before it could be canceled (now {current})")
        _log_outcome(market, plan, "succeeded", f"canceled while {phase}", task.id)
        state = (market.store.instance(name) or {}).get("state")
        return {"name": name, "state": state}

    meta = {"backend": BACKEND, "op": lc.CANCEL, "user": plan.user, "by": plan.actor, "instance": name,
            "target": target}
    record = market.host.tasks.submit("market-cancel", name, None, run, dedupe_key=f"market:cancel:{name}", meta=meta)
    market.store.log(lc.CANCEL, plan.user, name, by=plan.actor, task_id=record["id"], status="accepted",
                     message=f"cancel task {target}")
    return record


def _cancel_plan(user: MarketUser, row: dict[str, Any]) -> Plan:
    return Plan(lc.CANCEL, row["user"], row["name"], row.get("rawAppName") or row["name"], row.get("source") or "",
                row.get("version") or "", by=user.name)


def _log_outcome(market: Market, plan: Plan, status: str, message: str, task_id: int) -> None:
    market.store.log(plan.op, plan.user, plan.name, source=plan.source, version=plan.version, by=plan.actor,
                     task_id=task_id, status=status, message=message)


def plan_summary(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


def default_envs(
    entry: dict[str, Any], envs: list[dict[str, str]], configured: list[dict[str, str]] | None = None
) -> list[dict[str, str]]:
    """The request's envs, then the user's saved config (``PUT /apps/{id}/config``), then the manifest's defaults."""
    chosen = {e["envName"]: e["value"] for e in envs}
    for env in configured or []:
        chosen.setdefault(env["envName"], env["value"])
    for name, value in declared_defaults(entry.get("bolt") or {}).items():
        chosen.setdefault(name, value)
    return [{"envName": k, "value": v} for k, v in chosen.items()]
