"""The fleet manager's MQTT side: presence, request/reply and notifications.

It subscribes to every device's BIRTH/DC/LWT, to the replies and the
notifications addressed to it (``$EDC/<account>/<manager>/DEPLOY-V2/...``),
and keeps a retained ``online`` status that tells agents to re-announce
themselves (and re-send the last notifications of their recent jobs) whenever
the manager (re)connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from typing import Any

from . import wire
from .accounts import Accounts
from .config import DeviceConfig
from .devices import Devices, require_reachable
from .kapua import KapuaError, iso_from_ms, send_failed, timed_out
from .operations import Operations
from .reconciler import Reconciler
from .stages import StageLog
from .transport import MqttLink, NotConnected, Outgoing

log = logging.getLogger("bolt_device.manager")
NOTIFICATION_BATCH = 500
RECONNECT_WAIT_SECONDS = 5.0
RESEND_PAUSE_SECONDS = 0.5


class Manager:
    def __init__(
        self, config: DeviceConfig, accounts: Accounts, devices: Devices, operations: Operations, publish: Any
    ) -> None:
        assert config.broker is not None
        self.config = config
        self.accounts = accounts
        self.devices = devices
        self.operations = operations
        self._publish_event = publish
        self._pending: dict[str, tuple[asyncio.Future[wire.Payload], str, str]] = {}  # id -> (reply, account, client)
        self._sent: dict[str, tuple[str, str, bytes]] = {}  # id -> (device id, topic, payload) of a waiting job
        self._sessions: dict[str, str] = {}  # device id -> session nonce of its current connection
        self._inbox: asyncio.Queue[tuple[str, str, str, wire.Payload]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._presence_writer: asyncio.Task[None] | None = None
        self._resending: set[asyncio.Task[None]] = set()
        self.stages = StageLog(config.stage_log)
        self.reconciler = Reconciler(devices, operations, config.offline_deadline_seconds, self._ended)
        me = config.client_id
        self.prefix = config.topic_prefix
        self.link = MqttLink(
            config.broker,
            me,
            [
                f"{self.prefix}/+/+/MQTT/+",
                f"{self.prefix}/+/{me}/{wire.APP}/REPLY/+/+",
                f"{self.prefix}/+/{me}/{wire.APP}/NOTIFY/+/+",
            ],
            self._on_message,
            will=Outgoing(wire.manager_status_topic(me), wire.Payload({"online": False}).encode(), retain=True),
            on_connect=self._on_connect,
        )

    async def start(self) -> None:
        self.devices.mark_all_disconnected()
        self._worker = asyncio.create_task(self._apply_notifications(), name="device-notifications")
        self.reconciler.start()
        self.link.start()

    async def stop(self) -> None:
        offline = Outgoing(
            wire.manager_status_topic(self.config.client_id), wire.Payload({"online": False}).encode(), retain=True
        )
        await self.link.stop(last_words=offline)
        await self.reconciler.stop()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        for future, _, _ in self._pending.values():
            if not future.done():
                future.cancel()
        if self._presence_writer is not None:
            with contextlib.suppress(Exception):
                await self._presence_writer
        await self._store_presence()
        self.stages.write()

    def _presence_changed(self) -> None:
        if self._presence_writer is None or self._presence_writer.done():
            self._presence_writer = asyncio.create_task(self._store_presence(), name="device-presence")

    async def _store_presence(self) -> None:
        """Store presence in batches (the write runs off the event loop): what arrives during a
        write goes in the next."""
        while (dirty := self.devices.take_presence()):
            try:
                self.devices.store_presence(dirty)
                await self.devices.saved()
            except Exception:
                log.exception("could not store the presence of %d devices; kept for the next change", len(dirty))
                self.devices.retry_presence(dirty)
                return

    async def _on_connect(self) -> None:
        status = wire.Payload({"online": True, "session": uuid.uuid4().hex})
        await self.link.publish(wire.manager_status_topic(self.config.client_id), status.encode(), retain=True)

    def _send_again(self, device_id: str) -> None:
        """A broker restart loses what it had not delivered (clean sessions, no persistence): when a
        device (re)announces itself, it is subscribed again, so its job requests still waiting for a
        reply go out again (from a task: the BIRTHs of a whole fleet must not wait for the broker's
        acknowledgements one by one); an agent answers a job it already knows as before."""
        waiting = [(request_id, topic, payload) for request_id, (target, topic, payload) in self._sent.items()
                   if target == device_id and request_id in self._pending]
        if waiting:
            task = asyncio.create_task(self._publish_all(waiting))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)

    async def _publish_all(self, messages: list[tuple[str, str, bytes]]) -> None:
        """Publish each request while its call still waits; one the broker did not acknowledge in
        time (a fleet reconnecting at once loads it) is published again rather than dropped."""
        for request_id, topic, payload in messages:
            while request_id in self._pending:
                try:
                    await self.link.publish(topic, payload, qos=wire.QOS)
                    break
                except NotConnected:
                    await asyncio.sleep(RESEND_PAUSE_SECONDS)

    # requests -----------------------------------------------------------------
    async def request(
        self, device: dict[str, Any], verb: str, resource: str, metrics: dict[str, Any], timeout_ms: int
    ) -> wire.Payload:
        """Send a DEPLOY-V2 request to ``device`` and wait for its reply."""
        require_reachable(device)
        if timeout_ms <= 0:  # no reply can come in time; unlike Kapua, nothing is sent that would act unseen
            raise timed_out(timeout_ms)
        account = self.accounts.get(device["scopeId"])
        if account is None:
            raise send_failed("the device's account no longer exists")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[wire.Payload] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, account["name"], device["clientId"])
        job_id = str(metrics.get("job.id", request_id))
        self.stages.alias(request_id, job_id)
        # encoded once and only the bytes kept while the call waits (500 calls wait at once in a burst)
        payload = wire.Payload(
            {**metrics, "request.id": request_id, "requester.client.id": self.config.client_id}
        ).encode()
        topic = wire.request_topic(account["name"], device["clientId"], verb, resource, self.prefix)
        try:
            if verb == "EXEC":  # only jobs are safe to send twice (the job id makes them idempotent)
                self._sent[request_id] = (device["id"], topic, payload)
            try:
                async with asyncio.timeout(timeout_ms / 1000.0):
                    await self._publish_request(topic, payload)
                    self.stages.mark(job_id, "published")
                    reply = await future
                    self.stages.mark(job_id, "resumed")
                    return reply
            except TimeoutError as exc:
                raise timed_out(timeout_ms) from exc
        finally:
            self._pending.pop(request_id, None)
            self._sent.pop(request_id, None)

    async def _publish_request(self, topic: str, payload: bytes) -> None:
        """Publish; one that fails (the link is down, or the broker did not acknowledge in time)
        is published again while the link comes back, for up to RECONNECT_WAIT_SECONDS (a broker
        restart is over in moments); a link that stays down is Kapua's send error.  The retries
        pause first: a publish cut off by the broker going away was retried at once on the dying
        connection, still marked up for a moment, and failed (a burst's calls in flight all
        ended SEND_ERROR)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_WAIT_SECONDS
        for attempt in itertools.count():
            try:
                await self.link.publish(topic, payload, qos=wire.QOS)
                return
            except NotConnected as exc:
                failure: BaseException = exc
            if attempt > 0 and loop.time() >= deadline:  # a slow acknowledgement still gets its second try
                break
            await asyncio.sleep(RESEND_PAUSE_SECONDS)
            try:
                async with asyncio.timeout_at(max(deadline, loop.time() + RESEND_PAUSE_SECONDS)):
                    await self.link.connected.wait()
            except TimeoutError as exc:
                failure = exc
                break
        raise send_failed(f"the manager is not connected to the broker ({str(failure) or 'still down'})") from failure

    # incoming -----------------------------------------------------------------
    async def _on_message(self, topic: str, raw: bytes, retained: bool) -> None:
        parsed = wire.Topic.parse(topic, self.prefix)
        if parsed is None:
            return
        payload = wire.Payload.decode(raw)
        if parsed.app == "MQTT" and parsed.rest and parsed.rest[0] in wire.PRESENCE:
            await self._presence(parsed, parsed.rest[0], payload)
        elif parsed.app == wire.APP and parsed.client == self.config.client_id and parsed.rest:
            if parsed.rest[0] == "REPLY" and len(parsed.rest) == 3:
                self._reply(parsed.account, parsed.rest[1], parsed.rest[2], payload)
            elif parsed.rest[0] == "NOTIFY" and len(parsed.rest) == 3:
                await self._notification(parsed.account, parsed.rest[1], parsed.rest[2], payload)

    async def _presence(self, topic: wire.Topic, kind: str, payload: wire.Payload) -> None:
        account = self.accounts.by_name(topic.account)
        if account is None:
            log.warning("presence from %s in unknown account %r ignored", topic.client, topic.account)
            await self._publish_event(
                "device-presence-ignored", {"clientId": topic.client, "account": topic.account, "event": kind}
            )
            return
        session = str(payload.metrics.get("session", ""))
        known = self.devices.by_client(account["id"], topic.client)
        if kind != "BIRTH" and known is not None and self._sessions.get(known["id"], session) != session:
            return  # the will or goodbye of an older connection, after a newer BIRTH
        # in memory now, stored in batches: a fleet re-announcing itself after a broker restart
        # must not queue its BIRTHs (and the re-sent requests they trigger) behind a write each
        device = self.devices.presence(account["id"], topic.client, kind, iso_from_ms(payload.sent_on), payload.metrics)
        self._presence_changed()
        if kind == "BIRTH":
            self._sessions[device["id"]] = session
            await self.reconciler.on_birth(known, device, payload.metrics)
            self._send_again(device["id"])
        await self._publish_event(
            "device-connected" if kind == "BIRTH" else "device-disconnected",
            {"id": device["id"], "clientId": topic.client, "scopeId": account["id"], "event": kind},
        )

    def _reply(self, account: str, client: str, request_id: str, payload: wire.Payload) -> None:
        """Resolve the request ``request_id`` if the reply comes from the device it was sent to."""
        pending = self._pending.get(request_id)
        if pending is None:
            return  # late reply after a timeout
        future, expected_account, expected_client = pending
        if (account, client) != (expected_account, expected_client):
            log.warning("reply %s came from %s/%s, not from %s/%s, the device asked: ignored",
                        request_id, account, client, expected_account, expected_client)
            return
        if not future.done():
            self.stages.mark(request_id, "reply")
            future.set_result(payload)

    async def _notification(self, account_name: str, client_id: str, resource: str, payload: wire.Payload) -> None:
        """Queue it: replies keep flowing while a burst of notifications is written in batches."""
        self._inbox.put_nowait((account_name, client_id, resource, payload))

    async def _apply_notifications(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while not self._inbox.empty() and len(batch) < NOTIFICATION_BATCH:
                batch.append(self._inbox.get_nowait())
            items = []
            for account_name, client_id, resource, payload in batch:
                account = self.accounts.by_name(account_name)
                device = self.devices.by_client(account["id"], client_id) if account else None
                job = payload.metrics.get("job.id", payload.metrics.get("operation.id"))
                operation = self.operations.running_by_job(str(job)) if job is not None else None
                if device is None:
                    continue
                self.devices.seen(device["id"])
                if operation is None or operation["deviceId"] != device["id"]:
                    continue  # unknown, or a re-sent notification of an operation that already ended
                items.append((operation, payload.metrics, resource, iso_from_ms(payload.sent_on)))
            try:
                ended = self.operations.notify_many(items) if items else []
                self.devices.write_seen()
                await self.operations.saved()  # one append for the batch, off the event loop
            except Exception:
                log.exception("could not store %d notifications", len(items))
                continue
            for operation in ended:
                await self._ended(operation)

    async def _ended(self, operation: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self._publish_event(
                "device-operation-ended",
                {"id": operation["id"], "deviceId": operation["deviceId"], "status": operation["status"]},
            )


def reply_error(payload: wire.Payload) -> KapuaError | None:
    """The Kapua error for a non-200 reply, or None."""
    from .kapua import device_refused

    code = payload.metrics.get("response.code", wire.OK)
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = wire.ERROR
    if code == wire.OK:
        return None
    return device_refused(code, str(payload.metrics.get("response.exception.message") or ""))
