"""What the remote CLI commands share: config file, credentials, HTTP client, output.

Credentials, highest precedence first: flags (``--url``, ``--user``,
``--password``, ``--token``), the environment (``BOLT_URL``, ``BOLT_USER``,
``BOLT_PASSWORD``, ``BOLT_TOKEN``), then the config file that ``bolt-host login``
writes (``$XDG_CONFIG_HOME/bolt-host/config.json``, default
``~/.config/bolt-host/config.json``, mode 0600).

Exit codes: 0 ok; 1 the API answered with an error (its message and Bolt code on
stderr); 2 usage; 3 the host could not be reached.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from bolt_host import errors
from bolt_host.cli_errors import EXIT_API_ERROR, EXIT_CONNECT

DEFAULT_URL = "http://127.0.0.1:4000"
F = TypeVar("F", bound=Callable[..., Any])


# errors ------------------------------------------------------------------------------
# What each Bolt code means, in a few words, and what to do about it where something helps.
CODE_NAMES: dict[int, str] = {
    errors.APP_NAME_MISSING: "app name missing",
    errors.APP_NAME_TAKEN: "app already installed",
    errors.APP_NOT_FOUND: "app not found",
    errors.APP_NAME_INVALID: "bad app name",
    errors.APP_NOT_RUNNING: "app not running",
    errors.APP_START_FAILED: "start failed",
    errors.APP_STOP_FAILED: "stop failed",
    errors.DOWNLOAD_FAILED: "download failed",
    errors.REGISTRY_PACKAGE_FAILED: "registry package failed",
    errors.LOCAL_PACKAGE_FAILED: "local package failed",
    errors.NOT_LOGGED_IN: "not logged in",
    errors.LOGIN_FAILED: "login failed",
    errors.NO_ADMIN_RIGHT: "no admin right",
    errors.NOT_SYSTEM_APP: "not a system app",
    errors.USER_EXISTS: "user exists",
    errors.USER_NOT_FOUND: "user not found",
    errors.BAD_REQUEST: "bad request",
    errors.RATE_LIMITED: "too many attempts",
    errors.PAYLOAD_TOO_LARGE: "too large",
    errors.STORAGE_FULL: "disk full",
}
HINTS: dict[int, str] = {
    errors.APP_NAME_TAKEN: "already installed: use --upgrade to replace it",
    errors.APP_NOT_FOUND: "`bolt-host apps list` shows the installed apps",
    errors.APP_NOT_RUNNING: "`bolt-host apps start NAME` starts it",
    errors.APP_START_FAILED: "`bolt-host apps logs NAME --lines 50` shows what it printed",
    errors.NOT_LOGGED_IN: "run `bolt-host login`, or set BOLT_USER and BOLT_PASSWORD",
    errors.LOGIN_FAILED: "check the user name and password (`bolt-host login` stores a login)",
    errors.NO_ADMIN_RIGHT: "log in as a user with an admin role",
    errors.APP_NAME_INVALID: "app names are lowercase letters, digits, '-', '_' and '.'",
    errors.DOWNLOAD_FAILED: "is the host's registry (serve --registry URL) reachable?",
    errors.REGISTRY_PACKAGE_FAILED: "is the package in the host's registry (serve --registry URL)?",
}


def describe_code(code: int) -> str:
    """``Bolt code 403 (app not found)``: never mistaken for an HTTP status."""
    name = CODE_NAMES.get(code) or errors.MESSAGES.get(code, "").lower()
    return f"Bolt code {code} ({name})" if name else f"Bolt code {code}"


class ApiError(click.ClickException):
    """The host answered with a Bolt error envelope (exit code 1).

    Shown as one line on stderr (message, Bolt code, trace id) and a hint where one helps;
    under ``--json`` as a JSON object on stdout instead.
    """

    exit_code = EXIT_API_ERROR

    def __init__(self, message: str, code: int | None = None, status: int | None = None, trace: str | None = None):
        super().__init__(message)
        self.code, self.status, self.trace = code, status, trace
        self.as_json = False

    @property
    def hint(self) -> str | None:
        return HINTS.get(self.code) if self.code is not None else None

    def format_message(self) -> str:
        details = [describe_code(self.code)] if self.code is not None else []
        if self.trace:
            details.append(f"trace {self.trace}")
        return f"error: {self.message}" + (f" [{', '.join(details)}]" if details else "")

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "code": self.code, "trace": self.trace, "hint": self.hint}}

    def show(self, file: Any = None) -> None:
        if self.as_json:
            print_json(self.as_dict())
            return
        click.echo(f"bolt-host: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"  hint: {self.hint}", err=True)


class ConnectError(click.ClickException):
    """The host could not be reached (exit code 3)."""

    exit_code = EXIT_CONNECT
    as_json = False

    def show(self, file: Any = None) -> None:
        if self.as_json:
            print_json({"error": {"message": self.message, "code": None, "trace": None, "hint": None}})
            return
        click.echo(f"bolt-host: {self.message}", err=True)


# config file -------------------------------------------------------------------------
def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bolt-host" / "config.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> Path:
    """Write the config atomically; the file is created with mode 0600 (it holds tokens)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--url must start with http:// or https://, not {url!r}")
    return url


