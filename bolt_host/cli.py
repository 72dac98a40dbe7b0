"""``bolt-host``: serve the host, offline maintenance (``admin``), list plugins; the client commands are in cli_*.py."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from bolt_host import __version__
from bolt_host.config import Settings, parse_setting, settings_from_env
from bolt_host.errors import BoltError
from bolt_host.plugins import PluginLoadError, discover
from bolt_host.statefile import RUNTIME_STATE_FILE, StateFile
from bolt_host.storage import CorruptDatabaseError, Database


def _settings(**flags: Any) -> Settings:
    try:
        return settings_from_env(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="bolt-host")
def main() -> None:
    """bolt-host: install, supervise and serve apps."""


@main.command()
@click.option("--host", "host", default=None, help="Interface to bind [env BOLT_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to serve on [env BOLT_PORT; default 4000].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="State folder [env BOLT_DATA_DIR].")
@click.option(
    "--local-repo", type=click.Path(path_type=Path), default=None, help="Local app repository [env BOLT_LOCAL_REPO]."
)
@click.option("--registry", default=None, help="npm-protocol registry URL [env BOLT_REGISTRY_URL].")
@click.option(
    "--bundled-apps",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of first-party apps [env BOLT_BUNDLED_APPS; default: the repository's apps/].",
)
@click.option(
    "--install-bundled/--no-install-bundled",
    default=None,
    help="Install (or upgrade) the first-party apps of apps/ at start-up [env BOLT_INSTALL_BUNDLED; default off].",
)
@click.option(
    "--plugins-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of *.py plugins [env BOLT_PLUGINS_DIR].",
)
@click.option("--port-range", default=None, help="Ports for apps, e.g. 20000-29999 [env BOLT_PORT_RANGE].")
@click.option("--log-level", default=None, help="Log level [env BOLT_LOG_LEVEL; default info].")
def serve(**flags: Any) -> None:
    """Run the host until SIGINT or SIGTERM."""
    import uvicorn

    if flags.get("port_range"):
        flags["port_range"] = parse_setting("port_range", flags["port_range"])
    settings = _settings(**flags)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:  # here, so a corrupt db refuses the start with one clear line (in the lifespan it is a traceback)
        Database(settings.data_dir / "db.json").close()
        StateFile(settings.data_dir / RUNTIME_STATE_FILE)
    except CorruptDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    from bolt_host.app import create_app, server_options

    try:
        app = create_app(settings, on_ready=lambda host: _print_banner(settings, host.generated_admin_password))
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from exc

    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            **server_options(settings),
        )
    except CorruptDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_banner(settings: Settings, generated_password: str | None) -> None:
    click.echo(f"bolt-host {__version__} serving on {settings.url}", err=True)
    click.echo(f"  data dir:   {settings.data_dir}", err=True)
    click.echo(f"  local repo: {settings.local_repo}", err=True)
    from bolt_host.services.registry import display_url

    registry = display_url(settings.registry) if settings.registry else "(none configured)"  # no credentials
    click.echo(f"  registry:   {registry}", err=True)
    if generated_password:
        click.echo(
            f"  log in as 'admin' with password {generated_password} "
            f"(also in {settings.data_dir / 'initial-admin-password'}; change it with "
            "`bolt-host users passwd -u admin`)",
            err=True,
        )
    else:
        click.echo(
            "  log in as 'admin' (password from BOLT_ADMIN_PASSWORD or "
            f"{settings.data_dir / 'initial-admin-password'})",
            err=True,
        )
    sys.stderr.flush()


@main.group()
def admin() -> None:
    """Offline maintenance on this machine's data dir (also while the host is stopped)."""


@admin.group("users")
def admin_users() -> None:
    """Users in the data dir, edited directly (for a running host, see `bolt-host users`)."""


def _users(data_dir: Path | None) -> Any:
    from bolt_host.services.users import Users

    settings = _settings(data_dir=data_dir)
    try:
        db = Database(settings.data_dir / "db.json")
    except CorruptDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    store = Users(db)
    store.ensure_default_roles()
    return store


_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="State folder [env BOLT_DATA_DIR]."
)


@admin_users.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", "roles", multiple=True, default=["guest"], show_default=True)
@_data_dir_option
def admin_users_add(name: str, password: str, roles: tuple[str, ...], data_dir: Path | None) -> None:
    """Create a user."""
    try:
        user = _users(data_dir).create(name, password, list(roles))
    except BoltError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created user {user['name']} with roles {', '.join(user['roles'])}")


@admin_users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_data_dir_option
def admin_users_list(as_json: bool, data_dir: Path | None) -> None:
    """List users."""
    found = _users(data_dir).list()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for user in found:
        click.echo(f"{user['name']:<20} {','.join(user['roles']):<20} {user['dateCreated']}")


@admin_users.command("passwd")
@click.argument("name")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True)
@_data_dir_option
def admin_users_passwd(name: str, password: str, data_dir: Path | None) -> None:
    """Set a user's password."""
    try:
        _users(data_dir).set_password(name, password)
    except BoltError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"password changed for {name}")


@main.command("plugins")
@click.option("--plugins-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(plugins_dir: Path | None, as_json: bool) -> None:
    """List the plugins that would load, with their hooks."""
    try:
        infos = discover(_settings(plugins_dir=plugins_dir))
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for info in infos:
        hooks = ", ".join(info["hooks"]) or "(no hooks)"
        click.echo(f"{info['name']:<14} {info['version'] or '-':<8} {info['origin']:<12} {hooks}")


def _add_remote_commands() -> None:
    """Commands that talk to a running host over HTTP (cli_*.py; see docs/cli.md)."""
    from bolt_host.cli_apps import apps
    from bolt_host.cli_tasks import tasks
    from bolt_host.cli_users import login, logout, users, whoami

    for command in (apps, tasks, users, login, logout, whoami):
        main.add_command(command)


_add_remote_commands()
