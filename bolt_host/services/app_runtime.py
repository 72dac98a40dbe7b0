"""One supervised app's state: status, process, port, counters, and how it is shown and stored.

The :class:`~bolt_host.services.supervisor.Supervisor` owns one
:class:`AppRuntime` per app and changes it only under ``runtime.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bolt_host.services.ports import LOOPBACK
from bolt_host.services.processes import AppProcess
from bolt_host.services.proctable import app_marker
from bolt_host.services.restarts import CrashHistory
from bolt_host.services.stats import TreeUsage
from bolt_host.storage import json_copy

STARTING, RUNNING, STOPPING, STOPPED = "starting", "running", "stopping", "stopped"
CRASHED, BACKOFF, FAILED = "crashed", "backoff", "failed"
LIVE_STATUSES = frozenset({STARTING, RUNNING, STOPPING, CRASHED, BACKOFF})
ERRORED_STATUSES = frozenset({STOPPED, CRASHED, FAILED})  # with a failed last exit: shown as "errored"
DESIRED_RUNNING, DESIRED_STOPPED = "running", "stopped"
SECTION = "supervisor"  # of the host's StateFile (runtime.json): one record per app instance
PRIVATE_APP_FIELDS = frozenset({"env", "folder", "python", "npmTree", "venvTree"})  # secrets, host paths, digests

# A context's members, in the order they are written (the app's manifest last).
_ORDER = (
    *("name", "instance", "instances", "path", "pid", "protocol", "host", "status", "startedAt", "restarts"),
    *("exitCode", "reason"),
    *("cpu", "memory", "uptime", "nextRestartAt", "lastExit", "errored", "port"),
)
USAGE_FIELDS = frozenset({"cpu", "memory"})  # from the stats sampler
CONTEXT_FIELDS = frozenset((*_ORDER, "app"))
# The attributes a context shows: setting one drops the runtime's encoded contexts.
_SHOWN_STATE = frozenset(
    {"app", "status", "process", "port", "started_at", "restarts", "exit_code", "reason", "next_restart_at"}
    | {"last_exit", "wanted_instances"}
)
ENCODED_VARIANTS = 4  # field selections kept encoded per app


class ShownChanges:
    """How often anything a supervisor's contexts show has changed (an app's shown attributes,
    an app added or dropped): the live listing keeps its encoding while the count stays."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def note(self) -> None:
        self.count += 1


