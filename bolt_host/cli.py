"""``bolt-host``: serve the host, offline maintenance (``admin``), list plugins; the client commands are in cli_*.py."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from bolt_host import __version__
from bolt_host.cli_errors import StartupError
from bolt_host.config import Settings, env_name, parse_setting, settings_from_env
from bolt_host.datadir import DataDirBusy, DataDirError, DataDirLock, check_usable
from bolt_host.errors import BoltError
from bolt_host.listener import ListenError, UnknownHost, bind_listener
from bolt_host.log_levels import LOG_LEVELS, configure_logging
from bolt_host.plugins import PluginLoadError, discover
from bolt_host.statefile import RUNTIME_STATE_FILE, StateFile
from bolt_host.storage import CorruptDatabaseError, Database
from bolt_host.uvicorn_package import defer_uvicorn_init


def _settings(**flags: Any) -> Settings:
    try:
        return settings_from_env(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _setting_label(name: str, flags: dict[str, Any]) -> str:
    """How the user gave setting ``name``: its flag, or its env twin when the flag was not used."""
    if flags.get(name) is None and env_name(name) in os.environ:
        return env_name(name)
    return "--" + name.replace("_", "-")


def _serve_settings(flags: dict[str, Any]) -> Settings:
    """Settings for ``serve``; any bad value is a :class:`StartupError` naming the setting and value."""
    raw_range = flags.get("port_range")
    if raw_range:
        try:
            flags["port_range"] = parse_setting("port_range", raw_range)
        except ValueError as exc:
            raise StartupError(f"--port-range {raw_range}: {exc}") from exc
    try:
        settings = settings_from_env(**flags)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if not 0 <= settings.port < 65536:  # 0: any free port
        raise StartupError(f"{_setting_label('port', flags)} {settings.port}: not a port number (0-65535)")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise StartupError(
            f"{_setting_label('log_level', flags)} {settings.log_level}: not one of {', '.join(LOG_LEVELS).lower()}"
        )
    return settings


class LazyGroup(click.Group):
    """A group whose :data:`REMOTE_COMMANDS` are imported only when listed or called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *REMOTE_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in REMOTE_COMMANDS and cmd_name not in self.commands:
            module_name, _, attr = REMOTE_COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module_name), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bolt-host")
def main() -> None:
    """bolt-host: install, supervise and serve apps.

    \b
    Examples:
      bolt-host serve                          # run the host on 127.0.0.1:4000
      bolt-host login --user admin             # store a login for the commands below
      bolt-host apps install-local hello-web   # install from the local repository
      bolt-host apps start hello-web
      bolt-host apps logs hello-web --lines 50
    """


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
    """Run the host until SIGINT or SIGTERM.

    \b
    Examples:
      bolt-host serve
      bolt-host serve --port 8080 --data-dir /srv/bolt --registry http://127.0.0.1:4873
      BOLT_ADMIN_PASSWORD=secret bolt-host serve --log-level debug
    """
    # httpx imports its command-line client (rich, pygments: 3-6 MiB) whenever rich and click
    # are installed, as they are for this CLI; a server never runs it, so its import fails over to
    # httpx's own stub (None in sys.modules makes an import raise ModuleNotFoundError)
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    defer_uvicorn_init()  # its package import loads its command line, which a server never runs
    from uvicorn.config import Config

    # Check every setting and bind the socket before the data dir is touched: a refused
    # start leaves no folder, no password and no half-run start-up behind.
    settings = _serve_settings(flags)
    data_label = _setting_label("data_dir", flags)
    try:
        check_usable(settings.data_dir)
    except DataDirError as exc:
        raise StartupError(f"{data_label} {settings.data_dir}: {exc}") from exc
    try:
        listener = bind_listener(settings.host, settings.port)
    except UnknownHost as exc:
        raise StartupError(f"{_setting_label('host', flags)} {settings.host}: {exc}") from exc
    except ListenError as exc:
        where = f"{settings.host}:{settings.port}"
        raise StartupError(f"{_setting_label('port', flags)} {settings.port} ({where}): {exc}") from exc
    if settings.port == 0:  # the port the kernel chose, for the banner and the apps' BOLT_HOST_URL
        settings = settings.with_overrides(port=listener.getsockname()[1])
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()  # held until this process exits; the kernel releases it on any death
    except DataDirBusy as exc:
        listener.close()
        raise StartupError(f"{data_label} {settings.data_dir}: {exc}; one host per data dir") from exc
    try:  # here, so a corrupt db refuses the start with one clear line (in the lifespan it is a traceback)
        Database(settings.data_dir / "db.json").close()
        StateFile(settings.data_dir / RUNTIME_STATE_FILE)
    except CorruptDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    from bolt_host.app import create_app, server_options
    from bolt_host.quiet_server import QuietServer

    try:
        app = create_app(settings, on_ready=lambda host: _print_banner(settings, host.generated_admin_password))
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from exc

    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        **server_options(settings),
    )
    server = QuietServer(config)
    try:
        server.run(sockets=[listener])
    except CorruptDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the start-up failed (its reason is in the log above)


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


