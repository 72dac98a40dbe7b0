"""What an agent does for a request: download (+ install), uninstall, list.

Each step runs as a host Task (kinds ``download``, ``install``,
``uninstall``), so it shows up in the host's task list with its log, and
reports to the manager through Kura-style notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bolt_host.plugin import Host, read_manifest

from .downloads import display_uri, fetch, new_client, parse_hash, warm
from .reboot import schedule_reboot

NOTIFY_EVERY_PERCENT = 10
NOTIFY_MIN_SECONDS = 0.2
# Kapua's operation ids are base64url words, Kura's job ids numbers: both fit, nothing else does.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadRequest(ValueError):
    """The request's metrics are unusable; the agent replies 400."""


class Notifier(Protocol):
    def notify(self, job_id: str, resource: str, status: str, progress: int, message: str = "", **extra: Any) -> None:
        ...

    def requester_of(self, job_id: str) -> str | None:
        ...


def _text(metrics: dict[str, Any], name: str, required: bool = True, limit: int = 2048) -> str | None:
    value = metrics.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{name} must be a string of at most {limit} characters")
    return value


def _flag(metrics: dict[str, Any], name: str, default: bool) -> bool:
    value = metrics.get(name, default)
    if isinstance(value, str):
        value = value.strip().lower() == "true"
    return bool(value)


def _job_id(metrics: dict[str, Any], *names: str) -> str:
    """The request's job id, which names files and notifications: a short safe word or a BadRequest."""
    raw = next((metrics[name] for name in names if metrics.get(name) not in (None, "")), None)
    if raw is None:
        raise BadRequest("job.id is required")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise BadRequest("job.id must be a string or a whole number")
    job_id = str(raw)
    if not JOB_ID.fullmatch(job_id):
        raise BadRequest("job.id must be 1 to 64 letters, digits, '-' or '_'")
    return job_id


def cache_file(cache_dir: Path, job_id: str) -> Path:
    """``<cache_dir>/<job_id>.tgz``, refusing any name that would land elsewhere."""
    if not JOB_ID.fullmatch(job_id):
        raise BadRequest("job.id must be 1 to 64 letters, digits, '-' or '_'")
    path = cache_dir / f"{job_id}.tgz"
    if path.resolve().parent != cache_dir.resolve():
        raise BadRequest("job.id does not name a file inside the download cache")
    return path


