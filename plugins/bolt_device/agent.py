"""The device agent: a bolt host that answers DEPLOY-V2 requests over MQTT.

It announces itself (BIRTH, with a per-connection ``session`` that its will
also carries), answers ``GET/packages``, ``EXEC/download`` and
``EXEC/uninstall`` with its own apps and Tasks services, and publishes
Kura-style notifications.  Notifications go through the link's outbox, so the
ones published while the broker is away are sent after the reconnect; the
last notification of each recent job is sent again whenever the manager
announces itself, so an operation still ends if the manager missed them.
A second request for a package that is already in flight is refused (500
"already in progress"), as Kura does.

Stopping (a shutdown, or the in-process restart of ``dp.reboot``) never leaves
an operation running on the manager: running jobs get a grace period to end,
the rest are cancelled and report FAILED with the reason, and the outbox is
flushed before the goodbye.  What the broker could not take is handed, with
the recent jobs, to the next agent of the same host (after an in-process
restart) through ``host.state``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bolt_host.plugin import Host

from . import wire
from .config import DeviceConfig
from .jobs import BadRequest, DownloadRequest, JobRunner, UninstallRequest, installed_packages
from .recovery import last_words
from .transport import MqttLink, NotConnected, Outgoing

log = logging.getLogger("bolt_device.agent")

REPLAY_SECONDS = 15 * 60
STOP_GRACE_SECONDS = 5.0
FLUSH_SECONDS = 5.0
HANDOVER_KEY = "device-agent-handover"
MAX_BIRTH_JOBS = 2000
INTERRUPTED = "the device's host service stopped (shutdown or restart) before this step finished"
STOPPING = "the device's host service is stopping; try again once it is back"


@dataclass
class Job:
    id: str
    package: str
    requester: str
    step: str  # the resource being worked on: download, install or uninstall
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # resource -> last metrics


class Agent:
    def __init__(self, host: Host, config: DeviceConfig) -> None:
        assert config.broker is not None
        self.host = host
        self.config = config
        self.account = config.account
        self.client_id = config.client_id
        self.prefix = config.topic_prefix
        self.jobs: dict[str, Job] = {}
        self.in_flight: dict[str, str] = {}  # package name -> job id
        self._session = ""
        self._boot = uuid.uuid4().hex
        self._manager_session: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # request handlers
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._accepted: dict[str, tuple[Job, Any]] = {}  # request id -> (job, coroutine started after the reply)
        self._stopping = False
        self.runner = JobRunner(host, self)
        self.link = MqttLink(
            config.broker,
            config.client_id,
            [
                wire.request_topic(self.account, self.client_id, "+", "+", self.prefix),
                wire.MANAGER_STATUS_FILTER,
            ],
            self._on_message,
            will=self._will,
            on_connect=self._on_connect,
        )

    async def start(self) -> None:
        # each install writes the host's small db.json seven times (two tasks' states, the app's
        # record): appended to its journal, each is one fsynced line instead of a new temp file,
        # two fsyncs and a rename (a third of a 50-host agent process's CPU per install)
        self.host.db.append_writes()
        # and each app start's two or three whole-file writes of runtime.json (a new inode each):
        # appended to its journal, one line on the event loop and an fsync of an open file
        self.host.runtime_state.append_writes()
        handover = self.host.state.pop(HANDOVER_KEY, None)
        if handover:
            self.jobs.update(handover["jobs"])
            self.link.restore_outbox(handover["outbox"])
        self._recover()
        self.link.start()
        await self.runner.open_client()  # (in a worker thread, while the connection comes up)

    def _recover(self) -> None:
        """Follow the jobs a crash cut off (or that ended before this start) to their last word;
        it goes out after the BIRTH with the other replays."""
        tasks = self.host.tasks.list()
        for word in last_words(tasks, set(self.jobs), REPLAY_SECONDS, self.config.manager_id):
            job = Job(word.job_id, word.package, word.requester, word.resource, finished=time.monotonic())
            job.last[word.resource] = word.metrics
            self.jobs[job.id] = job
            log.info("job %s (%s) ended before this start: %s %s", job.id, job.package, word.resource,
                     word.metrics.get(f"dp.{word.resource}.status"))

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self._stopping = True
        await self._end_jobs(grace)
        await self.runner.close_client()
        if not await self.link.flush(FLUSH_SECONDS):
            log.warning("the broker did not take %d notifications; they wait for the next start", self.link.queued)
        self.host.state[HANDOVER_KEY] = {"outbox": self.link.take_outbox(), "jobs": dict(self.jobs)}
        topic = wire.presence_topic(self.account, self.client_id, "DC", self.prefix)
        goodbye = Outgoing(topic, wire.Payload({"session": self._session}).encode())
        await self.link.stop(last_words=goodbye)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _end_jobs(self, grace: float) -> None:
        """Give running jobs ``grace`` seconds; cancel the rest (each reports FAILED)."""
        for job, work in self._accepted.values():  # accepted, but the reply never went out
            work.close()
            self._interrupted(job)
        self._accepted.clear()
        if self._job_tasks:
            await asyncio.wait(list(self._job_tasks), timeout=grace)
        for task in list(self._job_tasks):
            task.cancel()
        await asyncio.gather(*self._job_tasks, return_exceptions=True)

    def _interrupted(self, job: Job) -> None:
        log.warning("job %s (%s %s) interrupted by the host service stopping", job.id, job.step, job.package)
        self.notify(job.id, job.step, "FAILED", 0, INTERRUPTED)
        job.finished = time.monotonic()
        self.in_flight.pop(job.package, None)

    # presence -----------------------------------------------------------------
    def _will(self) -> Outgoing:
        self._session = uuid.uuid4().hex
        payload = wire.Payload({"session": self._session})
        return Outgoing(wire.presence_topic(self.account, self.client_id, "LWT", self.prefix), payload.encode())

    def birth_metrics(self) -> dict[str, Any]:
        metrics = self._kura_birth_metrics()
        # bolt extensions: this start's id and the jobs it follows, so the manager can end the
        # operations a crash made it forget (bolt_device.reconciler); too many to list: none
        metrics["bolt.boot"] = self._boot
        if len(self.jobs) <= MAX_BIRTH_JOBS:
            metrics["bolt.jobs"] = ",".join(sorted(self.jobs))
        return metrics

    def _kura_birth_metrics(self) -> dict[str, Any]:
        return {
            "session": self._session,
            "display_name": self.config.display_name or self.client_id,
            "model_name": "bolt-host",
            "model_id": "bolt-host",
            "firmware_version": str(self.host.version),
            "application_framework_version": f"bolt-host {self.host.version}",
            "os_version": f"{platform.system()} {platform.release()}",
            "application_ids": wire.APP,
            "uptime": int(self.host.uptime * 1000),
        }

    async def _announce(self) -> None:
        birth = wire.Payload(self.birth_metrics())
        topic = wire.presence_topic(self.account, self.client_id, "BIRTH", self.prefix)
        await self.link.publish(topic, birth.encode())
        self._replay()

    async def _on_connect(self) -> None:
        await self._announce()

    def _replay(self) -> None:
        """Send again the last notification of each recent job (the manager ignores duplicates)."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.finished is not None and now - job.finished > REPLAY_SECONDS:
                del self.jobs[job.id]
                continue
            for resource, metrics in job.last.items():
                self._send_notification(job, resource, metrics)

    # incoming -----------------------------------------------------------------
    async def _on_message(self, topic: str, raw: bytes, retained: bool) -> None:
        if topic.startswith("bolt/manager/"):
            status = wire.Payload.decode(raw).metrics
            session = status.get("session")
            if status.get("online") and session != self._manager_session:
                self._manager_session = session
                await self._announce()
            return
        parsed = wire.Topic.parse(topic, self.prefix)
        if parsed is None or parsed.app != wire.APP or len(parsed.rest) != 2:
            return
        verb, resource = parsed.rest
        if verb not in ("GET", "EXEC"):
            return  # REPLY/NOTIFY of our own, or something else
        request = wire.Payload.decode(raw)
        self._spawn(self._handle(verb, resource, request))

    def _spawn(self, coroutine: Any, group: set[asyncio.Task[Any]] | None = None) -> None:
        tasks = self._tasks if group is None else group
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _handle(self, verb: str, resource: str, request: wire.Payload) -> None:
        metrics = request.metrics
        request_id = str(metrics.get("request.id") or "")
        requester = str(metrics.get("requester.client.id") or "")
        if not request_id or not requester or "/" in request_id + requester or "+" in requester:
            log.warning("request without a usable request.id / requester.client.id ignored")
            return
        try:
            code, message, body = await self._answer(verb, resource, metrics, requester)
        except BadRequest as exc:
            code, message, body = wire.BAD_REQUEST, str(exc), None
        except Exception as exc:  # never leave the manager waiting for a reply
            log.exception("request %s/%s failed", verb, resource)
            code, message, body = wire.ERROR, f"{type(exc).__name__}: {exc}", None
        reply: dict[str, Any] = {"response.code": code}
        if message:
            reply["response.exception.message"] = message
        payload = wire.Payload(reply, body=body)
        topic = wire.reply_topic(self.account, requester, self.client_id, request_id, self.prefix)
        try:  # answer first: the manager's REST call is waiting for it
            await self.link.publish(topic, payload.encode())
        except NotConnected:
            self.link.enqueue(topic, payload.encode())
        accepted = self._accepted.pop(request_id, None)
        if accepted is not None:
            self._spawn(accepted[1], self._job_tasks)

    async def _answer(
        self, verb: str, resource: str, metrics: dict[str, Any], requester: str
    ) -> tuple[int, str, Any]:
        if verb == "GET" and resource == "packages":
            return wire.OK, "", {"packages": installed_packages(self.host)}
        if verb == "EXEC" and resource == "download":
            download = DownloadRequest.from_metrics(metrics)
            job = Job(download.job_id, download.name, requester, "download")
            return self._start(metrics, job, self.runner.download, download)
        if verb == "EXEC" and resource == "uninstall":
            uninstall = UninstallRequest.from_metrics(metrics)
            job = Job(uninstall.job_id, uninstall.name, requester, "uninstall")
            return self._start(metrics, job, self.runner.uninstall, uninstall)
        return wire.NOT_FOUND, f"{verb}/{resource} is not supported by this device", None

    def _start(self, metrics: dict[str, Any], job: Job, action: Any, request: Any) -> tuple[int, str, Any]:
        """Accept a job (it starts once the reply is out) unless its package is in flight."""
        known = self.jobs.get(job.id)
        if known is not None:  # the same request again (a manager re-sends after a broker restart)
            for resource, metrics in known.last.items():
                self._send_notification(known, resource, metrics)
            return wire.OK, "", None
        if self._stopping:
            return wire.ERROR, STOPPING, None
        if job.package in self.in_flight:
            return wire.ERROR, f"An operation on {job.package} is already in progress", None
        self.jobs[job.id] = job
        self.in_flight[job.package] = job.id

        async def run() -> None:
            try:
                await action(request)
            except asyncio.CancelledError:
                self._interrupted(job)
                raise
            finally:
                job.finished = time.monotonic()
                self.in_flight.pop(job.package, None)

        self._accepted[str(metrics["request.id"])] = (job, run())
        return wire.OK, "", None

    # notifications ------------------------------------------------------------
    def notify(self, job_id: str, resource: str, status: str, progress: int, message: str = "", **extra: Any) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        prefix = f"dp.{resource}."
        metrics: dict[str, Any] = {
            "job.id": job_id,
            "dp.name": job.package,
            prefix + "status": status,
            prefix + "progress": int(progress),
            **extra,
        }
        if message:
            metrics[prefix + "error.message"] = message
        job.step = resource
        job.last[resource] = metrics
        self._send_notification(job, resource, metrics)

    def requester_of(self, job_id: str) -> str | None:
        job = self.jobs.get(job_id)
        return job.requester if job is not None else None

    def _send_notification(self, job: Job, resource: str, metrics: dict[str, Any]) -> None:
        topic = wire.notify_topic(self.account, job.requester, self.client_id, resource, self.prefix)
        self.link.enqueue(topic, wire.Payload(metrics).encode(), qos=wire.QOS)
