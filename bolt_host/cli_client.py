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

DEFAULT_URL = "http://127.0.0.1:4000"
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
F = TypeVar("F", bound=Callable[..., Any])


# errors ------------------------------------------------------------------------------
class ApiError(click.ClickException):
    """The host answered with a Bolt error envelope (exit code 1)."""

    exit_code = EXIT_API_ERROR

    def __init__(self, message: str, code: int | None = None, status: int | None = None, trace: str | None = None):
        super().__init__(message)
        self.code, self.status, self.trace = code, status, trace

    def format_message(self) -> str:
        code = f" {self.code}" if self.code is not None else ""
        trace = f" (trace {self.trace})" if self.trace else ""
        return f"error{code}: {self.message}{trace}"

    def show(self, file: Any = None) -> None:
        click.echo(f"bolt-host: {self.format_message()}", err=True)


class ConnectError(click.ClickException):
    """The host could not be reached (exit code 3)."""

    exit_code = EXIT_CONNECT

    def show(self, file: Any = None) -> None:
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
        client = Client(resolve_target(url, user, password, token))
        try:
            return func(client, **kwargs)
        finally:
            client.close()

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


# output ---------------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    """A table for people (rich), or plain tab-separated lines when stdout is not a terminal."""
    if not sys.stdout.isatty():
        click.echo("\t".join(c.upper() for c in columns))
        for row in rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for index, column in enumerate(columns):
        if index == 0:  # names are never cut; the other columns wrap on a narrow terminal
            widest = max([len(column)] + [len(str(row[0])) for row in rows])
            table.add_column(column, no_wrap=True, min_width=min(widest, 48))
        else:
            table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


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