def resolve_url(url: str | None = None, config: dict[str, Any] | None = None) -> str:
    """The host URL: flag > ``BOLT_URL`` > the config file's > the default."""
    config = load_config() if config is None else config
    return normalize_url(url or os.environ.get("BOLT_URL") or config.get("url") or DEFAULT_URL)


# credentials -------------------------------------------------------------------------
@dataclass
class Target:
    """Where to connect and how to authenticate."""

    url: str
    auth: tuple[str, str] | None = None
    token: str | None = None
    user: str | None = None
    from_config: bool = False

    @property
    def anonymous(self) -> bool:
        return self.auth is None and self.token is None


def resolve_target(
    url: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    prompt: bool = True,
) -> Target:
    """Flags > environment > config file, for the URL and for the credentials."""
    env = os.environ
    config = load_config()
    chosen = resolve_url(url, config)
    saved = (config.get("hosts") or {}).get(chosen) or {}
    if token:
        return Target(chosen, token=token)
    if user:
        secret = password or env.get("BOLT_PASSWORD") or _prompt_password(user, prompt)
        return Target(chosen, auth=(user, secret), user=user)
    if env.get("BOLT_TOKEN"):
        return Target(chosen, token=env["BOLT_TOKEN"])
    if env.get("BOLT_USER"):
        secret = password or env.get("BOLT_PASSWORD") or _prompt_password(env["BOLT_USER"], prompt)
        return Target(chosen, auth=(env["BOLT_USER"], secret), user=env["BOLT_USER"])
    if saved.get("token"):
        return Target(chosen, token=saved["token"], user=saved.get("user"), from_config=True)
    return Target(chosen)


def _prompt_password(user: str, prompt: bool) -> str:
    if prompt and sys.stdin.isatty():
        return click.prompt(f"Password for {user}", hide_input=True)
    raise click.UsageError(f"no password for {user!r}: pass --password or set BOLT_PASSWORD")