@contextlib.contextmanager
def _offline_write(data_dir: Path | None, online: str) -> Iterator[None]:
    """Hold the data dir's lock for an offline write, or refuse while a host is serving it.

    A running host keeps its state in memory and would overwrite the change with its next
    write, so the change must go through the host itself (``online`` is that command).
    """
    folder = _settings(data_dir=data_dir).data_dir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with DataDirLock(folder, purpose="bolt-host admin"):
            yield
    except DataDirBusy as exc:
        raise click.ClickException(
            f"{folder} is {exc}: a running host would overwrite this change; use `{online}` against it "
            "(or stop the host first)"
        ) from exc


_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="State folder [env BOLT_DATA_DIR]."
)


@admin_users.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", "roles", multiple=True, default=["guest"], show_default=True)
@_data_dir_option
def admin_users_add(name: str, password: str, roles: tuple[str, ...], data_dir: Path | None) -> None:
    """Create a user.

    \b
    Examples:
      bolt-host admin users add zoe --role admin --data-dir /srv/bolt
    """
    try:
        with _offline_write(data_dir, f"bolt-host users add {name}"):
            user = _users(data_dir).create(name, password, list(roles))
    except BoltError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created user {user['name']} with roles {', '.join(user['roles'])}")


@admin_users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_data_dir_option
def admin_users_list(as_json: bool, data_dir: Path | None) -> None:
    """List users.

    \b
    Examples:
      bolt-host admin users list --json
    """
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
    """Set a user's password.

    \b
    Examples:
      bolt-host admin users passwd admin --data-dir /srv/bolt
    """
    try:
        with _offline_write(data_dir, f"bolt-host users passwd --user {name}"):
            _users(data_dir).set_password(name, password)
    except BoltError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"password changed for {name}")


@admin.command("initial-password")
@_data_dir_option
def admin_initial_password(data_dir: Path | None) -> None:
    """Print the password generated for `admin` on the data dir's first start.

    \b
    Examples:
      export BOLT_PASSWORD="$(bolt-host admin initial-password)"
    """
    path = _settings(data_dir=data_dir).data_dir / "initial-admin-password"
    try:
        click.echo(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        raise click.ClickException(
            f"{path} does not exist: the host has not started on this data dir yet, or the password "
            "came from BOLT_ADMIN_PASSWORD"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


@main.command("plugins")
@click.option("--plugins-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(plugins_dir: Path | None, as_json: bool) -> None:
    """List the plugins that would load, with their hooks.

    \b
    Examples:
      bolt-host plugins
      bolt-host plugins --plugins-dir ./my-plugins --json
    """
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


# Commands that talk to a running host over HTTP (cli_*.py; see docs/cli.md), loaded when
# named: their HTTP client (httpx, which also pulls in rich) stays out of ``serve``'s memory.
REMOTE_COMMANDS = {
    "apps": "bolt_host.cli_apps:apps",
    "tasks": "bolt_host.cli_tasks:tasks",
    "users": "bolt_host.cli_users:users",
    "login": "bolt_host.cli_users:login",
    "logout": "bolt_host.cli_users:logout",
    "whoami": "bolt_host.cli_users:whoami",
    "registry": "bolt_host.cli_registry:registry",
}