def encode_json(value: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it, so spliced answers look the same."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def uptime_json(uptime: float | None) -> bytes:
    """A context's ``uptime`` as its JSON encoding writes it (milliseconds; 0.0 without a process):
    the bytes of ``repr(round(uptime, 3))``, made in less than half its time (a full ``@live`` writes
    one per app): both are the value correctly rounded to 3 decimals, repr without trailing zeros."""
    if uptime is None:
        return b"0.0"
    if not 0 <= uptime < 1e15:  # where repr could switch to an exponent
        return repr(round(uptime, 3)).encode()
    text = (b"%.3f" % uptime).rstrip(b"0")
    return text + b"0" if text.endswith(b".") else text


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


@dataclass(eq=False)
class AppRuntime:
    """Everything the supervisor knows about one app."""

    name: str
    app: dict[str, Any]
    crashes: CrashHistory
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    status: str = STOPPED
    desired: str = DESIRED_STOPPED
    generation: int = 0
    process: AppProcess | None = None
    port: int | None = None
    started_at: float | None = None  # wall clock, for startedAt
    started_monotonic: float | None = None  # for uptime
    restarts: int = 0
    exit_code: int | None = None
    reason: str | None = None
    next_restart_at: float | None = None
    last_exit: dict[str, Any] | None = None  # the last unrequested end, kept until the next start or stop
    log_offset: int = 0  # log size at spawn: the current run's lines start here
    start_task: asyncio.Task[dict[str, Any]] | None = None
    restart_task: asyncio.Task[None] | None = None
    confinement: Any = None  # a sandbox.Confinement while a confined process may be alive
    retiring: Any = None  # a rollover.Retiring: the process a rolling restart replaces, until it is gone
    instance: int = 0  # which of the app's processes (see instances.py); 0 is keyed by the app's name
    host_id: str = ""  # the supervising host's (proctable.data_dir_id): part of every marker
    draining: bool = False  # scaled away: no new requests, those in flight finish, then it stops
    wanted_instances: int = 1  # how many instances its app should run now (set when it is scaled)
    changes: ShownChanges | None = field(default=None, repr=False)  # told of each change to what it shows
    _public: tuple[dict[str, Any], bytes] | None = field(default=None, repr=False)
    _encoded: dict[frozenset[str], tuple[Any, bytes, bytes | None]] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The supervisor's key: the app's name for instance 0, ``<name>#<k>`` for instance k."""
        return self.name if self.instance == 0 else f"{self.name}#{self.instance}"

    @property
    def marker(self) -> str:
        """The ``BOLT_SUPERVISOR_ID`` of the current generation."""
        return self.marker_of(self.generation)

    def marker_of(self, generation: int) -> str:
        return app_marker(self.key, generation, self.host_id)

    @property
    def is_server(self) -> bool:
        return self.app.get("server", True) is not False

    @property
    def uptime(self) -> float | None:
        return self.uptime_at(time.monotonic())

    def uptime_at(self, now: float) -> float | None:
        """Seconds the process has run at monotonic time ``now`` (None: no process alive)."""
        if self.started_monotonic is None or self.process is None or not self.process.alive:
            return None
        return now - self.started_monotonic

    @property
    def errored(self) -> bool:
        """Ended on its own with a failure (non-zero code, signal, never ready) and not coming back by itself."""
        if self.last_exit is None or self.process is not None:
            return False
        return self.status in ERRORED_STATUSES and self.last_exit.get("code") != 0

    def cancel_restart(self) -> None:
        """Forget a pending automatic restart (a backoff's timer)."""
        if self.restart_task is not None:
            self.restart_task.cancel()
            self.restart_task = None
        self.next_restart_at = None

    def keep_exit(self, code: int | None, summary: str, log_tail: list[str]) -> None:
        """Remember how the process ended: code or signal, what it means, when, its last log lines."""
        signal_name = None
        if code is not None and code < 0:  # killed: Popen's negative signal number
            try:
                signal_name = signal.Signals(-code).name
            except ValueError:
                signal_name = f"signal {-code}"
            code = None
        self.last_exit = {
            "code": code,
            "signal": signal_name,
            "reason": summary,
            "at": iso_utc(time.time()),
            "log": log_tail,
        }

    def context(self, usage: TreeUsage | None, app: dict[str, Any] | None = None) -> dict[str, Any]:
        """The public view: never the app's token or environment.  ``app``: that view's ``app``,
        copied already for another context of the same run (the events of one stop share one)."""
        context = self._live_fields(usage)
        # A fresh copy of the public view: its containers copied, its strings and numbers shared
        # (immutable).  Decoding the kept JSON made every string anew, about 70 objects per
        # context; a bulk start of 200 apps makes 800 contexts (events, answers): 1.3 MB of RSS.
        if app is None:
            app = {key: json_copy(value) for key, value in self.app.items() if key not in PRIVATE_APP_FIELDS}
        context["app"] = app
        return context

    def context_json(self, usage: TreeUsage | None, fields: frozenset[str] | None = None) -> bytes:
        """:meth:`context` (only ``fields``, when given) encoded as JSON."""
        before, after = self.encoded_parts(usage, fields)
        if after is None:
            return before
        return before + uptime_json(self.uptime) + after

    def encoded_parts(
        self, usage: TreeUsage | None, fields: frozenset[str] | None = None
    ) -> tuple[bytes, bytes | None]:
        """:meth:`context` (only ``fields``) encoded as JSON up to the uptime's value and after it
        (None: no uptime selected, the first part is the whole object).

        ``GET /api/apps/@live`` is made of these.  The encoding is kept, per field selection,
        until an attribute the context shows is set again (see ``__setattr__``) or the stats
        sampler gives a different ``usage``; a read in between only formats the uptime.
        """
        key = fields if fields is not None else CONTEXT_FIELDS
        cached = self._encoded.get(key)
        if cached is None or cached[0] is not usage:
            cached = (usage, *self._encode(key, usage))
            if len(self._encoded) < ENCODED_VARIANTS:  # a client cycling through field sets cannot grow it
                self._encoded[key] = cached
        return cached[1], cached[2]

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _SHOWN_STATE:
            object.__setattr__(self, "_encoded", {})
            changes = self.__dict__.get("changes")
            if changes is not None:
                changes.note()
        object.__setattr__(self, key, value)

    def _encode(self, fields: frozenset[str], usage: TreeUsage | None) -> tuple[bytes, bytes | None]:
        """The JSON object up to the uptime's value and after it (None: no uptime selected)."""
        context = self._live_fields(usage)
        members = [encode_json({name: context[name]})[1:-1] for name in _ORDER if name in fields and name in context]
        if "app" in fields:
            members.append(b'"app":' + self._public_app())
        if "uptime" not in fields:
            return b"{" + b",".join(members) + b"}", None
        at = [name for name in _ORDER if name in fields and name in context].index("uptime")
        head = b",".join([*members[:at], b'"uptime":'])
        rest = members[at + 1 :]
        return b"{" + head, (b"," + b",".join(rest) if rest else b"") + b"}"

    def _live_fields(self, usage: TreeUsage | None) -> dict[str, Any]:
        uptime = self.uptime
        context: dict[str, Any] = {
            "name": self.name,
            "instance": self.instance,
            "instances": self.wanted_instances,
            "path": self.app.get("path"),
            "pid": self.process.pid if self.process is not None else None,
            "protocol": "http",
            "host": LOOPBACK,
            "status": self.status,
            "startedAt": iso_utc(self.started_at),
            "restarts": self.restarts,
            "exitCode": self.exit_code,
            "reason": self.reason,
            "cpu": usage.cpu if usage else 0.0,
            "memory": usage.memory if usage else 0,
            "uptime": round(uptime, 3) if uptime is not None else 0.0,
            "nextRestartAt": iso_utc(self.next_restart_at) if self.status == BACKOFF else None,
            "lastExit": self.last_exit,
            "errored": self.errored,
        }
        if self.is_server:
            context["port"] = self.port
        return context

    def _public_app(self) -> bytes:
        """The JSON of the app without its ``env`` and the host's folder, recomputed when ``app``
        is replaced.  Only the encoding is kept (not the view as objects: per-app memory)."""
        cached = self._public
        if cached is None or cached[0] is not self.app:
            view = {key: value for key, value in self.app.items() if key not in PRIVATE_APP_FIELDS}
            cached = self._public = (self.app, encode_json(view))
        return cached[1]

    def adopt(self, process: AppProcess, record: dict[str, Any]) -> None:
        """Take over a process a previous host started, as its record describes it."""
        self.process, self.status = process, RUNNING
        if self.is_server and record.get("port"):
            self.port = int(record["port"])
        self.started_at = parse_iso(record.get("startedAt")) or process.create_time
        self.started_monotonic = time.monotonic() - max(0.0, time.time() - self.started_at)

    def record(self) -> dict[str, Any]:
        """What is persisted for adoption after a host restart."""
        process = self.process
        record: dict[str, Any] = {
            "name": self.name,
            "pid": process.pid if process is not None else None,
            "create_time": process.create_time if process is not None else None,
            "port": self.port,
            "generation": self.generation,
            "desired": self.desired,
            "startedAt": iso_utc(self.started_at),
            "restarts": self.restarts,
            "lastExit": self.last_exit,
        }
        if self.retiring is not None:
            record["retiring"] = self.retiring.record()
        if self.instance:
            record["instance"] = self.instance
        return record

    def load_record(self, record: dict[str, Any]) -> None:
        self.generation = int(record.get("generation") or 0)
        self.restarts = int(record.get("restarts") or 0)
        self.desired = record.get("desired") or DESIRED_STOPPED
        last_exit = record.get("lastExit")
        self.last_exit = last_exit if isinstance(last_exit, dict) else None
