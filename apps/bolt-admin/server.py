"""bolt-admin: bolt-host's first-party admin app, a system app on the public HTTP API only.

It shows every installed app with its live status and lets the logged-in admin start,
stop, restart and uninstall apps and install apps from the host's local repository.
It holds no rights of its own: each host call carries this app's X-Bolt-App-Token and
the caller's X-Bolt-User-Token (the host's proxy adds it for a logged-in user), and
the host decides.  Python standard library only.

Routes: GET /health, GET / (HTML), GET /api/overview, POST /api/apps/<name>/<verb>
(start, stop, restart, uninstall), POST /api/install {path}, POST /actions (the page's forms).
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST_URL = os.environ.get("BOLT_HOST_URL", "").rstrip("/")
APP_TOKEN = os.environ.get("BOLT_APP_TOKEN", "")
USER_TOKEN_HEADER = "X-Bolt-User-Token"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._~-]{0,213}(@[a-z0-9][a-z0-9._~-]*)?$")
FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,213}$")
PREFIX_RE = re.compile(r"^/x/[a-z0-9@._~-]+$")
ACTION_RE = re.compile(r"^/api/apps/([^/]+)/(start|stop|restart|uninstall)$")
VERBS = ("start", "stop", "restart", "uninstall")
LIVE = ("running", "starting", "backoff")
MAX_BODY = 64 * 1024
# Like `bolt-host apps remove`: the app's files go, its data stays.
REMOVE = {"deleteSourceFolder": True, "deletePublicFolder": True, "deleteDatabase": False}


class Refused(Exception):
    """An answer for the caller: an HTTP status and a JSON payload (the host's envelope if it sent one)."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.payload = status, payload

    @property
    def message(self) -> str:
        error = self.payload.get("error")
        return str(error.get("message") or "error") if isinstance(error, dict) else "error"


def refused(status: int, message: str) -> Refused:
    return Refused(status, {"error": {"message": message}})


# the host ------------------------------------------------------------------------------
def call_host(method: str, path: str, user_token: str, payload: dict[str, Any] | None = None) -> Any:
    """The envelope's body of a host call; Refused with the host's verdict otherwise.

    The host's 4xx answers (not logged in, not an admin, no such app) go back to the
    caller as they are; a host that is down or fails with 5xx becomes a 502.
    """
    headers = {"X-Bolt-App-Token": APP_TOKEN, USER_TOKEN_HEADER: user_token, "Accept": "application/json"}
    data = None
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(HOST_URL + path, data=data, method=method, headers=headers)
    status = 200
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        where = HOST_URL or "(BOLT_HOST_URL unset)"
        raise refused(502, f"host unreachable at {where}: {getattr(exc, 'reason', exc)}") from exc
    try:
        envelope = json.loads(raw)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict) or "code" not in envelope:
        raise refused(502, f"host answered {method} {path} with HTTP {status} and no Bolt envelope")
    if envelope["code"] != 0:
        raise Refused(status if 400 <= status < 500 else 502, envelope)
    return envelope.get("body")


def overview(user_token: str) -> dict[str, Any]:
    """Installed apps with their live status, and the local repository's apps not installed yet."""
    installed = [a for a in call_host("GET", "/api/apps", user_token) or [] if isinstance(a, dict)]
    live = {c.get("name"): c for c in call_host("GET", "/api/apps/@live", user_token) or [] if isinstance(c, dict)}
    local = [e for e in call_host("GET", "/api/apps/local", user_token) or [] if isinstance(e, dict)]
    apps = [_row(app, live.get(app.get("name")) or {}) for app in installed]
    taken = {app.get("package") or app.get("name") for app in installed}
    installable = [
        {
            "path": entry.get("path"),
            "name": package.get("name"),
            "version": package.get("version"),
            "description": package.get("description", ""),
        }
        for entry in local
        if isinstance(package := entry.get("package"), dict) and package.get("name") not in taken
    ]
    return {"apps": apps, "installable": installable}


