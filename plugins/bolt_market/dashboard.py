"""Runtime dashboards: plain server-rendered HTML (no scripts), refreshed by a meta tag.

``/runtime/dashboard`` shows components, app states and tasks; ``/runtime/dashboard-app``
shows one app's processing flow (the state machine's path, where the app is on
it), its operations and the logs of its tasks.  Users see their own apps,
admins everyone's.  Every value is HTML-escaped.
"""

from __future__ import annotations

import html
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bolt_host.plugin import host_of

from . import lifecycle as lc
from .envelope import PREFIX, MarketError, market_route
from .identity import require_market_user
from .market import Market, market_of
from .routes_settings import runtime_snapshot

REFRESH_SECONDS = 5
LOG_TAIL_CHARS = 4000
FLOW = (lc.PENDING, lc.DOWNLOADING, lc.INSTALLING, lc.INITIALIZING, lc.RUNNING)
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fb}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d9dde7;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f7}.muted{color:#6b7385}
.state{display:inline-block;padding:0 .4rem;border-radius:.3rem;background:#e4e8f1}
.running,.succeeded{background:#d5f2dd}.stopped,.queued{background:#eceff4}
.failed,[class*=Failed]{background:#f8d7da}[class*=Cancel],.canceled{background:#fff0c2}
ol.flow{display:flex;gap:.5rem;list-style:none;padding:0}
ol.flow li{padding:.4rem .8rem;border-radius:1rem;background:#e4e8f1}
ol.flow li.done{background:#d5f2dd}ol.flow li.here{background:#1d4ed8;color:#fff}
ol.flow li.broken{background:#f8d7da}pre{background:#fff;border:1px solid #d9dde7;padding:.5rem;overflow:auto}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> HTMLResponse:
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'><style>{STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1><p class='muted'>Refreshed every {REFRESH_SECONDS} s; "
        f"generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>{body}</body></html>"
    )
    return HTMLResponse(document, headers={"Cache-Control": "no-store"})


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p class='muted'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _state(value: Any) -> str:
    return f"<span class='state {_e(value)}'>{_e(value)}</span>"


def _app_link(name: str) -> str:
    return f"<a href='{PREFIX}/runtime/dashboard-app?app={_e(name)}'>{_e(name)}</a>"


def _task_rows(tasks: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [_e(t["id"]), _e(t["type"]), _state(t["status"]), _app_link(t["app_name"]), _e(t["user"]),
         _e(f"{float(t.get('progress') or 0) * 100:.0f}%"), _e(t["created_at"]), _e(t["completed_at"]),
         _e(t["error_msg"])]
        for t in tasks
    ]


TASK_HEADERS = ["task", "type", "status", "app", "user", "progress", "created", "ended", "error"]


@market_route
async def dashboard(request: Request) -> Response:
    user = await require_market_user(request, "market.runtime")
    market = market_of(host_of(request))
    snapshot = runtime_snapshot(market, user, {})
    components = [
        [_e(c["name"]), _state(c["status"]), _e({k: v for k, v in c.items() if k not in ("name", "status")})]
        for c in snapshot["components"]
    ]
    apps = []
    for owner, states in sorted(snapshot["app_states"].items()):
        for name, item in sorted(states.items()):
            status = item["status"]
            apps.append([_e(owner), _app_link(name), _e(status["rawAppName"]), _e(status["source"]),
                         _state(status["state"]), _e(status["opType"]), _e(f"{status['progress']}%"),
                         _e(item["version"]), _e(status["message"] or status["reason"])])
    body = (
        f"<p>Signed in as <b>{_e(user.name)}</b>{' (admin: every user)' if user.is_admin else ''}.</p>"
        "<h2>Components</h2>" + _table(["component", "status", "details"], components, "No components")
        + "<h2>Apps</h2>"
        + _table(["user", "app", "package", "source", "state", "operation", "progress", "version", "message"],
                 apps, "No apps installed through the Market")
        + "<h2>Tasks</h2>" + _table(TASK_HEADERS, _task_rows(snapshot["tasks"][:200]), "No tasks")
    )
    return _page("Market runtime", body)


def _flow(state: str | None) -> str:
    if state in FLOW:
        reached = FLOW.index(state)
        steps = [("done" if i < reached else "here" if i == reached else "") for i in range(len(FLOW))]
    elif state in (lc.STOPPED, lc.UPGRADING, lc.RESUMING, lc.STOPPING):
        steps = ["done"] * (len(FLOW) - 1) + ["here"]
    else:
        phase = next((p for p in FLOW if state and state.startswith(p)), None)
        if phase is None and state:
            phase = next((p for p, failed in lc.FAILED_STATE.items() if failed == state and p in FLOW), None)
        reached = FLOW.index(phase) if phase else -1
        steps = [("done" if i < reached else "broken" if i == reached else "") for i in range(len(FLOW))]
    items = "".join(f"<li class='{cls}'>{_e(step)}</li>" for step, cls in zip(FLOW, steps, strict=True))
    return f"<ol class='flow'>{items}</ol>"


def _log_tail(market: Market, task_id: str) -> str:
    try:
        text, _, total = market.host.tasks.read_log(int(task_id), 0)
    except (KeyError, ValueError, OSError):
        return ""
    return text[-LOG_TAIL_CHARS:] if total > LOG_TAIL_CHARS else text


@market_route
async def dashboard_app(request: Request) -> Response:
    user = await require_market_user(request, "market.runtime")
    market = market_of(host_of(request))
    name = request.query_params.get("app")
    if not name:
        rows = [[_app_link(r["name"]), _e(r["user"]), _state(r["state"])]
                for r in market.visible_instances(user, everyone=True)]
        return _page("Market app flow", "<h2>Choose an app</h2>" + _table(["app", "user", "state"], rows, "No apps"))
    try:
        row = market.instance_for(user, name)
    except MarketError:
        return _page(f"Market app flow: {name}", "<p>No such app for you.</p>")
    tasks = runtime_snapshot(market, user, {"app_name": name})["tasks"]
    records = market.store.logs(user=None if user.is_admin else user.name, app=name)[:100]
    operations = [[_e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["timestamp"]))), _e(r["type"]),
                   _state(r.get("status")), _e(r.get("version")), _e(r.get("message"))] for r in records]
    logs = "".join(
        f"<h3>Task {_e(t['id'])} ({_e(t['type'])}, {_e(t['status'])})</h3><pre>{_e(_log_tail(market, t['id']))}</pre>"
        for t in tasks[:5]
    )
    facts = [[_e(k), _e(row.get(k))] for k in ("user", "rawAppName", "source", "version", "title", "opType",
                                                "message", "reason", "cloneOf")]
    context = market.host.supervisor.context(name)
    if context is not None:
        facts += [[_e("process"), _e(f"{context['status']} pid {context.get('pid')} port {context.get('port')}")]]
    body = (
        f"<h2>Processing flow</h2>{_flow(row['state'])}<p>Current state: {_state(row['state'])} "
        f"(allowed now: {_e(', '.join(sorted(lc.allowed_ops(row['state']))) or 'nothing, wait')})</p>"
        + _table(["field", "value"], facts, "")
        + "<h2>Operations</h2>" + _table(["time", "operation", "outcome", "version", "message"], operations,
                                          "No operations recorded")
        + "<h2>Tasks</h2>" + _table(TASK_HEADERS, _task_rows(tasks), "No tasks") + logs
    )
    return _page(f"Market app flow: {name}", body)