def _delay(metrics: dict[str, Any]) -> int:
    value = metrics.get("dp.reboot.delay", 0)
    try:
        delay = int(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest("dp.reboot.delay must be a whole number of milliseconds") from exc
    if delay < 0:
        raise BadRequest("dp.reboot.delay cannot be negative")
    return delay


@dataclass(frozen=True)
class DownloadRequest:
    job_id: str
    uri: str
    name: str
    version: str
    file_hash: str | None
    install: bool
    reboot: bool
    reboot_delay_ms: int
    username: str | None
    password: str | None

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> DownloadRequest:
        job_id = _job_id(metrics, "job.id", "dp.job.id")
        file_hash = _text(metrics, "dp.download.hash", required=False, limit=256)
        if file_hash:
            try:
                parse_hash(file_hash)
            except ValueError as exc:
                raise BadRequest(f"dp.download.hash: {exc}") from exc
        return cls(
            job_id=job_id,
            uri=_text(metrics, "dp.uri") or "",
            name=_text(metrics, "dp.name", limit=256) or "",
            version=_text(metrics, "dp.version", limit=256) or "",
            file_hash=file_hash,
            install=_flag(metrics, "dp.install", True),
            reboot=_flag(metrics, "dp.reboot", False),
            reboot_delay_ms=_delay(metrics),
            username=_text(metrics, "dp.download.username", required=False, limit=256),
            password=_text(metrics, "dp.download.password", required=False, limit=1024),
        )


@dataclass(frozen=True)
class UninstallRequest:
    job_id: str
    name: str
    version: str | None
    reboot: bool
    reboot_delay_ms: int

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> UninstallRequest:
        job_id = _job_id(metrics, "job.id")
        return cls(
            job_id=job_id,
            name=_text(metrics, "dp.name", limit=256) or "",
            version=_text(metrics, "dp.version", required=False, limit=256),
            reboot=_flag(metrics, "dp.reboot", False),
            reboot_delay_ms=_delay(metrics),
        )


def installed_packages(host: Host) -> list[dict[str, Any]]:
    """Kapua ``devicePackage`` entries for the host's installed apps."""
    found = []
    for app in host.apps.list():
        name = app.get("package") or app["name"]
        state = "ACTIVE" if host.supervisor.is_active(app["name"]) else "RESOLVED"
        entry = {
            "name": name,
            "version": app["version"],
            # status: an OSGi bundle's state, for Kapua's inventory (ACTIVE = the app is running)
            "bundleInfos": {"bundleInfo": [{"name": app["name"], "version": app["version"], "status": state}]},
        }
        if app.get("dateCreated"):
            entry["installDate"] = app["dateCreated"]
        found.append(entry)
    return found


def find_app(host: Host, name: str) -> dict[str, Any] | None:
    app = host.apps.get(name)
    if app is not None:
        return app
    return next((a for a in host.apps.list() if a.get("package") == name), None)


class JobRunner:
    def __init__(self, host: Host, notifier: Notifier) -> None:
        self.host = host
        self.notifier = notifier
        self.http: Any = None  # the downloads' client (open_client); without it, one per download
        self._opening: asyncio.Future[None] | None = None

    async def open_client(self) -> None:
        """Load what a download needs and build the client every download of this runner uses, in a
        worker thread (the agent's connection comes up meanwhile; a download waits for it)."""
        self._opening = asyncio.ensure_future(asyncio.to_thread(self._build_client))
        await asyncio.shield(self._opening)

    def _build_client(self) -> None:
        warm()
        self.http = new_client()

    async def _client(self) -> Any:
        if self._opening is not None:
            with contextlib.suppress(Exception):  # (it failed: each download builds its own)
                await asyncio.shield(self._opening)
        return self.http

    async def close_client(self) -> None:
        http, self.http = await self._client(), None  # (one still being built is closed too)
        if http is not None:
            await http.aclose()

    async def _run_task(
        self, kind: str, name: str, version: str | None, job: Any, job_id: str, **meta: Any
    ) -> dict[str, Any]:
        """Run a step as a host Task; its meta lets the next boot tell the manager how a crash left it
        (see :mod:`bolt_device.recovery`)."""
        meta = {"deviceJob": job_id, "deviceRequester": self.notifier.requester_of(job_id), **meta}
        record = self.host.tasks.submit(kind, name, version, job, meta=meta)
        return await self.host.tasks.wait(record["id"])

    # download (+ install) -----------------------------------------------------
    async def download(self, request: DownloadRequest) -> None:
        notify = self.notifier.notify
        job_id = request.job_id
        cache_dir = self.host.settings.data_dir / "cache" / "device"
        cache_dir.mkdir(parents=True, exist_ok=True)
        dest = cache_file(cache_dir, job_id)
        notify(job_id, "download", "IN_PROGRESS", 0, "", **{"dp.download.index": 0})
        sizes: dict[str, int] = {"received": 0}

        async def job(task: Any) -> dict[str, Any]:
            task.log(f"=== downloading {request.name}@{request.version} from {display_uri(request.uri)}")
            last = {"percent": 0, "at": time.monotonic()}

            def progress(received: int, total: int | None) -> None:
                percent = min(99, int(received * 100 / total)) if total else 50
                task.progress(percent / 100)
                now = time.monotonic()
                if percent >= last["percent"] + NOTIFY_EVERY_PERCENT and now - last["at"] >= NOTIFY_MIN_SECONDS:
                    last.update(percent=percent, at=now)
                    notify(job_id, "download", "IN_PROGRESS", percent, "", **{"dp.download.size": total or 0})

            auth = (request.username, request.password or "") if request.username else None
            http = await self._client()
            size = await fetch(
                request.uri,
                dest,
                max_bytes=self.host.settings.max_download_bytes,
                auth=auth,
                expected_hash=request.file_hash,
                on_progress=progress,
                client=http,
            )
            sizes["received"] = size
            task.log(f"=== downloaded {size} bytes" + (", hash verified" if request.file_hash else ", no hash given"))
            return {"size": size}

        try:
            done = await self._run_task("download", request.name, request.version, job, job_id,
                                        deviceInstall=request.install)
            if done["status"] != "succeeded":
                notify(job_id, "download", "FAILED", 0, done.get("error") or done["status"])
                return
            notify(job_id, "download", "COMPLETED", 100, "", **{"dp.download.size": sizes["received"]})
            if not request.install:
                return
            if await self.install(request, dest) and request.reboot:
                schedule_reboot(self.host, request.reboot_delay_ms)
        finally:
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)

    async def install(self, request: DownloadRequest, tarball: Path) -> bool:
        notify = self.notifier.notify
        job_id = request.job_id
        notify(job_id, "install", "IN_PROGRESS", 0)
        host = self.host

        def check(root: Path) -> None:
            manifest = read_manifest(root)
            if manifest.get("name") != request.name:
                raise ValueError(f"the package names itself {manifest.get('name')!r}, not {request.name!r}")
            if str(manifest.get("version")) != request.version:
                raise ValueError(f"the package is version {manifest.get('version')!r}, not {request.version!r}")

        async def job(task: Any) -> dict[str, Any]:
            source = {"type": "url", "url": display_uri(request.uri), "operation": job_id}
            task.log(f"=== installing {request.name}@{request.version}")
            app = await host.apps.install_tarball(tarball, source, False, True, expect_name=request.name, prepare=check)
            if not app.get("firmware") and not host.supervisor.is_active(app["name"]):
                task.log(f"=== starting {app['name']}")
                await host.supervisor.start_app(app)
            return {"app": app["name"], "version": app["version"]}

        done = await self._run_task("install", request.name, request.version, job, job_id)
        if done["status"] != "succeeded":
            notify(job_id, "install", "FAILED", 0, done.get("error") or done["status"])
            return False
        notify(job_id, "install", "COMPLETED", 100)
        return True

    # uninstall ----------------------------------------------------------------
    async def uninstall(self, request: UninstallRequest) -> None:
        notify = self.notifier.notify
        job_id = request.job_id
        notify(job_id, "uninstall", "IN_PROGRESS", 0)
        host = self.host

        async def job(task: Any) -> dict[str, Any]:
            app = find_app(host, request.name)
            if app is None:
                raise ValueError(f"{request.name} is not installed")
            if request.version and app["version"] != request.version:
                raise ValueError(f"{request.name} is installed at version {app['version']}, not {request.version}")
            task.log(f"=== uninstalling {app['name']}@{app['version']}")
            await host.apps.delete(app["name"], delete_public=True, delete_source=True)
            return {"app": app["name"]}

        done = await self._run_task("uninstall", request.name, request.version, job, job_id)
        if done["status"] != "succeeded":
            notify(job_id, "uninstall", "FAILED", 0, done.get("error") or done["status"])
            return
        notify(job_id, "uninstall", "COMPLETED", 100)
        if request.reboot:
            schedule_reboot(host, request.reboot_delay_ms)
