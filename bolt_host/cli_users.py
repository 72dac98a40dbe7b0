"""``bolt-host login|logout|whoami`` and ``bolt-host users ...``, over HTTP.

``bolt-host users ...`` manages the users of a running host through its API;
``bolt-host admin users ...`` (in cli.py) edits a data dir directly, also while
the host is stopped.
"""

from __future__ import annotations

from typing import Any

import click

from bolt_host.cli_client import (
    Client,
    Target,
    json_option,
    load_config,
    print_json,
    print_table,
    remote,
    resolve_url,
    save_config,
)


@click.command("login")
@click.option("--url", default=None, help="Host URL [env BOLT_URL; default: the configured one].")
@click.option("--user", "-u", default=None, help="User name [env BOLT_USER; prompted].")
@click.option("--password", "-p", default=None, help="Password [env BOLT_PASSWORD; prompted].")
def login(url: str | None, user: str | None, password: str | None) -> None:
    """Log in and keep a user token in the config file (mode 0600) for later commands.

    \b
    Examples:
      bolt-host login --url http://127.0.0.1:4000 --user admin
    """
    import os

    target = Target(resolve_url(url))
    name = user or os.environ.get("BOLT_USER") or click.prompt("User")
    secret = password or os.environ.get("BOLT_PASSWORD") or click.prompt(f"Password for {name}", hide_input=True)
    client = Client(Target(target.url))
    try:
        answer = client.post("/api/users/login", {"name": name, "password": secret})
    finally:
        client.close()
    config = load_config()
    hosts = config.setdefault("hosts", {})
    hosts[target.url] = {"user": answer["user"]["name"], "token": answer["token"], "expires": answer.get("expires")}
    config["url"] = target.url
    path = save_config(config)
    click.echo(f"logged in to {target.url} as {answer['user']['name']} (token kept in {path})")


@click.command("logout")
@click.option("--url", default=None, help="Host URL [env BOLT_URL; default: the configured one].")
def logout(url: str | None) -> None:
    """End the stored session on the host and forget its token.

    \b
    Examples:
      bolt-host logout
    """
    config = load_config()
    chosen = resolve_url(url)
    saved = (config.get("hosts") or {}).pop(chosen, None)
    if saved is None:
        click.echo(f"no stored login for {chosen}")
        return  # nothing to forget: leave the config file (or its absence) as it is
    if saved.get("token"):
        client = Client(Target(chosen, token=saved["token"]))
        try:
            client.post("/api/users/logout")
        except click.ClickException:
            pass  # the token may have expired already; forgetting it is what matters
        finally:
            client.close()
    save_config(config)
    click.echo(f"logged out of {chosen}")


@click.command("whoami")
@json_option
@remote
def whoami(client: Client, as_json: bool) -> None:
    """Show the user the host sees for these credentials.

    \b
    Examples:
      bolt-host whoami
    """
    me = client.get("/api/users/@current")
    if as_json:
        print_json(me)
    else:
        click.echo(f"{me['name']} on {client.target.url}" + (" (admin)" if me.get("isAdmin") else ""))


@click.group("users")
def users() -> None:
    """Users of a running host (for a data dir on this machine, see `bolt-host admin users`)."""


@users.command("list")
@json_option
@remote
def users_list(client: Client, as_json: bool) -> None:
    """List users.

    \b
    Examples:
      bolt-host users list
    """
    found = client.get("/api/users")
    if as_json:
        print_json(found)
        return
    rows = [
        [u["name"], ",".join(u.get("roles") or []), u.get("displayName") or "", u.get("dateCreated", "")] for u in found
    ]
    print_table(["name", "roles", "display name", "created"], rows, title="Users")


@users.command("add")
@click.argument("name")
@click.option(
    "--new-password",
    prompt="Password for the new user",
    hide_input=True,
    confirmation_prompt=True,
    help="The new user's password (prompted if missing).",
)
@click.option("--role", "roles", multiple=True, help="A role (repeatable); default: none.")
@click.option("--display-name", default=None)
@click.option("--email", default=None)
@json_option
@remote
def users_add(
    client: Client,
    name: str,
    new_password: str,
    roles: tuple[str, ...],
    display_name: str | None,
    email: str | None,
    as_json: bool,
) -> None:
    """Create a user.

    \b
    Examples:
      bolt-host users add zoe --role admin
    """
    body: dict[str, Any] = {"name": name, "password": new_password, "roles": list(roles)}
    if display_name:
        body["displayName"] = display_name
    if email:
        body["email"] = email
    user = client.post("/api/users", body)
    if as_json:
        print_json(user)
    else:
        click.echo(f"created user {user['name']} with roles {', '.join(user.get('roles') or []) or '(none)'}")


@users.command("passwd")
@click.argument("name", required=False)
@click.option("--current-password", default=None, help="Your password now (default: the one you log in with).")
@click.option(
    "--new-password",
    prompt="New password",
    hide_input=True,
    confirmation_prompt=True,
    help="The new password (prompted if missing).",
)
@json_option
@remote
def users_passwd(
    client: Client, name: str | None, current_password: str | None, new_password: str, as_json: bool
) -> None:
    """Change your own password (the API has no way to set another user's; see `bolt-host admin users passwd`).

    \b
    Examples:
      bolt-host users passwd
    """
    me = client.get("/api/users/@current")
    if name is not None and name != me["name"]:
        raise click.UsageError(
            f"you are logged in as {me['name']!r}: the host's API changes only your own password. Log in as "
            f"{name!r}, or, with the host stopped, run `bolt-host admin users passwd {name} --data-dir DIR` "
            "on its machine"
        )
    current = current_password or (client.target.auth[1] if client.target.auth else None)
    if current is None:
        current = _prompt_current(me["name"])
    answer = client.post("/api/users/change-password", {"password": current, "newPassword": new_password})
    if as_json:
        print_json({"name": me["name"], **answer})
    else:
        click.echo(f"password changed for {me['name']} (its other sessions have ended)")


def _prompt_current(name: str) -> str:
    import sys

    if not sys.stdin.isatty():
        raise click.UsageError(f"no current password for {name!r}: pass --current-password")
    return click.prompt(f"Current password for {name}", hide_input=True)


@users.command("remove")
@click.argument("name")
@json_option
@remote
def users_remove(client: Client, name: str, as_json: bool) -> None:
    """Delete a user (the last admin cannot be deleted).

    \b
    Examples:
      bolt-host users remove zoe
    """
    user = client.call("DELETE", f"/api/users/{name}")
    if as_json:
        print_json(user)
    else:
        click.echo(f"removed user {user['name']}")


@users.command("roles")
@click.argument("name")
@click.argument("roles", nargs=-1)
@json_option
@remote
def users_roles(client: Client, name: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Replace a user's roles (none given: no roles).

    \b
    Examples:
      bolt-host users roles zoe admin
    """
    user = client.call("PUT", f"/api/users/{name}/roles", json={"roles": list(roles)})
    if as_json:
        print_json(user)
    else:
        click.echo(f"{user['name']} now has roles {', '.join(user.get('roles') or []) or '(none)'}")
