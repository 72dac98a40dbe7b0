"""Market data, app information, uploads and the upload source's deletions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bolt_host.plugin import host_of, render_readme

from .calls import market_call
from .envelope import MarketError, market_route, read_json, reply, text_field
from .identity import require_market_admin, require_market_user
from .market import Market, market_of
from .operations import default_envs, entry_version
from .packages import missing_required_envs, parse_envs
from .payments import price_of
from .sources import UPLOAD_SOURCE
from .uploads import find_uploaded, publish, receive_chart, upload_limit, validate_in_thread
from .views import app_details, app_info, simple_state, user_sources


@market_route
async def market_hash(request: Request) -> Response:
    await require_market_user(request, "market.read")
    market = market_of(host_of(request))
    return reply({"hash": await market.sources.fingerprint()}, "Market hash retrieved successfully")


async def _viewed_rows(request: Request) -> tuple[Market, str, list[dict[str, Any]]]:
    """The instances the caller asks to see (``user_id``, ``all`` for admins), and whose they are."""
    user = await require_market_user(request, "market.read")
    market = market_of(host_of(request))
    wanted = request.query_params.get("user_id") or user.name
    everyone = request.query_params.get("all") == "true"
    if (wanted != user.name or everyone) and not user.is_admin:
        raise MarketError(403, "Only admins can see other users' apps")
    rows = [market.view(r) for r in market.store.instances(None if everyone else wanted)]
    return market, "*" if everyone else wanted, rows


async def _user_data(request: Request, with_info: bool) -> dict[str, Any]:
    market, whose, rows = await _viewed_rows(request)
    return {
        "user_data": {
            "sources": await user_sources(market, rows, with_info),
            "hash": await market.sources.fingerprint(),
        },
        "user_id": whose,
        "timestamp": int(time.time()),
    }


@market_route
async def market_data(request: Request) -> Response:
    return reply(await _user_data(request, True), "Market data retrieved successfully")


@market_route
async def market_state(request: Request) -> Response:
    return reply(await _user_data(request, False), "Market state retrieved successfully")


@market_route
async def market_state_simple(request: Request) -> Response:
    """The states alone: no catalog hash and no source listing, so no source is asked anything."""
    market, whose, rows = await _viewed_rows(request)
    sources: dict[str, Any] = {}
    for row in rows:
        sources.setdefault(row.get("source") or "", {"app_state_latest": []})["app_state_latest"].append(
            simple_state(market, row))
    data = {"user_data": {"sources": sources, "hash": ""}, "user_id": whose, "timestamp": int(time.time())}
    return reply(data, "Market state retrieved successfully")


@market_route
async def apps_info(request: Request) -> Response:
    await require_market_user(request, "market.read")
    body = await read_json(request, required=True)
    market = market_of(host_of(request))
    wanted = body.get("apps")
    if not isinstance(wanted, list) or not wanted or len(wanted) > 500:
        raise MarketError(400, "'apps' must be a non-empty list of {appid, sourceDataName} (at most 500)")
    found, missing = [], []
    for item in wanted:
        if not isinstance(item, dict):
            raise MarketError(400, "Each entry of 'apps' must be an object {appid, sourceDataName}")
        app_id = text_field(item, "appid", "app_id", "id")
        source_id = text_field(item, "sourceDataName", "source", required=False)
        known = source_id is None or source_id in market.sources.ids()
        handles = ([market.sources.get(source_id)] if source_id else market.sources.all()) if known else []
        hit = None
        for handle in handles:
            entry = await handle.find(app_id)
            if entry is not None:
                hit = app_details(entry, handle.id)
                break
        if hit is None:
            missing.append({"appid": app_id, "sourceDataName": source_id})
        else:
            found.append(hit)
    return reply({"apps": found, "total_count": len(found), "not_found": missing},
                 "Apps information retrieved successfully")


@market_route
async def version_history(request: Request) -> Response:
    await require_market_user(request, "market.read")
    body = await read_json(request, required=True)
    market = market_of(host_of(request))
    name = text_field(body, "appName", "app_name")
    handle, entry = await find_entry(market, name, text_field(body, "source", required=False))
    times = await handle.release_times(name)
    bolt = entry.get("bolt") or {}
    notes = str(bolt.get("releaseNotes") or entry.get("description") or "")  # markdown, as Umbrel's releaseNotes
    rows = [
        {
            "appName": name,
            "version": version,
            "versionName": version,
            "mergedAt": times.get(version, ""),
            "upgradeDescription": notes if version == entry["version"] else "",
            "upgradeDescriptionHtml": render_readme(notes) if version == entry["version"] and notes else "",
            "source": handle.id,
        }
        for version in reversed(entry.get("versions") or [entry["version"]])
    ]
    return reply({"data": rows}, "Version history retrieved successfully")


@market_route
async def app_package(request: Request) -> Response:
    """The package as an install by this user would get it: its manifest and the envs it would run with."""
    user = await require_market_user(request, "market.read")
    market = market_of(host_of(request))
    name = request.path_params["id"]
    handle, entry = await find_entry(market, name, request.query_params.get("source") or None)
    asked = request.query_params.get("version") or entry["version"]
    version = entry_version(entry, asked)
    if version is None:
        raise MarketError(404, f"App not found: {name} has no version {asked} in source {handle.id}")
    manifest = await handle.manifest(name, version)
    config = market.store.app_config(user.name, name)
    bolt = manifest.get("bolt") if isinstance(manifest.get("bolt"), dict) else {}
    envs = default_envs({"bolt": bolt}, [], config["envs"])
    data = {"app_name": name, "source": handle.id, "version": version, "manifest": manifest, "config": config,
            "envs": envs, "missing_envs": missing_required_envs(bolt, envs),
            "requires_purchase": price_of(entry) is not None}
    return reply(data, "App package retrieved successfully")


@market_route
async def update_app_config(request: Request) -> Response:
    """Save this user's install configuration of a package: envs every later install or clone starts from."""
    user, body, market = await market_call(request, "market.settings")
    name = request.path_params["id"]
    if "envs" not in body:
        raise MarketError(400, "Missing required field: envs")
    envs = parse_envs(body["envs"])
    await find_entry(market, name, text_field(body, "source", required=False))
    saved = market.store.save_app_config(user.name, name, envs)
    market.store.log("config", user.name, name, status="succeeded",
                     message=f"install config: {', '.join(e['envName'] for e in envs) or 'no envs'}")
    return reply({"app_name": name, **saved}, "App config updated successfully")


