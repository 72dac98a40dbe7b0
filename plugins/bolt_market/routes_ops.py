"""Operation routes: install, clone, cancel, upgrade, uninstall, open, resume, stop.

Async (``sync`` false): 200 with ``{task_id}`` at once.  Sync: wait for the
task; 200 with the outcome, 500 ``"... failed: reason"``, or, when the bounded
wait runs out, 202 ``"Task is still running, query task status for result"``
with the ``task_id`` (the real service's behaviour).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import host_of

from . import lifecycle as lc
from .calls import market_call
from .envelope import MarketError, bool_field, failure, market_route, read_json, reply, text_field
from .identity import MarketUser, require_market_user
from .market import Market, market_of
from .operations import (
    Plan,
    catalog_entry,
    check_new_instance,
    default_envs,
    refuse_state,
    submit,
    submit_cancel,
    submit_uninstall,
)
from .packages import clone_name, declared_only, instance_name, parse_entrances, parse_envs

SYNC_WAIT_DEFAULT = 600.0
SYNC_WAIT_MAX = 1800.0

MESSAGES = {
    "install": ("App installation started successfully", "App installation completed successfully", "Installation"),
    "clone": ("App clone installation started successfully", "App clone installation completed successfully",
              "Clone installation"),
    "cancel": ("App installation cancellation started successfully",
               "App installation cancellation completed successfully", "Cancellation"),
    "upgrade": ("App upgrade started successfully", "App upgrade completed successfully", "Upgrade"),
    "uninstall": ("App uninstallation started successfully", "App uninstallation completed successfully",
                  "Uninstallation"),
}


def _sync_wait(body: dict[str, Any]) -> float:
    raw = body.get("timeout", SYNC_WAIT_DEFAULT)
    if not isinstance(raw, int | float) or isinstance(raw, bool) or raw < 0:
        raise MarketError(400, "'timeout' must be a number of seconds")
    return min(float(raw), SYNC_WAIT_MAX)


async def _answer(market: Market, op: str, record: dict[str, Any], body: dict[str, Any]) -> Response:
    started, completed, noun = MESSAGES[op]
    if not bool_field(body, "sync"):
        return reply({"task_id": str(record["id"])}, started)
    try:
        final = await market.host.tasks.wait(record["id"], timeout=_sync_wait(body))
    except TimeoutError:
        return reply({"task_id": str(record["id"])}, "Task is still running, query task status for result", status=202)
    if final["status"] == "succeeded":
        return reply({"task_id": str(record["id"]), **(final.get("result") or {})}, completed)
    reason = final.get("error") or final["status"]
    return failure(500, f"{noun} failed: {reason}", {"task_id": str(record["id"]), "status": final["status"]})


def _owned(market: Market, user: MarketUser, name: str) -> dict[str, Any]:
    return market.instance_for(user, name)


@market_route
async def install(request: Request) -> Response:
    app_id = request.path_params["id"]
    user, body, market = await market_call(request, "market.install", app_id)
    source = text_field(body, "source")
    package = text_field(body, "app_name", "appName")
    version = text_field(body, "version")
    if package != app_id:
        raise MarketError(400, f"app_name {package!r} does not match the app id {app_id!r} in the path")
    entry, version = await catalog_entry(market, source, package, version)
    envs = default_envs(entry, declared_only(entry, parse_envs(body.get("envs"))),
                        market.store.app_config(user.name, package)["envs"])
    plan = Plan(lc.INSTALL, user.name, instance_name(package), package, source, version, envs=envs)
    await check_new_instance(market, user, plan, entry)
    return await _answer(market, "install", submit(market, plan), body)


@market_route
async def clone(request: Request) -> Response:
    app_id = request.path_params["id"]
    user, body, market = await market_call(request, "market.install", app_id)
    source = text_field(body, "source")
    package = text_field(body, "app_name", "appName", required=False) or app_id
    title = text_field(body, "title")
    version = text_field(body, "version", required=False)
    entry, version = await catalog_entry(market, source, package, version)
    envs = default_envs(entry, declared_only(entry, parse_envs(body.get("envs"))),
                        market.store.app_config(user.name, package)["envs"])
    name = clone_name(package, body)
    plan = Plan(lc.CLONE, user.name, name, package, source, version or entry["version"], title=title, envs=envs,
                entrances=parse_entrances(body.get("entrances")), clone_of=instance_name(package))
    await check_new_instance(market, user, plan, entry)
    return await _answer(market, "clone", submit(market, plan), body)


@market_route
async def cancel(request: Request) -> Response:
    name = request.path_params["id"]
    user, body, market = await market_call(request, "market.cancel", name, body_required=False)
    row = _owned(market, user, name)
    if not lc.can(row["state"], lc.CANCEL):
        raise refuse_state(name, row["state"], "cancel")
    return await _answer(market, "cancel", submit_cancel(market, user, row), body)


@market_route
async def upgrade(request: Request) -> Response:
    name = request.path_params["id"]
    user, body, market = await market_call(request, "market.upgrade", name)
    row = _owned(market, user, name)
    if not lc.can(row["state"], lc.UPGRADE):
        raise refuse_state(name, row["state"], "upgrade")
    source = text_field(body, "source", required=False) or row["source"]
    version = text_field(body, "version")
    package = row["rawAppName"]
    named = text_field(body, "app_name", "appName", required=False)
    if named not in (None, package, name):
        raise MarketError(400, f"app_name {named!r} does not match the app {name!r}")
    entry, version = await catalog_entry(market, source, package, version)
    envs = declared_only(entry, parse_envs(body["envs"])) if "envs" in body else []
    await market.payments.require_purchase(user, source, entry)
    plan = Plan(lc.UPGRADE, row["user"], name, package, source, version, title=row.get("title"), envs=envs,
                by=user.name)
    return await _answer(market, "upgrade", submit(market, plan, previous=row), body)


@market_route
async def uninstall(request: Request) -> Response:
    name = request.path_params["id"]
    user, body, market = await market_call(request, "market.uninstall", name, body_required=False)
    row = _owned(market, user, name)
    version = text_field(body, "version", required=False)
    if version is not None and version != row.get("version"):
        raise MarketError(404, f"{name} is not installed at version {version}")
    names = [name]
    if bool_field(body, "all"):
        names += [r["name"] for r in _clones(market, row)]
    for each in names:
        state = market.view(market.store.instance(each) or {"name": each, "state": None})["state"]
        if not lc.can(state, lc.UNINSTALL):
            raise refuse_state(each, state, "uninstall")
    delete_data = bool_field(body, "deleteData") or bool_field(body, "delete_data")
    return await _answer(market, "uninstall", submit_uninstall(market, user, names, delete_data), body)


def _clones(market: Market, row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        market.view(r) for r in market.store.instances(row["user"])
        if r["name"] != row["name"] and (r.get("cloneOf") == row["name"] or r.get("rawAppName") == row["rawAppName"])
        and lc.is_installed(market.view(r)["state"])
    ]


# ---------------------------------------------------------------- runtime ops


def _where(market: Market, name: str, context: dict[str, Any] | None) -> dict[str, Any]:
    app = market.host.apps.get(name) or {}
    index = app.get("index") or "/"
    url = f"{market.host.settings.url}/x/{name}{index}"
    return {"appName": name, "url": url, "path": f"/x/{name}{index}",
            "port": (context or {}).get("port"), "status": (context or {}).get("status")}


def _app_name_field(body: dict[str, Any]) -> str:
    name = text_field(body, "appName", "app_name", "id", "name")
    assert name is not None
    return name


async def _start(market: Market, row: dict[str, Any], op: str) -> dict[str, Any]:
    name = row["name"]
    app = market.host.apps.get(name)
    if app is None:
        raise MarketError(404, f"App not found: {name}")
    market.set_state(name, lc.RESUMING, opType=lc.RESUME, message="starting")
    try:
        context = await market.host.supervisor.start_app(app)
    except Exception as exc:
        reason = getattr(exc, "message", None) or str(exc)
        market.set_state(name, "resumeFailed", message=reason, reason=reason)
        market.store.log(op, row["user"], name, status="failed", message=reason)
        raise MarketError(500, f"{name} did not start: {reason}") from None
    market.set_state(name, lc.RUNNING, message="running", reason=None)
    market.store.log(op, row["user"], name, status="succeeded", message="started")
    return context


@market_route
async def open_app(request: Request) -> Response:
    body = await read_json(request, required=True)
    name = text_field(body, "id", "appName", "app_name")
    user = await require_market_user(request, "market.open", name)
    market = market_of(host_of(request))
    row = _owned(market, user, name)
    if row["state"] == lc.RUNNING:
        context = market.host.supervisor.context(name)
    elif row["state"] in (lc.STOPPED, "resumeFailed", "stopFailed"):
        context = await _start(market, row, "open")
    else:
        raise refuse_state(name, row["state"], "open")
    return reply(_where(market, name, context), "Application opened successfully")


async def _named_in_body(request: Request, action: str) -> tuple[dict[str, Any], str, Market, dict[str, Any]]:
    """``(body, app name, market, the caller's row)`` for a route that names the app in its body
    (it must read the body to know what the permission check is about)."""
    body = await read_json(request, required=True)
    name = _app_name_field(body)
    user = await require_market_user(request, action, name)
    market = market_of(host_of(request))
    return body, name, market, _owned(market, user, name)


@market_route
async def resume(request: Request) -> Response:
    _, name, market, row = await _named_in_body(request, "market.resume")
    if row["state"] == lc.RUNNING:
        context = market.host.supervisor.context(name)
    elif lc.can(row["state"], lc.RESUME):
        context = await _start(market, row, "resume")
    else:
        raise refuse_state(name, row["state"], "resume")
    return reply({"appName": name, "type": "app", "result": _where(market, name, context)},
                 "Application resumed successfully")


@market_route
async def stop(request: Request) -> Response:
    body, name, market, row = await _named_in_body(request, "market.stop")
    rows = [row, *(_clones(market, row) if bool_field(body, "all") else [])]
    for each in rows:
        if each["state"] not in (lc.RUNNING, lc.STOPPED, lc.RESUMING, "stopFailed"):
            raise refuse_state(each["name"], each["state"], "stop")
    stopped = await asyncio.gather(*(_stop_one(market, each) for each in rows))
    return reply({"appName": name, "type": "app", "result": {"stopped": stopped}}, "Application stopped successfully")


async def _stop_one(market: Market, row: dict[str, Any]) -> dict[str, Any]:
    name = row["name"]
    market.set_state(name, lc.STOPPING, opType=lc.STOP, message="stopping")
    try:
        if market.host.supervisor.is_active(name):
            await market.host.supervisor.stop_app(name)
    except Exception as exc:
        reason = getattr(exc, "message", None) or str(exc)
        market.set_state(name, "stopFailed", message=reason, reason=reason)
        market.store.log("stop", row["user"], name, status="failed", message=reason)
        raise MarketError(500, f"{name} did not stop: {reason}") from None
    market.set_state(name, lc.STOPPED, message="stopped", reason=None)
    market.store.log("stop", row["user"], name, status="succeeded", message="stopped")
    return {"name": name, "state": lc.STOPPED}
