"""Settings, system status, logs, runtime state and the admin-only developer endpoints."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import host_of, lazy_module

from . import __version__
from . import lifecycle as lc
from .calls import market_call
from .envelope import MarketError, float_query, int_query, market_route, reply
from .identity import require_market_admin, require_market_user
from .market import Market, market_of
from .views import app_state, task_view

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_module("psutil")  # about 0.9 MB: imported at the first system status

MAX_SETTINGS_BYTES = 16 * 1024


@market_route
async def system_status(request: Request) -> Response:
    user = await require_market_user(request, "market.read")
    host = host_of(request)
    market = market_of(host)
    rows = [r for r in market.visible_instances(user) if lc.is_installed(r["state"])]
    cpu = memory = 0.0
    running = 0
    for row in rows:
        context = host.supervisor.context(row["name"])
        if context is not None and context["status"] == "running":
            running += 1
            cpu += float(context.get("cpu") or 0.0)
            memory += float(context.get("memory") or 0)
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage(str(host.settings.data_dir))
    data = {
        "user_info": {
            "username": user.name,
            "role": "admin" if user.is_admin else "normal",
            "roles": list(user.record.get("roles") or []),
            "displayName": user.record.get("displayName") or user.name,
            "email": user.record.get("email"),
        },
        "cur_user_resource": {
            "apps": len(rows),
            "running": running,
            "cpu": {"usage": round(cpu, 2), "unit": "percent"},
            "memory": {"usage": int(memory), "unit": "bytes"},
        },
        "cluster_resource": {
            "cpu": {"total": os.cpu_count() or 1, "usage": market.cpu.percent()},
            "memory": {"total": vm.total, "used": vm.total - vm.available, "available": vm.available},
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free, "path": str(host.settings.data_dir)},
        },
        "terminus_version": {"version": host.version, "market_version": __version__, "backend": "bolt-host"},
    }
    return reply(data, "System status aggregation complete")


# ---------------------------------------------------------------- sources and settings


@market_route
async def list_sources(request: Request) -> Response:
    await require_market_user(request, "market.read")
    market = market_of(host_of(request))
    return reply([h.describe() for h in market.sources.all()], "Market source configuration retrieved successfully")


@market_route
async def add_source(request: Request) -> Response:
    user, body, market = await market_call(request, "market.sources", admin=True)
    handle, created = await market.sources.add(body, market.payments.check_config)
    await handle.entries(refresh=True)
    market.store.log("source", user.name, None, source=handle.id, status="succeeded",
                     message=("added" if created else "updated") + f" {handle.public_type} source {handle.id}")
    message = "Market source added successfully" if created else "Market source updated successfully"
    return reply([h.describe() for h in market.sources.all()], message)


@market_route
async def delete_source(request: Request) -> Response:
    source_id = request.path_params["id"]
    user = await require_market_admin(request, "market.sources")
    market = market_of(host_of(request))
    await market.sources.remove(source_id)
    market.store.log("source", user.name, None, source=source_id, status="succeeded", message=f"deleted {source_id}")
    return reply([h.describe() for h in market.sources.all()], "Market source deleted successfully")


def _settings_view(market: Market, user: str) -> dict[str, Any]:
    settings = market.store.settings(user)
    settings.setdefault("selected_source", "market.bolt")
    return settings


@market_route
async def get_settings(request: Request) -> Response:
    user = await require_market_user(request, "market.read")
    market = market_of(host_of(request))
    return reply(_settings_view(market, user.name), "Market settings retrieved successfully")


@market_route
async def put_settings(request: Request) -> Response:
    user, body, market = await market_call(request, "market.settings")
    if len(json.dumps(body)) > MAX_SETTINGS_BYTES:
        raise MarketError(400, "Market settings are limited to 16 KiB")
    selected = body.get("selected_source")
    if selected is not None:
        market.sources.get(selected if isinstance(selected, str) else "")
    settings = {**market.store.settings(user.name), **body}
    market.store.save_settings(user.name, settings)
    return reply(_settings_view(market, user.name), "Market settings updated successfully")


# ---------------------------------------------------------------- logs and runtime


@market_route
async def logs(request: Request) -> Response:
    user = await require_market_user(request, "market.logs")
    market = market_of(host_of(request))
    start = int_query(request, "start", 0, 0)
    requested = int_query(request, "size", 100, 1)
    size = min(requested, 1000)
    records = market.store.logs(
        user=None if user.is_admin else user.name,
        kind=request.query_params.get("type") or None,
        app=request.query_params.get("app") or None,
        start_time=float_query(request, "start_time"),
        end_time=float_query(request, "end_time"),
    )
    data = {"records": records[start : start + size], "total_count": len(records), "start": start, "size": size,
            "requested_size": requested}
    return reply(data, "Logs retrieved successfully")


def runtime_snapshot(market: Market, user: Any, query: dict[str, str]) -> dict[str, Any]:
    rows = market.visible_instances(user, everyone=True)
    wanted_user = query.get("user_id")
    if wanted_user:
        rows = [r for r in rows if r["user"] == wanted_user]
    if query.get("source_id"):
        rows = [r for r in rows if r.get("source") == query["source_id"]]
    if query.get("app_name"):
        rows = [r for r in rows if r["name"] == query["app_name"] or r.get("rawAppName") == query["app_name"]]
    app_states: dict[str, dict[str, Any]] = {}
    for row in rows:
        app_states.setdefault(row["user"], {})[row["name"]] = app_state(market, row)
    tasks = [task_view(t) for t in market.tasks(user)]
    if wanted_user:
        tasks = [t for t in tasks if t["user"] == wanted_user]
    if query.get("app_name"):
        tasks = [t for t in tasks if t["app_name"] == query["app_name"]]
    if query.get("task_status"):
        tasks = [t for t in tasks if t["status"] == query["task_status"]]
    if query.get("task_type"):
        tasks = [t for t in tasks if t["type"] == query["task_type"]]
    if query.get("source_id"):
        tasks = [t for t in tasks if t["source"] == query["source_id"]]
    return {"app_states": app_states, "tasks": tasks, "components": components(market), "timestamp": int(time.time())}


def components(market: Market) -> list[dict[str, Any]]:
    host = market.host
    active = [t for t in market.tasks() if t["status"] in ("queued", "running")]
    return [
        {"name": "task_executor", "status": "running" if host.started else "stopped", "active_tasks": len(active)},
        {"name": "sources", "status": "degraded" if any(h.error for h in market.sources.all()) else "healthy",
         "sources": [{"id": h.id, "type": h.public_type, "error": h.error} for h in market.sources.all()]},
        {"name": "catalog", "status": "healthy" if not host.catalog.errors() else "degraded",
         "last_refresh": host.catalog.last_refresh, "errors": host.catalog.errors()},
        {"name": "supervisor", "status": "running", "live_apps": len(host.supervisor.contexts())},
    ]


@market_route
async def runtime_state(request: Request) -> Response:
    user = await require_market_user(request, "market.runtime")
    market = market_of(host_of(request))
    if not user.is_admin and request.query_params.get("user_id") not in (None, "", user.name):
        raise MarketError(403, "Only admins can see other users' runtime state")
    data = runtime_snapshot(market, user, dict(request.query_params))
    return reply(data, "Runtime state retrieved successfully")


# ---------------------------------------------------------------- developer endpoints (admin)


def _cache_stats(market: Market) -> dict[str, Any]:
    sources = {}
    for handle in market.sources.all():
        entries = handle.cached_entries()
        sources[handle.id] = {
            "type": handle.public_type,
            "entries": len(entries),
            "bytes": len(json.dumps(entries, default=str)),
            "error": handle.error,
        }
    return {
        "sources": sources,
        "catalog_entries": len(market.host.catalog.entries()),
        "instances": len(market.store.instances()),
        "log_records": market.store.log_count(),
        "payment_records": market.payments.record_count(),
        "cancel_events": len(market._cancel_events),
        "python_objects_bytes": sys.getsizeof(market._cancel_events),
    }


def _users_data(market: Market) -> dict[str, Any]:
    users: dict[str, Any] = {}
    for row in market.store.instances():
        entry = users.setdefault(row["user"], {"instances": 0, "states": {}})
        entry["instances"] += 1
        state = market.view(row)["state"]
        entry["states"][state] = entry["states"].get(state, 0) + 1
    for name in market.store.settings_users():
        users.setdefault(name, {"instances": 0, "states": {}})["has_settings"] = True
    return users


@market_route
async def debug_memory(request: Request) -> Response:
    await require_market_admin(request, "market.debug")
    market = market_of(host_of(request))
    users = _users_data(market)
    data = {"users_data": users, "cache_stats": _cache_stats(market), "total_users": len(users),
            "total_sources": len(market.sources.all())}
    return reply(data, "Market information retrieved successfully")


@market_route
async def diagnostic(request: Request) -> Response:
    await require_market_admin(request, "market.debug")
    host = host_of(request)
    market = market_of(host)
    users = _users_data(market)
    data = {"cache_stats": _cache_stats(market), "users_data": users, "total_users": len(users),
            "total_sources": len(market.sources.all()), "is_running": bool(host.started),
            "uptime": round(time.time() - market.started_at, 3)}
    return reply(data, "Diagnostic information retrieved successfully")


@market_route
async def reload(request: Request) -> Response:
    user = await require_market_admin(request, "market.debug")
    market = market_of(host_of(request))
    for handle in market.sources.all():
        await handle.entries(refresh=True)
    market.store.log("reload", user.name, None, status="succeeded", message="source listings reloaded")
    return reply(None, "Cache data reloaded successfully")


def _is_stale(market: Market, row: dict[str, Any]) -> bool:
    """A finished record with nothing on the host: uninstalled, canceled or failed before install."""
    state = market.view(row)["state"]
    if state in lc.IN_FLIGHT or state in (lc.UNINSTALLING, lc.STOPPING) or state.endswith("Canceling"):
        return False
    finished = not lc.is_installed(state) or state == lc.INSTALL_FAILED
    return finished and market.host.apps.get(row["name"]) is None


@market_route
async def cleanup(request: Request) -> Response:
    user = await require_market_admin(request, "market.debug")
    market = market_of(host_of(request))
    stale = [r["name"] for r in market.store.instances() if _is_stale(market, r)]
    cleaned = market.store.remove_instances(stale) + market.payments.cleanup()
    market.store.log("cleanup", user.name, None, status="succeeded", message=f"removed {cleaned} stale records")
    return reply({"cleaned_count": cleaned}, "Cleanup completed successfully")
