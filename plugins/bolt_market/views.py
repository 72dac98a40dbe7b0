"""How the Market shows catalog entries and instances (the Olares shapes)."""

from __future__ import annotations

import time
from typing import Any

from . import lifecycle as lc
from .market import Market


def app_info(entry: dict[str, Any], source_id: str) -> dict[str, Any]:
    bolt = entry.get("bolt") or {}
    title = bolt.get("displayName") or entry["name"]
    simple = {
        "app_id": entry["name"],
        "app_name": entry["name"],
        "app_title": title,
        "app_version": entry["version"],
        "app_description": entry.get("description") or "",
        "categories": list(bolt.get("tags") or []),
        "app_labels": list(entry.get("keywords") or []),
        "price": bolt.get("price"),
        "versions": list(entry.get("versions") or [entry["version"]]),
    }
    return {
        "type": "app-info-latest",
        "timestamp": int(time.time()),
        "version": entry["version"],
        "source": source_id,
        "app_simple_info": simple,
        "raw_data": {
            "id": entry["name"],
            "name": entry["name"],
            "title": title,
            "version": entry["version"],
            "entrances": bolt.get("entrances") or [],
            "envs": bolt.get("envs") or [],
            "price": bolt.get("price"),
            "sources": entry.get("sources") or [entry.get("source")],
            "install": install_of(entry),
        },
    }


def install_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The host's install preview of a catalog entry: ``{startFrom, startCommand, serverless,
    dependencies, installScripts, problem}`` (None for an entry that has none)."""
    install = entry.get("install")
    return dict(install) if isinstance(install, dict) else None


def app_details(entry: dict[str, Any], source_id: str) -> dict[str, Any]:
    """A ``POST /apps`` item: the app's info plus ``app_info.app_entry``, the entry the real
    service returns, with the entrances a client opens."""
    bolt = entry.get("bolt") or {}
    title = bolt.get("displayName") or entry["name"]
    app_entry = {
        "id": entry["name"],
        "appID": entry["name"],
        "name": entry["name"],
        "cfgType": "app",
        "chartName": entry["name"],
        "title": title,
        "version": entry["version"],
        "versionName": entry["version"],
        "description": entry.get("description") or "",
        "categories": list(bolt.get("tags") or []),
        "developer": entry.get("author") if isinstance(entry.get("author"), str) else "",
        "icon": (bolt.get("files") or {}).get("icon", "") if isinstance(bolt.get("files"), dict) else "",
        "entrances": entrances_of(entry),
        "envs": bolt.get("envs") or [],
        "price": bolt.get("price"),
        "source": source_id,
        "install": install_of(entry),
    }
    return {**app_info(entry, source_id), "app_info": {"app_entry": app_entry}}


def entrances_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The app's entrances: ``bolt.entrances`` as declared, else one for a server app, opened
    through the host at ``/x/<name>`` + ``bolt.index`` on ``bolt.port`` (0: from the pool)."""
    bolt = entry.get("bolt") or {}
    if isinstance(bolt.get("entrances"), list) and bolt["entrances"]:
        return [dict(item) for item in bolt["entrances"] if isinstance(item, dict)]
    if bolt.get("server") is False or not (bolt.get("main") or bolt.get("start")):
        return []
    index = "/" + str(bolt.get("index") or "/").lstrip("/")
    port = bolt.get("port") if isinstance(bolt.get("port"), int) and not isinstance(bolt.get("port"), bool) else 0
    return [{
        "name": entry["name"],
        "title": bolt.get("displayName") or entry["name"],
        "host": entry["name"],
        "port": port,
        "url": f"/x/{entry['name']}{index}",
        "authLevel": "private",
        "openMethod": "default",
        "invisible": False,
    }]


def app_state(market: Market, row: dict[str, Any]) -> dict[str, Any]:
    context = market.host.supervisor.context(row["name"])
    entrances = []
    app = market.host.apps.get(row["name"]) or {}
    if context is not None and context.get("port"):
        entrances.append({
            "name": row["name"],
            "state": "running" if context["status"] == "running" else "stopped",
            "url": f"/x/{row['name']}{app.get('index') or '/'}",
            "port": context.get("port"),
        })
    progress = _progress(market, row)
    return {
        "version": row.get("version"),
        "status": {
            "name": row["name"],
            "rawAppName": row.get("rawAppName"),
            "title": row.get("title") or app.get("displayName") or row["name"],
            "state": row.get("state"),
            "opType": row.get("opType"),
            "cfgType": "app",
            "progress": f"{progress * 100:.2f}",
            "message": row.get("message") or "",
            "reason": row.get("reason") or "",
            "user": row.get("user"),
            "source": row.get("source"),
            "cloneOf": row.get("cloneOf"),
            "taskId": row.get("taskId"),
            "installed": lc.is_installed(row.get("state")),
            "entranceStatuses": entrances,
            "requestedEntrances": row.get("entrances") or [],
            "updatedAt": row.get("updatedAt"),
        },
    }


def simple_state(market: Market, row: dict[str, Any]) -> dict[str, Any]:
    """The state and its progress only: no entrances, nothing asked of the supervisor or the sources."""
    status = {k: row.get(k) for k in ("name", "rawAppName", "title", "state", "opType", "message", "reason",
                                        "cloneOf", "updatedAt")}
    status["progress"] = f"{_progress(market, row) * 100:.2f}"
    return {"version": row.get("version"), "status": status}


def _progress(market: Market, row: dict[str, Any]) -> float:
    """0..1: a running task's own figure (kept in memory while it runs), else the recorded one."""
    task = market.host.tasks.get(row["taskId"]) if row.get("taskId") is not None else None
    if task is not None and task["status"] in ("queued", "running"):
        return float(task.get("progress") or 0.0)
    return float(row.get("progress") or 0.0)


async def user_sources(market: Market, rows: list[dict[str, Any]], with_info: bool) -> dict[str, Any]:
    """``{source id: {type, app_info_latest?, app_state_latest}}`` for one user's view."""
    sources: dict[str, Any] = {}
    for handle in market.sources.all():
        item: dict[str, Any] = {"type": handle.public_type, "name": handle.config.get("name")}
        if with_info:
            item["app_info_latest"] = [app_info(e, handle.id) for e in await handle.entries()]
            item["others"] = {"tags": sorted({t for e in handle.cached_entries()
                                              for t in (e.get("bolt") or {}).get("tags", []) if isinstance(t, str)})}
            if handle.error:
                item["error"] = handle.error
        item["app_state_latest"] = [app_state(market, r) for r in rows if r.get("source") == handle.id]
        sources[handle.id] = item
    return sources


def task_view(task: dict[str, Any]) -> dict[str, Any]:
    """A host task in the Market's task shape (``b.6``), keeping the host's fields too."""
    meta = task.get("meta") or {}
    return {
        "id": str(task["id"]),
        "type": meta.get("op") or task["kind"],
        "status": task["status"],
        "app_name": task["module"],
        "user": meta.get("user"),
        "source": meta.get("source"),
        "version": task.get("version"),
        "progress": task.get("progress"),
        "created_at": task.get("create_time"),
        "started_at": task.get("start_time"),
        "completed_at": task.get("end_time"),
        "result": task.get("result"),
        "error_msg": task.get("error"),
        "metadata": meta,
    }