async def find_entry(market: Market, name: str, source_id: str | None) -> tuple[Any, dict[str, Any]]:
    """``name``'s catalog entry in ``source_id``, or in the first source that offers it; 404 otherwise."""
    handles = [market.sources.get(source_id)] if source_id else market.sources.all()
    for handle in handles:
        entry = await handle.find(name)
        if entry is not None:
            return handle, entry
    raise MarketError(404, f"App not found: {name}")


@market_route
async def upload(request: Request) -> Response:
    host = host_of(request)
    user = await require_market_admin(request, "market.upload")
    market = market_of(host)
    source_id = request.query_params.get("source") or UPLOAD_SOURCE
    handle = market.sources.local(source_id)
    part, filename, fields = await receive_chart(request, handle.folder, upload_limit(host))
    if fields.get("source") and fields["source"] != source_id:
        try:
            handle = market.sources.local(fields["source"])
        except MarketError:
            part.unlink(missing_ok=True)
            raise
        moved = handle.folder / part.name
        handle.folder.mkdir(parents=True, exist_ok=True)
        part.replace(moved)
        part = moved
    manifest = await validate_in_thread(part, Path(host.settings.data_dir) / "cache" / "market")
    final = publish(part, handle.folder, manifest)
    entry = await handle.find(manifest["name"])
    market.store.log("upload", user.name, manifest["name"], source=handle.id, version=manifest["version"],
                     status="succeeded", message=f"uploaded {final.name}")
    info = app_info(entry, handle.id) if entry else {"name": manifest["name"], "version": manifest["version"]}
    data = {"filename": filename, "stored_as": final.name, "source": handle.id, "user_id": user.name,
            "app_info": info}
    return reply(data, "App package uploaded and processed successfully")


@market_route
async def delete_local_app(request: Request) -> Response:
    user, body, market = await market_call(request, "market.upload.delete", admin=True)
    name = text_field(body, "app_name", "appName")
    version = text_field(body, "app_version", "version")
    handle = market.sources.local(text_field(body, "source", required=False) or UPLOAD_SOURCE)
    path = find_uploaded(handle.folder, name, version)
    if path is None:
        raise MarketError(404, f"App not found: no uploaded {name} {version} in source {handle.id}")
    path.unlink()
    await handle.entries(refresh=True)
    market.store.log("delete-upload", user.name, name, source=handle.id, version=version, status="succeeded",
                     message=f"deleted {path.name}")
    data = {"app_name": name, "app_version": version, "user_id": user.name, "source": handle.id,
            "deleted_at": int(time.time())}
    return reply(data, f"App deleted successfully from {handle.id} source")