def _row(app: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": app.get("name"),
        "displayName": app.get("displayName"),
        "version": app.get("version"),
        "system": bool(app.get("system")),
        "status": context.get("status", "stopped"),
        "port": context.get("port"),
        "restarts": context.get("restarts", 0),
    }


def act(user_token: str, name: str, verb: str) -> Any:
    """Start, stop, restart or uninstall app ``name``."""
    if not NAME_RE.match(name):
        raise refused(400, f"not an app name: {name[:80]!r}")
    if verb == "uninstall":
        return call_host("DELETE", "/api/apps/" + urllib.parse.quote(name, safe="@"), user_token, REMOVE)
    return call_host("POST", f"/api/apps/{verb}", user_token, {"name": name})


def install(user_token: str, folder: Any) -> Any:
    """Install the local repository's folder ``folder``."""
    if not isinstance(folder, str) or not FOLDER_RE.match(folder):
        raise refused(400, "'path' must name a folder of the local repository")
    return call_host("POST", "/api/apps/local", user_token, {"path": folder})


# the page ------------------------------------------------------------------------------
# Served through the host (/x/bolt-admin/), so it wears the dashboard's own stylesheet.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bolt Admin</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/dashboard.css">
<style>.notice{{padding:.6rem 1rem;border-radius:6px;margin:1rem 0;background:#e3f4ea;color:var(--ok)}}
.notice.error{{background:#fbeeee;color:var(--danger)}}
form{{display:inline}}ul.offers li{{margin:.4rem 0}}</style></head>
<body><header class="topbar"><a class="brand" href="/dashboard/">bolt-host</a></header>
<main><h1>Bolt Admin</h1>{content}</main></body></html>
"""
LABELS = {"start": "Start", "stop": "Stop", "restart": "Restart", "uninstall": "Uninstall", "install": "Install"}
STYLES = {"restart": "secondary", "uninstall": "danger"}
DONE = {
    "start": "started", "stop": "stopped", "restart": "restarted", "uninstall": "uninstalled", "install": "installed"
}


def _button(prefix: str, action: str, **fields: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items())
    return (
        f'<form method="post" action="{prefix}/actions"><input type="hidden" name="action" value="{action}">'
        f'{hidden}<button class="small {STYLES.get(action, "")}" data-action="{action}">'
        f"{LABELS[action]}</button></form>"
    )


def _app_row(prefix: str, app: dict[str, Any]) -> str:
    name = str(app["name"])
    verbs = ["stop", "restart"] if app["status"] in LIVE else ["start"]
    buttons = " ".join(_button(prefix, verb, name=name) for verb in [*verbs, "uninstall"])
    status = html.escape(str(app["status"]))
    cells = [html.escape(str(c or "")) for c in (name, app["displayName"], app["version"])]
    cells.append(f'<span class="status-pill {status}">{status}</span>')
    cells += [html.escape(str(app["port"] or "")), "yes" if app["system"] else ""]
    return f'<tr data-app="{html.escape(name)}">' + "".join(f"<td>{c}</td>" for c in cells) + (
        f'<td class="actions">{buttons}</td></tr>'
    )


def _offer(prefix: str, entry: dict[str, Any]) -> str:
    name, version = (html.escape(str(entry[k])) for k in ("name", "version"))
    description = html.escape(str(entry["description"]))
    return f"<li><strong>{name}</strong> {version} <span class=\"muted\">{description}</span> " + (
        f"{_button(prefix, 'install', path=str(entry['path']))}</li>"
    )


def render(prefix: str, data: dict[str, Any], done: str = "") -> str:
    rows = "".join(_app_row(prefix, app) for app in data["apps"])
    offers = "".join(_offer(prefix, entry) for entry in data["installable"])
    notice = f'<p class="notice" role="status" id="notice">{html.escape(done)}</p>' if done else ""
    return PAGE.format(
        content=f"{notice}<h2>Installed apps</h2><table class=\"data\"><thead><tr><th>Name</th><th>Display name</th>"
        f"<th>Version</th><th>Status</th><th>Port</th><th>System</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        f'<h2>Local repository</h2><ul class="offers">{offers or "<li>everything in it is installed</li>"}</ul>'
    )


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise refused(400, "body is not JSON") from exc
    if not isinstance(data, dict):
        raise refused(400, "body must be a JSON object")
    return data


# HTTP -------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server_version = "bolt-admin"

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)

    def send(self, status: int, body: Any, content_type: str = "application/json", **headers: str) -> None:
        data = (json.dumps(body) if content_type == "application/json" else body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def prefix(self) -> str:
        """Where the host's proxy mounts this app (``/x/bolt-admin``), for the page's links."""
        given = self.headers.get("X-Forwarded-Prefix", "")
        return given if PREFIX_RE.match(given) else ""

    def user_token(self) -> str:
        """The caller's user token; without one the app refuses at once (it never acts alone)."""
        token = self.headers.get(USER_TOKEN_HEADER, "")
        if not token:
            raise refused(401, "log in to the host first: bolt-admin acts only for a logged-in admin")
        return token

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise refused(413, "request body too large")
        return self.rfile.read(length)

    def refuse(self, exc: Refused, page: bool) -> None:
        print(f"refused ({exc.status}): {exc.message}", flush=True)
        if not page:
            return self.send(exc.status, exc.payload)
        back = f'<p class="notice error" role="alert">{html.escape(exc.message)}</p>'
        back += f'<p><a href="{self.prefix()}/">back</a></p>'
        return self.send(exc.status, PAGE.format(content=back), "text/html")

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/health":
            return self.send(200, "ok", "text/plain")
        if path not in ("/", "/api/overview"):
            return self.send(404, {"error": {"message": "not found: " + path}})
        page = path == "/"
        try:
            data = overview(self.user_token())
        except Refused as exc:
            return self.refuse(exc, page)
        if not page:
            return self.send(200, data)
        done = dict(urllib.parse.parse_qsl(query)).get("done", "")[:200]  # what the last form did
        return self.send(200, render(self.prefix(), data, done), "text/html")

    def do_POST(self) -> None:
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        page = path == "/actions"
        try:
            raw = self.body()
            if page:
                done = self.form_action(raw)
                where = self.prefix() + "/?" + urllib.parse.urlencode({"done": done})
                return self.send(303, "", "text/plain", Location=where)
            action = ACTION_RE.match(path)
            if action:
                return self.send(200, act(self.user_token(), *action.groups()))
            if path == "/api/install":
                return self.send(201, install(self.user_token(), json_object(raw).get("path")))
        except Refused as exc:
            return self.refuse(exc, page)
        return self.send(404, {"error": {"message": "not found: " + path}})

    def form_action(self, raw: bytes) -> str:
        """The page's buttons: form-encoded ``action`` with ``name`` or ``path``; says what was done."""
        fields = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        token = self.user_token()
        what = fields.get("action", "")
        if what == "install":
            app = install(token, fields.get("path"))
            return f"{DONE[what]} {app.get('name')} {app.get('version')}" if isinstance(app, dict) else DONE[what]
        if what in VERBS:
            name = fields.get("name", "")
            act(token, name, what)
            return f"{name} {DONE[what]}"
        raise refused(400, f"unknown action {what[:40]!r}")


def main() -> int:
    try:
        port = int(os.environ["PORT"])
    except (KeyError, ValueError):
        print("bolt-admin: PORT must be set to a port number", file=sys.stderr, flush=True)
        return 2
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True

    def on_term(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"bolt-admin ready on http://127.0.0.1:{port} (host {HOST_URL or 'unset'})", flush=True)
    httpd.serve_forever()
    httpd.server_close()
    print("bolt-admin stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
