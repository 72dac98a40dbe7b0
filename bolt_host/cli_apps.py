"""``bolt-host apps ...``: list, show, install, start, stop, restart, remove and logs, over HTTP."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

from bolt_host import errors
from bolt_host.cli_client import (
    HINTS,
    Client,
    describe_code,
    human_bytes,
    human_duration,
    json_option,
    print_json,
    print_table,
    remote,
    stderr_console,
)
from bolt_host.cli_errors import EXIT_API_ERROR
from bolt_host.cli_tasks import follow_task, raise_unless_succeeded
from bolt_host.cli_upload import upload_package


def split_spec(spec: str) -> tuple[str, str | None]:
    """``name``, ``name@1.2.0``, ``@scope/name`` or ``@scope/name@1.2.0`` -> (package, version)."""
    at = spec.rfind("@")
    if at <= 0:
        return spec, None
    name, version = spec[:at], spec[at + 1 :]
    if not version:
        raise click.UsageError(f"missing version after '@' in {spec!r}")
    return name, version


@dataclass
class Live:
    """What ``GET /api/apps/@live`` says about each app: instance 0's context (one row per app)
    and how many of its instances are running."""

    contexts: dict[str, dict[str, Any]]
    running: Counter[str]

    @classmethod
    def read(cls, client: Client) -> Live:
        live = client.get("/api/apps/@live")
        return cls(
            contexts={c["name"]: c for c in live if not c.get("instance")},
            running=Counter(c["name"] for c in live if c.get("status") == "running"),
        )

    def instance_count(self, name: str) -> dict[str, int] | None:
        """``{running, wanted}`` for a live app (wanted: its admin's or manifest's count within
        the host's cap), None for one that is not running."""
        context = self.contexts.get(name)
        if context is None:
            return None
        return {"running": self.running[name], "wanted": int(context.get("instances") or 1)}


def _row(app: dict[str, Any], live: Live) -> list[Any]:
    context = live.contexts.get(app["name"]) or {}
    cpu = context.get("cpu")
    count = live.instance_count(app["name"])
    return [
        app["name"],
        app.get("version", ""),
        "errored" if context.get("errored") else context.get("status", "stopped"),
        context.get("port") or "-",
        f"{count['running']}/{count['wanted']}" if count else "-",
        f"{cpu:.1f}%" if isinstance(cpu, int | float) and context else "-",
        human_bytes(context.get("memory")),
        human_duration(context.get("uptime")),
        context.get("restarts", 0),
        "yes" if app.get("system") else "",
    ]


COLUMNS = ["name", "version", "status", "port", "instances", "cpu", "memory", "uptime", "restarts", "system"]


@click.group("apps")
def apps() -> None:
    """Installed apps on a running host (see `bolt-host login`)."""


@apps.command("list")
@json_option
@remote
def apps_list(client: Client, as_json: bool) -> None:
    """List installed apps with their status, port, instances (running/wanted), CPU, memory, uptime and restarts.

    \b
    Examples:
      bolt-host apps list
      bolt-host apps list --json
    """
    installed = client.get("/api/apps")
    live = Live.read(client)
    if as_json:
        print_json([
            {**app, "context": live.contexts.get(app["name"]), "instanceCount": live.instance_count(app["name"])}
            for app in installed
        ])
        return
    print_table(COLUMNS, [_row(app, live) for app in installed], title="Apps")


@apps.command("show")
@click.argument("name")
@json_option
@remote
def apps_show(client: Client, name: str, as_json: bool) -> None:
    """Show one app and, if it runs, its context.

    \b
    Examples:
      bolt-host apps show hello-web
    """
    app = client.get(f"/api/apps/{name}")
    live = Live.read(client)
    context = live.contexts.get(name)
    if as_json:
        print_json({**app, "context": context})
        return
    for key in ("name", "version", "displayName", "description", "system", "tags", "path", "main", "source"):
        value = app.get(key)
        click.echo(f"{key:<12} {json.dumps(value) if isinstance(value, dict | list) else value}")
    row = _row(app, live)
    for key, value in zip(COLUMNS[2:9], row[2:9], strict=True):
        click.echo(f"{key:<12} {value}")
    last = (context or {}).get("lastExit") or app.get("lastExit")
    if last:  # how it last ended on its own, kept until its next start
        ended = f"code {last['code']}" if last.get("code") is not None else last.get("signal") or "-"
        click.echo(f"{'last exit':<12} {ended} at {last.get('at')}: {last.get('reason')}")
        for line in last.get("log") or []:
            click.echo(f"{'':<12} | {line}")
    elif context and context.get("reason"):
        click.echo(f"{'reason':<12} {context['reason']}")


def _system_flag(system: bool | None) -> dict[str, Any]:
    return {} if system is None else {"system": system}


@apps.command("install")
@click.argument("spec", metavar="NAME[@VERSION]")
@click.option("--system/--no-system", default=None, help="Install as a system app (default: what the package says).")
@click.option("--upgrade", is_flag=True, help="Replace an installed version.")
@click.option("--install-scripts", is_flag=True, help="Run the npm install scripts the app asks for.")
@click.option("--no-wait", is_flag=True, help="Queue the install task and print it without waiting.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this many seconds.")
@json_option
@remote
def apps_install(
    client: Client,
    spec: str,
    system: bool | None,
    upgrade: bool,
    install_scripts: bool,
    no_wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Install NAME[@VERSION] from the host's registry, with a progress bar.

    \b
    Examples:
      bolt-host apps install notes
      bolt-host apps install hello-web@1.0.0 --upgrade
    """
    if _names_a_local_package(spec):
        raise click.UsageError(f"{spec} is a folder or file on this machine: `bolt-host apps install-local {spec}`")
    name, version = split_spec(spec)
    body: dict[str, Any] = {"name": name, **_system_flag(system)}
    if version:
        body["version"] = version
    if upgrade:
        body["upgrade"] = True
    if install_scripts:
        body["installScripts"] = True
    record = client.post("/api/apps/install-task", body)
    if no_wait:
        print_json(record) if as_json else click.echo(f"queued task {record['id']}")
        return
    final = follow_task(client, record["id"], f"install {spec}", timeout=timeout, quiet=as_json)
    raise_unless_succeeded(final)
    app = client.get(f"/api/apps/{final['module']}")
    if as_json:
        print_json({**app, "task": final["id"]})
    else:
        click.echo(f"installed {app['name']} {app['version']}" + (" (system app)" if app.get("system") else ""))


def _names_a_local_package(spec: str) -> bool:
    """A path that exists here, never a registry name (scoped names start with "@", and neither a
    "/" nor a leading "." or "~" is part of any other)."""
    looks_like_path = spec.startswith((".", "~", "/")) or ("/" in spec and not spec.startswith("@"))
    return looks_like_path and Path(spec).expanduser().exists()


@apps.command("install-local")
@click.argument("path")
@click.option("--repo", "in_repo", is_flag=True, help="PATH names a folder of the host's local repository.")
@click.option("--system/--no-system", default=None, help="Install as a system app (default: what the package says).")
@click.option("--upgrade", is_flag=True, help="Replace an installed version.")
@click.option("--install-scripts", is_flag=True, help="Run the npm install scripts the app asks for.")
@json_option
@remote
def apps_install_local(
    client: Client, path: str, in_repo: bool, system: bool | None, upgrade: bool, install_scripts: bool, as_json: bool
) -> None:
    """Install PATH: an app folder or a .tgz on this machine, else a folder of the host's local repository.

    A folder here is packed (without node_modules, .git, __pycache__ and symlinks) and
    uploaded, like a .tgz; a PATH that does not exist here, or --repo, names a folder
    of the host's local repository (`--local-repo` of serve), e.g. `hello-web`.

    \b
    Examples:
      bolt-host apps install-local hello-web       # from the host's local repository
      bolt-host apps install-local ./my-app        # a folder here, packed and uploaded
      bolt-host apps install-local my-app-1.0.0.tgz --upgrade
    """
    local = Path(path).expanduser()
    options: dict[str, Any] = {**_system_flag(system), **({"upgrade": True} if upgrade else {})}
    if install_scripts:
        options["installScripts"] = True
    with stderr_console().status(f"installing {path}", spinner="dots") if not as_json else _nothing():
        if in_repo or not local.exists():
            app = client.post("/api/apps/local", {"path": path, **options})
        else:
            app = upload_package(client, local, options)
    if as_json:
        print_json(app)
    else:
        click.echo(f"installed {app['name']} {app['version']}" + (" (system app)" if app.get("system") else ""))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


VERBS = {"start": "started", "stop": "stopped", "restart": "restarted"}


def _result_line(action: str, context: dict[str, Any]) -> str:
    """``hello-web: started (port 20001, pid 4242)``; a server-less app's bare context has no status."""
    if "status" not in context:
        return f"{context['name']}: {VERBS[action]} (server-less: open /public/{context['name']}/)"
    facts = [f"port {context['port']}"] if context.get("port") else []
    if context.get("pid") and context.get("status") == "running":
        facts.append(f"pid {context['pid']}")
    return f"{context['name']}: {VERBS[action]}" + (f" ({', '.join(facts)})" if facts else "")


def _failure_line(name: str, error: dict[str, Any]) -> str:
    """``nosuch: ERROR no such app [Bolt code 403 (app not found)]``, and its hint."""
    line = f"{name}: ERROR {error['message']} [{describe_code(error['code'])}]"
    hint = HINTS.get(error["code"])
    return line + (f"\n  hint: {hint}" if hint else "")


def _operate(client: Client, action: str, name: str, as_json: bool, options: dict[str, Any] | None = None) -> None:
    with stderr_console().status(f"{action} {name}", spinner="dots") if not as_json else _nothing():
        context = client.post(f"/api/apps/{action}", {"name": name, **(options or {})})
    if as_json:
        print_json(context)
        return
    click.echo(_result_line(action, context))


def _operate_many(client: Client, action: str, names: tuple[str, ...], as_json: bool) -> None:
    """One call for several apps; each name's result on its own line, exit 1 if any failed.

    The API refuses the whole call when a name is not installed, so names that are not are
    reported here and the others still go.
    """
    if len(names) == 1:
        _operate(client, action, names[0], as_json)
        return
    installed = {app["name"] for app in client.get("/api/apps")}
    wanted = list(dict.fromkeys(names))
    failed: dict[str, dict[str, Any]] = {
        name: {"code": errors.APP_NOT_FOUND, "message": "no such app"} for name in wanted if name not in installed
    }
    known = [name for name in wanted if name in installed]
    done: list[dict[str, Any]] = []
    if known:
        with stderr_console().status(f"{action} {len(known)} apps", spinner="dots") if not as_json else _nothing():
            answer = client.post(f"/api/apps/{action}", {"names": known})
        done = answer["started" if action == "start" else "stopped"]
        failed.update(answer["failed"])
    if as_json:
        print_json({VERBS[action]: done, "failed": failed})
    else:
        results = {context["name"]: _result_line(action, context) for context in done}
        for name in wanted:  # in the order asked
            if name in results:
                click.echo(results[name])
            else:
                click.echo(_failure_line(name, failed[name]), err=True)
    if failed:
        raise SystemExit(EXIT_API_ERROR)


@apps.command("start")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@json_option
@remote
def apps_start(client: Client, names: tuple[str, ...], as_json: bool) -> None:
    """Start apps (several at once in one call); returns once they are ready.

    \b
    Examples:
      bolt-host apps start hello-web
      bolt-host apps start hello-web notes ticker
    """
    _operate_many(client, "start", names, as_json)


@apps.command("stop")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@json_option
@remote
def apps_stop(client: Client, names: tuple[str, ...], as_json: bool) -> None:
    """Stop apps (several at once in one call); returns once their process trees are gone.

    \b
    Examples:
      bolt-host apps stop hello-web notes
    """
    _operate_many(client, "stop", names, as_json)


@apps.command("restart")
@click.argument("name")
@click.option("--rolling", is_flag=True, help="Keep the running process serving until the new one is ready.")
@json_option
@remote
def apps_restart(client: Client, name: str, rolling: bool, as_json: bool) -> None:
    """Restart an app; --rolling: with no request dropped (the old process serves until the new
    one is ready, then drains; apps with bolt.rolling false get a plain restart).

    \b
    Examples:
      bolt-host apps restart hello-web
      bolt-host apps restart --rolling hello-web
    """
    _operate(client, "restart", name, as_json, {"mode": "rolling"} if rolling else {})


@apps.command("scale")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1))
@json_option
@remote
def apps_scale(client: Client, name: str, count: int, as_json: bool) -> None:
    """Run COUNT instances of a server app behind /x/NAME/ (the host balances requests over
    them); a running app is scaled at once (instances going away are drained first).

    \b
    Examples:
      bolt-host apps scale hello-web 4
      bolt-host apps scale hello-web 1
    """
    with stderr_console().status(f"scale {name} to {count}", spinner="dots") if not as_json else _nothing():
        app = client.call("PUT", f"/api/apps/{name}", json={"instances": count})
        live = [c for c in client.get("/api/apps/@live") if c["name"] == app["name"]]
    if as_json:
        print_json(live)
        return
    running = sum(1 for context in live if context.get("status") == "running")
    click.echo(f"{app['name']}: {count} instances wanted, {running} running")


