"""Device-backend settings, read from ``BOLT_DEVICE_*`` environment variables.

With no ``BOLT_DEVICE_MODE`` (or ``off``) the plugin is inert: no broker, no
network, no routes doing anything but answering 404-free Kapua errors.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MODES = ("off", "manager", "agent")
DEFAULT_MANAGER_ID = "bolt-manager"
DEFAULT_ACCOUNT = "kapua-sys"


class DeviceConfigError(ValueError):
    """A BOLT_DEVICE_* variable has a value the plugin cannot use."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        scheme = "mqtts" if self.tls else "mqtt"
        return f"BrokerAddress({scheme}://{self.host}:{self.port}, user={self.username!r})"


@dataclass(frozen=True)
class DeviceConfig:
    mode: str = "off"
    broker: BrokerAddress | None = None
    client_id: str = ""
    account: str = DEFAULT_ACCOUNT
    manager_id: str = DEFAULT_MANAGER_ID
    embedded_broker_port: int = 1883
    token_seconds: int = 1800
    refresh_seconds: int = 5 * 3600
    display_name: str = ""
    topic_prefix: str = "$EDC"
    request_timeout_ms: int = 30_000  # how long the fleet hooks (other backends' installs) wait for a reply
    offline_deadline_seconds: int = 600  # a running operation whose device stays away this long ends FAILED
    memory_reports: str = ""  # a folder: the manager writes memory reports there on SIGUSR1 (memory.py)
    stage_log: str = ""  # a file: each job request's stage times, written when the manager stops (stages.py)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeviceConfig:
        env = os.environ if environ is None else environ
        mode = (env.get("BOLT_DEVICE_MODE") or "off").strip().lower()
        if mode not in MODES:
            raise DeviceConfigError(f"BOLT_DEVICE_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "off":
            return cls()
        broker = None
        url = env.get("BOLT_DEVICE_BROKER_URL")
        if url:
            broker = parse_broker_url(url, env.get("BOLT_DEVICE_USERNAME"), env.get("BOLT_DEVICE_PASSWORD"))
        elif mode == "agent":
            raise DeviceConfigError("BOLT_DEVICE_MODE=agent needs BOLT_DEVICE_BROKER_URL")
        manager_id = env.get("BOLT_DEVICE_MANAGER_ID") or DEFAULT_MANAGER_ID
        client_id = env.get("BOLT_DEVICE_CLIENT_ID") or (manager_id if mode == "manager" else socket.gethostname())
        check_topic_word("BOLT_DEVICE_CLIENT_ID", client_id)
        check_topic_word("BOLT_DEVICE_MANAGER_ID", manager_id)
        account = env.get("BOLT_DEVICE_SCOPE") or DEFAULT_ACCOUNT
        check_topic_word("BOLT_DEVICE_SCOPE", account)
        return cls(
            mode=mode,
            broker=broker,
            client_id=client_id,
            account=account,
            manager_id=client_id if mode == "manager" else manager_id,
            embedded_broker_port=_int(env, "BOLT_DEVICE_EMBEDDED_BROKER_PORT", 1883),
            token_seconds=_int(env, "BOLT_DEVICE_TOKEN_SECONDS", 1800),
            refresh_seconds=_int(env, "BOLT_DEVICE_REFRESH_SECONDS", 5 * 3600),
            display_name=env.get("BOLT_DEVICE_DISPLAY_NAME") or client_id,
            request_timeout_ms=_int(env, "BOLT_DEVICE_REQUEST_TIMEOUT_MS", 30_000),
            offline_deadline_seconds=_int(env, "BOLT_DEVICE_OFFLINE_DEADLINE_SECONDS", 600),
            topic_prefix=topic_prefix(env, mode, broker),
            memory_reports=env.get("BOLT_DEVICE_MEMORY_REPORTS") or "",
            stage_log=env.get("BOLT_DEVICE_STAGE_LOG") or "",
        )


def topic_prefix(env: Mapping[str, str], mode: str, broker: BrokerAddress | None) -> str:
    """Kura's ``$EDC``, unless set; the embedded broker (amqtt) refuses topics starting
    with ``$``, so a manager running it defaults to ``EDC`` (set the same on its agents)."""
    value = env.get("BOLT_DEVICE_TOPIC_PREFIX") or ("EDC" if mode == "manager" and broker is None else "$EDC")
    if not value or any(ch in value for ch in "/+#\0"):
        raise DeviceConfigError(f"BOLT_DEVICE_TOPIC_PREFIX must be one topic level, not {value!r}")
    return value


def parse_broker_url(url: str, username: str | None = None, password: str | None = None) -> BrokerAddress:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``; explicit credentials win."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise DeviceConfigError(f"BOLT_DEVICE_BROKER_URL must look like mqtt://host:port, not {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=username or (unquote(parts.username) if parts.username else None),
        password=password or (unquote(parts.password) if parts.password else None),
    )


def check_topic_word(name: str, value: str) -> None:
    """Ids end up inside MQTT topics: no separators or wildcards."""
    if not value or any(ch in value for ch in "/+#\0") or value.startswith("$"):
        raise DeviceConfigError(f"{name} must be a non-empty word without '/', '+', '#' or a leading '$': {value!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise DeviceConfigError(f"{name} must be a whole number, not {raw!r}") from exc
    if value <= 0:
        raise DeviceConfigError(f"{name} must be positive")
    return value
