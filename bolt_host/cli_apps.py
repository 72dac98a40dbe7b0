"""``bolt-host apps ...``: list, show, install, start, stop, restart, remove and logs, over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from bolt_host.cli_client import (
    EXIT_API_ERROR,
    Client,
    human_bytes,
    human_duration,
    json_option,
    print_json,
    print_table,
    remote,
    stderr_console,
)
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


def _contexts(client: Client) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in client.get("/api/apps/@live")}


def _row(app: dict[str, Any], context: dict[str, Any] | None) -> list[Any]:
    context = context or {}
    cpu = context.get("cpu")
    return [
        app["name"],
        app.get("version", ""),
        context.get("status", "stopped"),
        context.get("port") or "-",
        f"{cpu:.1f}%" if isinstance(cpu, int | float) and context else "-",
        human_bytes(context.get("memory")),
        human_duration(context.get("uptime")),
        context.get("restarts", 0),
        "yes" if app.get("system") else "",
    ]


COLUMNS = ["name", "version", "status", "port", "cpu", "memory", "uptime", "restarts", "system"]


@click.group("apps")
def apps() -> None:
    """Installed apps on a running host (see `bolt-host login`)."""


@apps.command("list")
@json_option
@remote
def apps_list(client: Client, as_json: bool) -> None:
    """List installed apps with their status, port, CPU, memory, uptime and restarts."""
    installed = client.get("/api/apps")
    contexts = _contexts(client)
    if as_json:
        print_json([{**app, "context": contexts.get(app["name"])} for app in installed])
        return
    print_table(COLUMNS, [_row(app, contexts.get(app["name"])) for app in installed], title="Apps")


@apps.command("show")
@click.argument("name")
@json_option
@remote
def apps_show(client: Client, name: str, as_json: bool) -> None:
    """Show one app and, if it runs, its context."""
    app = client.get(f"/api/apps/{name}")
    context = _contexts(client).get(name)
    if as_json:
        print_json({**app, "context": context})
        return
    for key in ("name", "version", "displayName", "description", "system", "tags", "path", "main", "source"):
        value = app.get(key)
        click.echo(f"{key:<12} {json.dumps(value) if isinstance(value, dict | list) else value}")
    row = _row(app, context)
    for key, value in zip(COLUMNS[2:8], row[2:8], strict=True):
        click.echo(f"{key:<12} {value}")
    if context and context.get("reason"):
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
    """Install NAME[@VERSION] from the host's registry, with a progress bar."""
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


def _operate(client: Client, action: str, name: str, as_json: bool) -> None:
    with stderr_console().status(f"{action} {name}", spinner="dots") if not as_json else _nothing():
        context = client.post(f"/api/apps/{action}", {"name": name})
    if as_json:
        print_json(context)
        return
    click.echo(_context_line(context))


def _context_line(context: dict[str, Any]) -> str:
    """``name status on port P (pid N)``; a server-less app's bare context has nothing to run."""
    if "status" not in context:
        return f"{context['name']} is server-less: open /public/{context['name']}/"
    port = f" on port {context['port']}" if context.get("port") else ""
    pid = f" (pid {context['pid']})" if context.get("pid") and context.get("status") == "running" else ""
    return f"{context['name']} {context['status']}{port}{pid}"


def _operate_many(client: Client, action: str, names: tuple[str, ...], as_json: bool) -> None:
    """One call for several apps; each result on its own line, exit 1 if any failed."""
    if len(names) == 1:
        _operate(client, action, names[0], as_json)
        return
    with stderr_console().status(f"{action} {len(names)} apps", spinner="dots") if not as_json else _nothing():
        answer = client.post(f"/api/apps/{action}", {"names": list(names)})
    if as_json:
        print_json(answer)
    else:
        for context in answer["started" if action == "start" else "stopped"]:
            click.echo(_context_line(context))
    for name, error in answer["failed"].items():
        click.echo(f"bolt-host: {name}: error {error['code']}: {error['message']}", err=True)
    if answer["failed"]:
        raise SystemExit(EXIT_API_ERROR)


@apps.command("start")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@json_option
@remote
def apps_start(client: Client, names: tuple[str, ...], as_json: bool) -> None:
    """Start apps (several at once in one call); returns once they are ready."""
    _operate_many(client, "start", names, as_json)


@apps.command("stop")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@json_option
@remote
def apps_stop(client: Client, names: tuple[str, ...], as_json: bool) -> None:
    """Stop apps (several at once in one call); returns once their process trees are gone."""
    _operate_many(client, "stop", names, as_json)


@apps.command("restart")
@click.argument("name")
@json_option
@remote
def apps_restart(client: Client, name: str, as_json: bool) -> None:
    """Restart an app."""
    _operate(client, "restart", name, as_json)


@apps.command("remove")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--purge", is_flag=True, help="Also delete the app's database.")
@json_option
@remote
def apps_remove(client: Client, name: str, yes: bool, purge: bool, as_json: bool) -> None:
    """Remove an app (stopping it first); its source and public files go, its data stays unless --purge."""
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
@click.option("--start", type=int, default=0, show_default=True, help="First character to print.")
@remote
def apps_logs(client: Client, name: str, follow: bool, start: int) -> None:
    """Print an app's log (stdout and stderr of every run)."""
    if not follow:
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
