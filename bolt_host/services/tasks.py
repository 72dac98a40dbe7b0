"""Tasks: queued background jobs with a status, progress, a log and cancellation.

Every store backend runs its downloads, installs, uninstalls and firmware
flashes as tasks, through ``host.tasks``::

    async def job(task: TaskHandle) -> dict:
        task.log("=== checking checksum")
        task.progress(0.5)
        task.check_cancelled()          # raises TaskCancelled if cancel() was called
        return {"path": "..."}          # stored as the record's ``result``

    record = host.tasks.submit("download", "notes", "1.0.0", job, dedupe_key="download:notes")
    record = await host.tasks.wait(record["id"], timeout=60)

API (all methods run on the host's event loop):

``Tasks(db, log_dir, publish=None, limits=None, *, keep_finished=1000)``
    ``limits`` maps a kind to how many of its tasks may run at once; the
    defaults are download 2, install 1, uninstall 1, firmware 1, and any other
    kind gets 1.  Each kind has its own FIFO queue.  Only the newest
    ``keep_finished`` finished tasks are kept (rows and logs); None keeps all.
``await start()`` / ``await shutdown(grace=5.0)``
    ``start`` marks tasks that a crash left ``queued`` or ``running`` as
    ``failed`` (the reason goes into ``error`` and the log) and starts the
    workers.  ``shutdown`` asks running jobs to stop, waits up to ``grace``
    seconds, then cancels them; they and every queued task end ``failed`` with
    "host shut down".
``submit(kind, module, version, job, *, dedupe_key=None, meta=None) -> dict``
    Queues ``job`` (an ``async`` callable taking a :class:`TaskHandle`) and
    returns the new record.  If a queued or running task has the same
    ``dedupe_key`` its record is returned instead and ``job`` is dropped, so two
    concurrent requests for the same thing make one task.
``get(id)``, ``list(kind=None, module=None, status=None)`` (newest first),
``await wait(id, timeout=None)`` (the finished record; ``TimeoutError``),
``cancel(id)`` (a queued task ends ``canceled`` at once; a running one is asked
to stop and ends ``canceled`` when its job raises :class:`TaskCancelled`, or
with its normal outcome if it finishes first), ``remove(id)`` (a finished task
and its log), ``read_log(id, start=0, end=None) -> (text, more, total)``.
Unknown ids raise ``KeyError``.

A record is ``{id, kind, status, module, version, create_time, start_time,
end_time, progress, error, result, meta, dedupe_key}``; ``status`` is one of
queued, running, succeeded, failed, canceled; times are ``YYYY-MM-DD
HH:MM:SS`` (host local time) or None; ``progress`` is 0..1.  Records are kept
in the ``tasks`` table; ids come from a persisted counter, so an id is never
reused, even after rows are removed.  Progress is kept in memory while a task
runs and stored when it ends.

Events (published with the record as body): ``task-queued``, ``task-started``,
``task-succeeded``, ``task-failed``, ``task-canceled``.

Log: ``log_dir/<id>.log``, in the robot App Store's style::

    id: 5
    create time: 2024-01-03 18:46:47
    install task notes(1.0.0) added
    start time: 2024-01-03 18:46:47
    install task notes(1.0.0) begin
    === ...lines the job logs...
    end time: 2024-01-03 18:46:49
    install task notes(1.0.0) succeeded
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tinydb.table import Document

from bolt_host.services.tasklogs import TaskLogs, format_time
from bolt_host.storage import INITIAL_SCHEMA, Database

log = logging.getLogger("bolt_host.tasks")

TABLE = "tasks"
COUNTER_TABLE = "tasks_counter"
SCHEMAS = {TABLE: INITIAL_SCHEMA, COUNTER_TABLE: INITIAL_SCHEMA}
DEFAULT_LIMITS = {"download": 2, "install": 1, "uninstall": 1, "firmware": 1}
ACTIVE = frozenset({"queued", "running"})
FINISHED = frozenset({"succeeded", "failed", "canceled"})
SHUTDOWN_REASON = "host shut down"
CRASH_REASON_RUNNING = "the host stopped while this task was running (crash or kill); marked failed at boot"
CRASH_REASON_QUEUED = "the host stopped before this task started (crash or kill); marked failed at boot"

Publish = Callable[[str, Any], Awaitable[Any]]
Job = Callable[["TaskHandle"], Awaitable[Any]]


# The task whose job is running in this asyncio context, so code deep in an install (the
# package manager's output, its cancel checks) reaches the task log without being passed it.
_CURRENT: contextvars.ContextVar[TaskHandle | None] = contextvars.ContextVar("bolt_current_task", default=None)


def current_task() -> TaskHandle | None:
    """The :class:`TaskHandle` of the task running the caller, or None outside any task."""
    return _CURRENT.get()


class TaskCancelled(Exception):
    """Raised inside a job (by :meth:`TaskHandle.check_cancelled`) when it should stop."""


class TaskHandle:
    """What a job gets: its task's identity, a log, progress and the cancel flag."""

    def __init__(self, tasks: Tasks, record: dict[str, Any]) -> None:
        self._tasks = tasks
        self.id: int = record["id"]
        self.kind: str = record["kind"]
        self.module: str = record["module"]
        self.version: str | None = record["version"]
        self.meta: dict[str, Any] = record.get("meta") or {}

    def log(self, line: str) -> None:
        """Append ``line`` to the task log."""
        self._tasks.logs.append(self.id, line)

    def progress(self, fraction: float) -> None:
        """Report progress, 0..1 (values outside are clamped)."""
        self._tasks._set_progress(self.id, fraction)

    @property
    def cancelled(self) -> bool:
        return self.id in self._tasks._cancel_requested

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task was asked to stop."""
        if self.cancelled:
            raise TaskCancelled(self._tasks._cancel_requested[self.id])


class Tasks:
    def __init__(
        self,
        db: Database,
        log_dir: Path,
        publish: Publish | None = None,
        limits: dict[str, int] | None = None,
        *,
        keep_finished: int | None = 1000,
    ) -> None:
        self._db = db
        self._keep_finished = keep_finished
        self.logs = TaskLogs(log_dir)
        self._publish = publish
        self._limits = {**DEFAULT_LIMITS, **(limits or {})}
        self._records: dict[int, dict[str, Any]] = {}
        self._jobs: dict[int, Job] = {}
        self._queues: dict[str, asyncio.Queue[int]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._done: dict[int, asyncio.Event] = {}
        self._cancel_requested: dict[int, str] = {}
        self._dedupe: dict[str, int] = {}
        self._pending_events: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Load the table, fail what a crash cut off, and start the workers."""
        if self._started:
            return
        self._db.migrate_all(SCHEMAS)
        for row in self._db.table(TABLE).all():
            self._records[row.doc_id] = {**row, "id": row.doc_id}
        for record in sorted(self._records.values(), key=lambda r: r["id"]):
            if record["status"] in ACTIVE:
                reason = CRASH_REASON_RUNNING if record["status"] == "running" else CRASH_REASON_QUEUED
                self._finish(record, "failed", error=reason)
        self._ensure_counter_above(max(self._records, default=0))
        await self._stored()
        self._prune()
        self._started = True
        for kind in DEFAULT_LIMITS:
            self._queue_for(kind)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop running jobs (cooperatively, then by force) and fail what is left."""
        if not self._started or self._closing:
            return
        self._closing = True
        for task_id in list(self._running):
            self._request_cancel(task_id, SHUTDOWN_REASON)
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=grace)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for record in list(self._records.values()):
            if record["status"] in ACTIVE:
                self._finish(record, "failed", error=SHUTDOWN_REASON)
        self.logs.close()  # (a cancel requested after a task's end left its file open)
        await self.drain_events()
        await self._stored()

    async def drain_events(self) -> None:
        """Wait until every event published so far has been handed to the bus."""
        while self._pending_events:
            await asyncio.gather(*list(self._pending_events), return_exceptions=True)

    # public API --------------------------------------------------------------
    def submit(
        self,
        kind: str,
        module: str,
        version: str | None,
        job: Job,
        *,
        dedupe_key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue ``job``; return its record (or the active duplicate's record)."""
        if not self._started or self._closing:
            raise RuntimeError("the task service is not running")
        if dedupe_key is not None:
            existing = self._dedupe.get(dedupe_key)
            if existing is not None and self._records[existing]["status"] in ACTIVE:
                return self.get(existing)  # type: ignore[return-value]
        record = self._new_record(kind, module, version, dedupe_key, meta)
        task_id = record["id"]
        self._jobs[task_id] = job
        self._done[task_id] = asyncio.Event()
        if dedupe_key is not None:
            self._dedupe[dedupe_key] = task_id
        self.logs.append(task_id, f"id: {task_id}\ncreate time: {record['create_time']}\n{_title(record)} added")
        self._queue_for(kind).put_nowait(task_id)
        self._emit("task-queued", record)
        return dict(record)

    def get(self, task_id: int) -> dict[str, Any] | None:
        record = self._records.get(int(task_id))
        return _copy(record) if record else None

    def list(
        self, kind: str | None = None, module: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Records matching every given filter, newest first."""
        found = [
            _copy(r)
            for r in self._records.values()
            if (kind is None or r["kind"] == kind)
            and (module is None or r["module"] == module)
            and (status is None or r["status"] == status)
        ]
        return sorted(found, key=lambda r: r["id"], reverse=True)

    async def wait(self, task_id: int, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task has finished and return its record."""
        record = self._require(task_id)
        if record["status"] in ACTIVE:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                await self._done[record["id"]].wait()
        await self._stored()  # the outcome a caller acts on is on disk first
        return self.get(record["id"])  # type: ignore[return-value]

    def cancel(self, task_id: int) -> dict[str, Any]:
        """Cancel a queued task now, or ask a running one to stop; return its record."""
        record = self._require(task_id)
        if record["status"] == "queued":
            self.logs.append(record["id"], "=== canceled before it started")
            self._finish(record, "canceled")
        elif record["status"] == "running":
            self._request_cancel(record["id"], "canceled on request")
        return self.get(record["id"])  # type: ignore[return-value]

    def remove(self, task_id: int) -> None:
        """Forget a finished task and delete its log (its id is not reused)."""
        record = self._require(task_id)
        if record["status"] in ACTIVE:
            raise ValueError(f"task {record['id']} is still {record['status']}")
        with self._db.transaction():
            self._db.table(TABLE).remove(doc_ids=[record["id"]])
        self._records.pop(record["id"], None)
        self.logs.remove(record["id"])

    def read_log(self, task_id: int, start: int = 0, end: int | None = None) -> tuple[str, bool, int]:
        """Characters ``[start, end)`` of the log, whether more is or will be available, and the total.

        ``more`` is true when text exists beyond ``end`` or the task is still
        queued or running (its log may grow), so a reader polls until it is false.
        """
        record = self._require(task_id)
        text, total = self.logs.read(record["id"], start, end)
        consumed = total if end is None else min(max(int(end), 0), total)
        more = consumed < total or record["status"] in ACTIVE
        return text, more, total

    # workers -----------------------------------------------------------------
    def _queue_for(self, kind: str) -> asyncio.Queue[int]:
        queue = self._queues.get(kind)
        if queue is None:
            queue = self._queues[kind] = asyncio.Queue()
            for number in range(max(1, int(self._limits.get(kind, 1)))):
                worker = asyncio.create_task(self._worker(queue), name=f"bolt-tasks-{kind}-{number}")
                self._workers.append(worker)
        return queue

    async def _worker(self, queue: asyncio.Queue[int]) -> None:
        while True:
            task_id = await queue.get()
            record = self._records.get(task_id)
            if record is None or record["status"] != "queued":
                continue  # canceled (or failed at shutdown) while it waited
            job = self._jobs.pop(task_id)
            runner = asyncio.ensure_future(self._run(record, job))
            self._running[task_id] = runner
            try:
                await runner  # cancelling the worker (shutdown) cancels the job too
            except Exception:  # never let one task's failure end the worker (and its whole queue)
                log.exception("task %s: bookkeeping failed", task_id)
            finally:
                self._running.pop(task_id, None)

    async def _run(self, record: dict[str, Any], job: Job) -> None:
        task_id = record["id"]
        record.update(status="running", start_time=format_time())
        self._keep(record, f"start time: {record['start_time']}", f"{_title(record)} begin")
        await self._stored()  # a crash from here on finds it running (its reason at boot says so)
        self._emit("task-started", record)
        handle = TaskHandle(self, record)
        _CURRENT.set(handle)  # _run is its own asyncio task: the value stays within this job
        try:
            result = await job(handle)
        except TaskCancelled as exc:
            if self._closing:
                self._finish(record, "failed", error=SHUTDOWN_REASON)
            else:
                self._finish(record, "canceled", error=str(exc) or None)
        except asyncio.CancelledError:
            self._finish(record, "failed", error=SHUTDOWN_REASON)
            raise
        except Exception as exc:  # a failed job is a failed task, never a crashed worker
            reason = _reason(exc)
            log.info("task %s (%s %s) failed: %s", task_id, record["kind"], record["module"], reason)
            self._finish(record, "failed", error=reason)
        else:
            self._finish(record, "succeeded", result=_jsonable(result))

    # state changes -----------------------------------------------------------
    def _finish(self, record: dict[str, Any], status: str, error: str | None = None, result: Any = None) -> None:
        task_id = record["id"]
        record.update(status=status, end_time=format_time(), error=error, result=result)
        if status == "succeeded":
            record["progress"] = 1.0
        outcome = f"failed: {error}" if status == "failed" and error else status
        self._keep(record, f"end time: {record['end_time']}", f"{_title(record)} {outcome}")
        self.logs.finished(task_id)
        self._cancel_requested.pop(task_id, None)
        self._jobs.pop(task_id, None)
        if self._dedupe.get(record.get("dedupe_key") or "") == task_id:
            del self._dedupe[record["dedupe_key"]]
        done = self._done.pop(task_id, None)
        if done is not None:
            done.set()
        self._emit(f"task-{status}", record)
        self._prune(spare=task_id)

    def _prune(self, spare: int | None = None) -> None:
        """Forget the oldest finished tasks beyond ``keep_finished`` (never ``spare``, just finished)."""
        if self._keep_finished is None:
            return
        finished = sorted(i for i, r in self._records.items() if r["status"] in FINISHED and i != spare)
        excess = finished[: max(0, len(finished) + (spare is not None) - self._keep_finished)]
        if not excess:
            return
        with self._db.transaction():
            self._db.table(TABLE).remove(doc_ids=excess)
        for task_id in excess:
            self._records.pop(task_id, None)
            self.logs.remove(task_id)

    def _request_cancel(self, task_id: int, reason: str) -> None:
        if task_id not in self._cancel_requested:
            self._cancel_requested[task_id] = reason
            self.logs.append(task_id, f"=== cancel requested ({reason})")

    def _set_progress(self, task_id: int, fraction: float) -> None:
        record = self._records.get(task_id)
        if record is not None and record["status"] == "running":
            record["progress"] = round(min(max(float(fraction), 0.0), 1.0), 4)

    def _new_record(
        self, kind: str, module: str, version: str | None, dedupe_key: str | None, meta: dict[str, Any] | None
    ) -> dict[str, Any]:
        with self._db.batch():  # the id counter and the record: one fsynced write of the file, not two
            record = {
                "id": self._next_id(),
                "kind": kind,
                "status": "queued",
                "module": module,
                "version": version,
                "create_time": format_time(),
                "start_time": None,
                "end_time": None,
                "progress": 0.0,
                "error": None,
                "result": None,
                "meta": _jsonable(meta or {}),
                "dedupe_key": dedupe_key,
            }
            self._save(record)
        # only once stored: a record that cannot be (disk full) is never half-queued
        self._records[record["id"]] = record
        return record

    def _keep(self, record: dict[str, Any], *lines: str) -> None:
        """Store a task's new state (running, or how it ended) and log lines.  The state is in
        memory at once and written off the event loop, one write for every change made before it
        began (hosts that run many tasks at once, such as 50 device agents in one process, kept
        their shared event loop waiting on each fsync); :meth:`wait` returns once it is stored.
        A failed write (disk full) is logged, not raised, so the outcome still reaches waiters and
        the queue goes on (at boot, a task whose end was never stored is marked failed like any
        interrupted one)."""
        try:
            with self._db.later():
                self._table_upsert(record)
            self.logs.append(record["id"], "\n".join(lines))  # one open of the file, not one per line
        except OSError as exc:
            log.error("task %s: could not store its %s state: %s", record["id"], record["status"], exc)
        with contextlib.suppress(RuntimeError):  # no running loop: the next write or flush takes it
            flush = asyncio.ensure_future(self._stored())
            self._pending_events.add(flush)
            flush.add_done_callback(self._pending_events.discard)

    async def _stored(self) -> None:
        """Wait until every task state so far is on disk; a failed write is logged (see :meth:`_keep`)."""
        try:
            await self._db.flush()
        except OSError as exc:
            log.error("could not store the tasks' latest states: %s", exc)

    def _save(self, record: dict[str, Any]) -> None:
        with self._db.transaction():
            self._table_upsert(record)

    def _table_upsert(self, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k != "id"}
        self._db.table(TABLE).upsert(Document(fields, doc_id=record["id"]))

    def _next_id(self) -> int:
        with self._db.transaction():
            table = self._db.table(COUNTER_TABLE)
            row = table.get(doc_id=1)
            next_id = int(row["last_id"]) + 1 if row else 1
            table.upsert(Document({"last_id": next_id}, doc_id=1))
        return next_id

    def _ensure_counter_above(self, highest: int) -> None:
        with self._db.transaction():
            table = self._db.table(COUNTER_TABLE)
            row = table.get(doc_id=1)
            if row is None or int(row["last_id"]) < highest:
                table.upsert(Document({"last_id": highest}, doc_id=1))

    def _require(self, task_id: int) -> dict[str, Any]:
        record = self._records.get(int(task_id))
        if record is None:
            raise KeyError(f"no task {task_id}")
        return record

    def _emit(self, name: str, record: dict[str, Any]) -> None:
        if self._publish is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop (start-up recovery outside one)
            event = asyncio.ensure_future(self._publish(name, _copy(record)))
            self._pending_events.add(event)
            event.add_done_callback(self._pending_events.discard)


def _title(record: dict[str, Any]) -> str:
    version = f"({record['version']})" if record.get("version") else ""
    return f"{record['kind']} task {record['module']}{version}"


def _reason(exc: BaseException) -> str:
    """One line saying why a job failed (a BoltError's message without its code)."""
    message = str(getattr(exc, "message", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(record))
    return copied
