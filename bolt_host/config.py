"""One Settings object for the host: flags > environment (``BOLT_*``) > defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
BUNDLED_LOCAL_REPO = PACKAGE_ROOT.parent / "node_modules_sample"
BUNDLED_APPS = PACKAGE_ROOT.parent / "apps"  # first-party apps that ship with the host


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/bolt-host``; else ``/var/lib/bolt-host`` for root, whose home is closed
    to the per-app uids that must reach their code below the data dir; else
    ``~/.local/share/bolt-host``."""
    base = os.environ.get("XDG_DATA_HOME")
    if base:
        return Path(base) / "bolt-host"
    if os.geteuid() == 0:
        return Path("/var/lib/bolt-host")
    return Path.home() / ".local" / "share" / "bolt-host"


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _parse_isolation(value: str) -> str:
    if value not in {"auto", "bwrap", "off"}:
        raise ValueError(f"must be auto, bwrap or off: {value!r}")
    return value


def _parse_exec_helper(value: str) -> str:
    if value not in {"auto", "off"} and not os.path.isabs(value):
        raise ValueError(f"must be auto, off or an absolute path: {value!r}")
    return value


def _parse_uid_range(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    start, end = int(low), int(high or low)
    if not (1000 <= start <= end < 2**31):
        raise ValueError(f"uid range must be ordered numbers from 1000 up: {value!r}")
    return start, end


def _parse_port_range(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    try:
        start, end = int(low), int(high or low)
    except ValueError:
        raise ValueError("not a port range: write LOW-HIGH, e.g. 20000-29999") from None
    if not (1024 <= start <= end <= 65535):
        raise ValueError("a port range must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
    return start, end


@dataclass(frozen=True)
class Settings:
    """Everything the host can be told.  Each field has an env twin ``BOLT_<NAME>``."""

    host: str = "127.0.0.1"
    port: int = 4000
    data_dir: Path = field(default_factory=default_data_dir)
    local_repo: Path = BUNDLED_LOCAL_REPO
    bundled_apps: Path = BUNDLED_APPS
    install_bundled: bool = False  # install/upgrade the apps of bundled_apps at start-up
    registry: str | None = None
    plugins_dir: Path | None = None
    plugins: tuple[str, ...] | None = None  # allow-list; None means all
    disable_plugins: tuple[str, ...] = ()
    admin_password: str | None = None
    port_range: tuple[int, int] = (20000, 29999)
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 100 * 1_048_576
    max_download_bytes: int = 200 * 1_048_576
    stop_grace_seconds: float = 10.0
    ready_timeout_seconds: float = 30.0
    proxy_timeout_seconds: float = 60.0  # an app's server silent this long: 504 through /x/
    header_timeout_seconds: float = 10.0  # a connection without complete request headers is closed
    body_idle_timeout_seconds: float = 30.0  # a request body that stops arriving this long: connection closed
    max_connections_per_ip: int = 128  # open connections per client address
    max_ws_message_bytes: int = 1_048_576  # one WebSocket message through /x/, either way
    dependency_timeout_seconds: float = 600.0  # each package-manager run of an install (npm, uv)
    stats_interval_seconds: float = 2.0
    max_instances: int = 8  # the most processes one app may run behind /x/<app>/ (bolt.instances)
    start_concurrency: int = 0  # starts of one bulk start (or the boot's autostart) at once; 0: all
    health_interval_seconds: float = 5.0  # health probe of apps running several instances (0: off)
    autostart: bool = True
    pinned_packages: tuple[str, ...] = ()
    trust_proxy: bool = False
    allowed_hosts: tuple[str, ...] = ()  # more Host header names to serve ("*": any); see host_names
    log_level: str = "info"
    isolation: str = "auto"  # auto (a uid per app as root, bubblewrap otherwise), bwrap, off
    app_uid_range: tuple[int, int] = (70000, 79999)
    exec_helper: str = "auto"  # uid mode's one-exec confinement: auto (the one scripts/setup built), off, a path
    limit_memory: str | None = None  # host-wide defaults for apps' bolt.limits
    limit_pids: int | None = 1024
    limit_cpu: float | None = None
    limit_nofile: int | None = 4096

    @property
    def default_limits(self) -> dict[str, Any]:
        """The ``limit_*`` settings as a limits layer (checked by :func:`check_limits`)."""
        from bolt_host.services.limits import check_limits

        raw = {"memory": self.limit_memory, "pids": self.limit_pids, "cpu": self.limit_cpu, "nofile": self.limit_nofile}
        return check_limits({key: value for key, value in raw.items() if value is not None})

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        shown = "127.0.0.1" if self.host in {"0.0.0.0", "::"} else self.host
        return f"http://{shown}:{self.port}"

    @property
    def host_names(self) -> frozenset[str] | None:
        """Names a request's ``Host`` header may carry (any port), or None for any name.

        Loopback names, the bound address and the public URL's host, plus ``allowed_hosts``.
        Anything else is a DNS-rebinding page (evil.example resolving to 127.0.0.1) or a
        misrouted request, and is refused before routing.
        """
        if "*" in self.allowed_hosts:
            return None
        names = {"127.0.0.1", "localhost", "::1", *(name.lower() for name in self.allowed_hosts)}
        if self.host not in {"0.0.0.0", "::"}:
            names.add(self.host.lower())
        if self.public_url:
            from urllib.parse import urlsplit

            hostname = urlsplit(self.public_url).hostname
            if hostname:
                names.add(hostname.lower())
        return frozenset(names)

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_PARSERS: dict[str, Any] = {
    "port": int,
    "data_dir": lambda v: Path(v).expanduser(),
    "local_repo": lambda v: Path(v).expanduser(),
    "bundled_apps": lambda v: Path(v).expanduser(),
    "install_bundled": _parse_bool,
    "plugins_dir": lambda v: Path(v).expanduser(),
    "plugins": _parse_list,
    "disable_plugins": _parse_list,
    "port_range": _parse_port_range,
    "max_body_bytes": int,
    "max_upload_bytes": int,
    "max_download_bytes": int,
    "stop_grace_seconds": float,
    "ready_timeout_seconds": float,
    "proxy_timeout_seconds": float,
    "header_timeout_seconds": float,
    "body_idle_timeout_seconds": float,
    "max_connections_per_ip": int,
    "max_ws_message_bytes": int,
    "dependency_timeout_seconds": float,
    "stats_interval_seconds": float,
    "max_instances": int,
    "start_concurrency": int,
    "health_interval_seconds": float,
    "autostart": _parse_bool,
    "pinned_packages": _parse_list,
    "trust_proxy": _parse_bool,
    "allowed_hosts": _parse_list,
    "isolation": _parse_isolation,
    "app_uid_range": _parse_uid_range,
    "exec_helper": _parse_exec_helper,
    "limit_pids": int,
    "limit_cpu": float,
    "limit_nofile": int,
}

# Env names that differ from BOLT_<FIELD>.
_ENV_NAMES = {"registry": "BOLT_REGISTRY_URL", "disable_plugins": "BOLT_DISABLE_PLUGINS"}


def env_name(field_name: str) -> str:
    return _ENV_NAMES.get(field_name, f"BOLT_{field_name.upper()}")


def settings_from_env(environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Build Settings from ``environ`` (default ``os.environ``), then apply non-None flags."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(env_name(f.name))
        if raw is None:
            continue
        parser = _PARSERS.get(f.name, str)
        try:
            values[f.name] = parser(raw)
        except ValueError as exc:
            raise ValueError(f"{env_name(f.name)} {raw}: {exc}") from exc
    values.update({k: v for k, v in flags.items() if v is not None})
    return Settings(**values)


def parse_setting(name: str, raw: str) -> Any:
    """Parse a raw string (a CLI flag, say) the way the env twin would be parsed."""
    return _PARSERS.get(name, str)(raw)