# HTTP ----------------------------------------------------------------------------------
class Client:
    """A small synchronous client for the host's JSON API."""

    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        self.target = target
        headers = {"User-Agent": "bolt-host-cli"}
        if target.token:
            headers["X-Bolt-User-Token"] = target.token
        self.http = httpx.Client(base_url=target.url, auth=target.auth, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ConnectError(f"the host at {self.target.url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ConnectError(f"cannot connect to {self.target.url}: {exc}") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._connection():
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ApiError:
        error = error_from(response)
        if response.status_code == 401 and self.target.from_config:
            hint = " (the stored login may have expired: run `bolt-host login` again)"
            error = ApiError(error.message + hint, error.code, error.status, error.trace)
        return error

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the envelope's ``body``; raise :class:`ApiError` on failure."""
        response = self.request(method, path, **kwargs)
        try:
            envelope = response.json()
        except ValueError as exc:
            raise ApiError(f"the host answered {method} {path} with something that is not JSON") from exc
        if not isinstance(envelope, dict) or envelope.get("code", 0) != 0:
            raise self._error(response)
        return envelope.get("body")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.call("POST", path, json=body or {}, **kwargs)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._connection(), self.http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            yield response


def error_from(response: httpx.Response) -> ApiError:
    try:
        envelope = response.json()
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and isinstance(envelope.get("error"), dict):
        return ApiError(
            str(envelope["error"].get("message") or envelope.get("errorUserMessage") or "request failed"),
            code=envelope.get("code"),
            status=response.status_code,
            trace=envelope.get("errorTraceId"),
        )
    return ApiError(f"HTTP {response.status_code} from {response.request.url.path}", status=response.status_code)


# the decorator every remote command uses -------------------------------------------------------
def remote(func: F) -> F:
    """Add ``--url/--user/--password/--token`` and pass a :class:`Client` as the first argument."""

    @click.option("--url", default=None, help=f"Host URL [env BOLT_URL; config; default {DEFAULT_URL}].")
    @click.option("--user", "-u", default=None, help="User name [env BOLT_USER].")
    @click.option("--password", "-p", default=None, help="Password [env BOLT_PASSWORD; prompted if missing].")
    @click.option("--token", default=None, help="User token from `bolt-host login` [env BOLT_TOKEN].")
    @functools.wraps(func)
    def wrapper(url: str | None, user: str | None, password: str | None, token: str | None, **kwargs: Any) -> Any:
        try:
            client = Client(resolve_target(url, user, password, token))
            try:
                return func(client, **kwargs)
            finally:
                client.close()
        except (ApiError, ConnectError) as exc:
            exc.as_json = bool(kwargs.get("as_json"))  # --json: the error as JSON on stdout too
            raise

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


# output ---------------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(
    columns: list[str], rows: list[list[Any]], title: str | None = None, keep: int = 0, wrap: int | None = None
) -> None:
    """A table for people (rich), or plain tab-separated lines when stdout is not a terminal.

    Column ``keep`` (the name) is never cut; the others wrap to fit the terminal's width, or,
    with ``wrap``, only that one (a long free text) wraps and the short ones stay whole.
    """
    if not sys.stdout.isatty():
        click.echo("\t".join(c.upper() for c in columns))
        for row in rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if wrap is not None and _fixed_width(columns, rows, wrap) + 2 + 12 > console.width:
        wrap = None  # the short columns alone nearly fill the line: let them wrap too
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for index, column in enumerate(columns):
        if index == keep:  # names are never cut; the other columns wrap on a narrow terminal
            widest = max([len(column)] + [len(str(row[keep])) for row in rows])
            table.add_column(column, no_wrap=True, min_width=min(widest, 48))
        elif wrap is None:
            table.add_column(column)
        elif index == wrap:
            table.add_column(column, overflow="fold", min_width=12)
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _fixed_width(columns: list[str], rows: list[list[Any]], wrap: int) -> int:
    """The width of every column but ``wrap`` at their longest, with the gaps between them."""
    widths = [
        max([len(column)] + [len("" if row[index] is None else str(row[index])) for row in rows])
        for index, column in enumerate(columns)
        if index != wrap
    ]
    return sum(widths) + 2 * (len(widths) - 1)


def human_bytes(value: Any) -> str:
    if not isinstance(value, int | float) or value <= 0:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds <= 0:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def poll(
    fetch: Callable[[], Any], done: Callable[[Any], bool], interval: float = 0.25, timeout: float | None = None
) -> Any:
    """Call ``fetch`` until ``done(result)`` (or the timeout, an :class:`ApiError`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if deadline is not None and time.monotonic() > deadline:
            raise ApiError(f"timed out after {timeout:g} s")
        time.sleep(interval)  # polling interval between status requests