@apps.command("remove")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--purge", is_flag=True, help="Also delete the app's database.")
@json_option
@remote
def apps_remove(client: Client, name: str, yes: bool, purge: bool, as_json: bool) -> None:
    """Remove an app (stopping it first); its source and public files go, its data stays unless --purge.

    \b
    Examples:
      bolt-host apps remove hello-web --yes
      bolt-host apps remove notes --yes --purge
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to remove without confirmation; pass --yes")
        click.confirm(f"Remove {name}?", abort=True)
    body = {"deleteSourceFolder": True, "deletePublicFolder": True, "deleteDatabase": purge}
    app = client.call("DELETE", f"/api/apps/{name}", json=body)
    if as_json:
        print_json(app)
    else:
        click.echo(f"removed {app['name']}")


@apps.command("logs")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until interrupted.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="From about WHEN on: a duration back from now (30s, 10m, 2h, 1d) or an ISO time. The app's own "
    "lines carry no time; the host's timestamped lines (started, exited, ...) place them.",
)
@click.option("--start", type=int, default=0, hidden=True, help="First character to print (the API's offset).")
@remote
def apps_logs(client: Client, name: str, follow: bool, lines: int | None, since: str | None, start: int) -> None:
    """Print an app's log: its output (stdout and stderr of every run) and the host's
    timestamped lines about it (starting, started, exited with code 3, stopping (by admin), ...).

    \b
    Examples:
      bolt-host apps logs hello-web --lines 50
      bolt-host apps logs hello-web --since 10m -f
    """
    if lines is not None or since is not None:
        params: dict[str, Any] = {"lines": lines} if lines is not None else {}
        if since is not None:
            params["since"] = since_time(since)
        response = client.request("GET", f"/api/apps/{name}/logs", params=params)
        click.echo(response.text, nl=False)
        if not follow:
            return
        start = int(response.headers.get("X-TEXT-SIZE", "0"))
    elif not follow:
        response = client.request("GET", f"/api/apps/{name}/logs", params={"start": start})
        click.echo(response.text, nl=False)
        return
    params = {"start": start, "follow": "true"}
    try:
        with client.stream("GET", f"/api/apps/{name}/logs", params=params, timeout=httpx.Timeout(10, read=None)) as rsp:
            for line in rsp.iter_lines():
                if line.startswith("data: "):
                    click.echo(json.loads(line[6:]), nl=False)
                    sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(130)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(text: str) -> str:
    """``10m`` (back from now) or an ISO time -> an ISO UTC time for the API."""
    raw = text.strip()
    if raw[:-1].replace(".", "", 1).isdigit() and raw[-1:] in _UNITS:
        when = datetime.now(UTC) - timedelta(seconds=float(raw[:-1]) * _UNITS[raw[-1]])
    else:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            hint = f"{text!r}: use a duration (30s, 10m, 2h, 1d) or an ISO time"
            raise click.BadParameter(hint, param_hint="--since") from None
        when = when if when.tzinfo else when.astimezone()
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
