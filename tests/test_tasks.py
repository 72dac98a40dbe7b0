"""The core Tasks service: queues, limits, logs, cancellation, persistence, crash recovery."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services.tasks import COUNTER_TABLE, CRASH_REASON_RUNNING, SHUTDOWN_REASON, TABLE, TaskHandle, Tasks
from bolt_host.storage import Database
from tests.helpers import async_wait_until

pytestmark = pytest.mark.timeout(30)
TIME_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, body: Any) -> None:
        self.events.append((name, body))

    def names_for(self, task_id: int) -> list[str]:
        return [name for name, body in self.events if body["id"] == task_id]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Tasks, Recorder]]:
    db = Database(tmp_path / "db.json")
    recorder = Recorder()
    tasks = Tasks(db, tmp_path / "logs" / "tasks", recorder)
    await tasks.start()
    try:
        yield tasks, recorder
    finally:
        await tasks.shutdown(grace=1.0)
        db.close()


def gated_job(gate: asyncio.Event, started: list[int] | None = None, result: Any = None):
    async def job(task: TaskHandle) -> Any:
        if started is not None:
            started.append(task.id)
        await gate.wait()
        return result

    return job


async def test_a_job_runs_and_its_record_log_and_events_tell_the_story(service) -> None:
    tasks, recorder = service

    async def job(task: TaskHandle) -> dict:
        task.log("=== installing notes:1.0.0")
        task.progress(0.5)
        task.log("=== extract")
        return {"path": "/x"}

    queued = tasks.submit("install", "notes", "1.0.0", job, meta={"source": "local"})
    assert queued["status"] == "queued" and queued["progress"] == 0.0
    done = await tasks.wait(queued["id"], timeout=5)

    assert done["status"] == "succeeded"
    assert done["result"] == {"path": "/x"} and done["progress"] == 1.0 and done["error"] is None
    assert done["meta"] == {"source": "local"}
    for key in ("create_time", "start_time", "end_time"):
        assert re.match(TIME_RE, done[key]), done[key]
    lines = tasks.read_log(done["id"])[0].splitlines()
    assert lines[0] == f"id: {done['id']}"
    assert lines[1] == f"create time: {done['create_time']}"
    assert lines[2] == "install task notes(1.0.0) added"
    assert lines[3] == f"start time: {done['start_time']}"
    assert lines[4] == "install task notes(1.0.0) begin"
    assert lines[5:7] == ["=== installing notes:1.0.0", "=== extract"]
    assert lines[-1] == "install task notes(1.0.0) succeeded"
    await tasks.drain_events()
    assert recorder.names_for(done["id"]) == ["task-queued", "task-started", "task-succeeded"]
    assert (Path(tasks.logs.folder) / f"{done['id']}.log").is_file()


def _open_files() -> set[str]:
    """The files this process holds open (its descriptors, read from /proc)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            continue
    return found


async def test_a_task_log_stays_open_while_its_task_runs_and_is_closed_at_its_end(service) -> None:
    """Each append was an open, a write and a close of the file; now the file is opened at the
    task's first line and closed at its end, and a reader sees every line as it is written."""
    tasks, _ = service
    gate, started = asyncio.Event(), []

    async def job(task: TaskHandle) -> str:
        task.log("first line")
        started.append(task.id)
        await gate.wait()
        task.log("second line")
        return "done"

    record = tasks.submit("install", "app", "1.0.0", job)
    await async_wait_until(lambda: started, timeout=10, what="the job to log its first line")
    log_path = str(tasks.logs.path(record["id"]))
    assert log_path in _open_files()
    assert "first line" in tasks.read_log(record["id"])[0]  # written through at once
    gate.set()
    done = await tasks.wait(record["id"], timeout=10)
    assert done["status"] == "succeeded"
    assert log_path not in _open_files()
    text = tasks.read_log(record["id"])[0]
    assert text.index("first line") < text.index("second line") < text.index("succeeded")


async def test_a_failing_job_records_its_reason(service) -> None:
    tasks, recorder = service

    async def job(task: TaskHandle) -> None:
        raise RuntimeError("checksum mismatch")

    record = await tasks.wait(tasks.submit("download", "notes", "1.0.0", job)["id"], timeout=5)
    assert record["status"] == "failed" and record["error"] == "checksum mismatch"
    assert tasks.read_log(record["id"])[0].splitlines()[-1] == "download task notes(1.0.0) failed: checksum mismatch"
    await tasks.drain_events()
    assert recorder.names_for(record["id"])[-1] == "task-failed"


async def test_ids_increase_and_are_never_reused(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs")
    await tasks.start()
    first = await tasks.wait(tasks.submit("x", "a", None, _noop)["id"])
    second = await tasks.wait(tasks.submit("x", "a", None, _noop)["id"])
    assert second["id"] == first["id"] + 1
    tasks.remove(second["id"])
    assert tasks.get(second["id"]) is None and not tasks.logs.path(second["id"]).exists()
    third = tasks.submit("x", "a", None, _noop)
    assert third["id"] == second["id"] + 1
    await tasks.wait(third["id"])
    await tasks.shutdown()
    db.close()

    db = Database(tmp_path / "db.json")
    again = Tasks(db, tmp_path / "logs")
    await again.start()
    assert [r["id"] for r in again.list()] == [third["id"], first["id"]]
    fourth = again.submit("x", "a", None, _noop)
    assert fourth["id"] == third["id"] + 1
    await again.shutdown()
    db.close()


async def test_a_new_task_is_one_write_of_its_record_and_the_id_counter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs")
    await tasks.start()
    gate = asyncio.Event()
    before = db.revision
    first = tasks.submit("x", "a", None, gated_job(gate))
    assert db.revision == before + 1  # before its worker starts it: one fsynced write, not two
    on_disk = json.loads((tmp_path / "db.json").read_text())
    assert on_disk[TABLE][str(first["id"])]["status"] == "queued"
    assert on_disk[COUNTER_TABLE]["1"]["last_id"] == first["id"]

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
    with pytest.raises(OSError):
        tasks.submit("x", "b", None, _noop)
    monkeypatch.undo()
    assert [r["module"] for r in tasks.list()] == ["a"]  # nothing half-queued, the id not used up
    second = tasks.submit("x", "c", None, _noop)
    assert second["id"] == first["id"] + 1
    gate.set()
    await tasks.wait(first["id"])
    await tasks.wait(second["id"])
    await tasks.shutdown()
    db.close()


async def test_concurrent_tasks_share_the_writes_of_their_states_and_each_is_stored_when_waited(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs", limits={"x": 20})
    await tasks.start()
    gate = asyncio.Event()
    records = [tasks.submit("x", f"app-{n}", None, gated_job(gate)) for n in range(20)]
    submitted = db.writes  # each submit is its own write (it raises when the record cannot be stored)
    gate.set()
    finished = await asyncio.gather(*(tasks.wait(record["id"]) for record in records))
    assert {record["status"] for record in finished} == {"succeeded"}
    on_disk = json.loads((tmp_path / "db.json").read_text())[TABLE]
    assert {on_disk[str(record["id"])]["status"] for record in records} == {"succeeded"}  # stored when waited
    # 40 changes (20 running, 20 succeeded) in a few writes off the event loop, not one each on it
    assert db.writes - submitted < 10
    await tasks.shutdown()
    db.close()


async def _noop(task: TaskHandle) -> None:
    return None


async def test_only_the_newest_finished_tasks_are_kept(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs", keep_finished=2)
    await tasks.start()
    gate = asyncio.Event()
    slow = tasks.submit("slow", "a", None, gated_job(gate))
    ids = [(await tasks.wait(tasks.submit("x", "a", None, _noop)["id"]))["id"] for _ in range(3)]
    assert [r["id"] for r in tasks.list()] == [ids[2], ids[1], slow["id"]]  # the running task is never pruned
    assert not tasks.logs.path(ids[0]).exists() and tasks.logs.path(ids[1]).exists()
    gate.set()
    assert (await tasks.wait(slow["id"]))["status"] == "succeeded"  # the oldest, but it just finished
    assert [r["id"] for r in tasks.list()] == [ids[2], slow["id"]]
    await tasks.shutdown()
    db.close()


async def test_each_kind_runs_at_most_its_limit_at_once(service) -> None:
    tasks, _ = service
    gate = asyncio.Event()
    started: list[int] = []
    downloads = [tasks.submit("download", f"p{i}", "1", gated_job(gate, started)) for i in range(3)]
    installs = [tasks.submit("install", f"p{i}", "1", gated_job(gate, started)) for i in range(2)]
    await async_wait_until(lambda: len(started) == 3, what="two downloads and one install running")
    statuses = {r["id"]: tasks.get(r["id"])["status"] for r in downloads + installs}
    assert [statuses[r["id"]] for r in downloads] == ["running", "running", "queued"]
    assert [statuses[r["id"]] for r in installs] == ["running", "queued"]
    gate.set()
    for record in downloads + installs:
        assert (await tasks.wait(record["id"], timeout=5))["status"] == "succeeded"


async def test_custom_limits_and_unknown_kinds(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs", limits={"install": 2})
    await tasks.start()
    gate = asyncio.Event()
    started: list[int] = []
    for i in range(2):
        tasks.submit("install", f"p{i}", "1", gated_job(gate, started))
    other = [tasks.submit("frobnicate", f"q{i}", None, gated_job(gate, started)) for i in range(2)]
    await async_wait_until(lambda: len(started) == 3, what="2 installs and 1 unknown-kind task")
    assert tasks.get(other[1]["id"])["status"] == "queued"
    gate.set()
    await tasks.wait(other[1]["id"], timeout=5)
    await tasks.shutdown()
    db.close()


async def test_list_filters_newest_first(service) -> None:
    tasks, _ = service
    a = await tasks.wait(tasks.submit("download", "a", "1", _noop)["id"])
    b = await tasks.wait(tasks.submit("install", "a", "1", _noop)["id"])
    c = await tasks.wait(tasks.submit("download", "b", "1", _noop)["id"])
    assert [r["id"] for r in tasks.list()] == [c["id"], b["id"], a["id"]]
    assert [r["id"] for r in tasks.list(kind="download")] == [c["id"], a["id"]]
    assert [r["id"] for r in tasks.list(module="a", kind="install")] == [b["id"]]
    assert tasks.list(status="failed") == []


async def test_same_dedupe_key_while_active_gives_the_same_task(service) -> None:
    tasks, _ = service
    gate = asyncio.Event()
    calls: list[int] = []
    first = tasks.submit("download", "notes", "1", gated_job(gate, calls), dedupe_key="download:notes")
    second = tasks.submit("download", "notes", "1", gated_job(gate, calls), dedupe_key="download:notes")
    assert second["id"] == first["id"]
    gate.set()
    await tasks.wait(first["id"], timeout=5)
    assert calls == [first["id"]]
    third = tasks.submit("download", "notes", "1", _noop, dedupe_key="download:notes")
    assert third["id"] != first["id"]
    await tasks.wait(third["id"], timeout=5)


async def test_cancel_a_queued_task_ends_it_at_once(service) -> None:
    tasks, recorder = service
    gate = asyncio.Event()
    running = tasks.submit("install", "a", "1", gated_job(gate))
    waiting = tasks.submit("install", "b", "1", gated_job(gate))
    canceled = tasks.cancel(waiting["id"])
    assert canceled["status"] == "canceled" and canceled["start_time"] is None
    gate.set()
    assert (await tasks.wait(running["id"], timeout=5))["status"] == "succeeded"
    assert tasks.get(waiting["id"])["status"] == "canceled"
    assert tasks.read_log(waiting["id"])[0].splitlines()[-1] == "install task b(1) canceled"
    await tasks.drain_events()
    assert recorder.names_for(waiting["id"]) == ["task-queued", "task-canceled"]


async def test_cancel_a_running_task_stops_it_at_its_next_check(service) -> None:
    tasks, _ = service
    step = asyncio.Event()

    async def job(task: TaskHandle) -> None:
        task.progress(0.25)
        await step.wait()
        task.check_cancelled()
        raise AssertionError("not reached")

    record = tasks.submit("download", "a", "1", job)
    await async_wait_until(lambda: tasks.get(record["id"])["progress"] == 0.25, what="progress 0.25")
    assert tasks.get(record["id"])["status"] == "running"
    assert tasks.cancel(record["id"])["status"] == "running"  # asked, not yet stopped
    step.set()
    done = await tasks.wait(record["id"], timeout=5)
    assert done["status"] == "canceled"
    assert "=== cancel requested" in tasks.read_log(record["id"])[0]


async def test_cancel_of_an_unknown_or_finished_task(service) -> None:
    tasks, _ = service
    with pytest.raises(KeyError):
        tasks.cancel(999)
    done = await tasks.wait(tasks.submit("x", "a", None, _noop)["id"])
    assert tasks.cancel(done["id"])["status"] == "succeeded"


async def test_progress_is_clamped(service) -> None:
    tasks, _ = service
    seen: list[float] = []
    gate = asyncio.Event()

    async def job(task: TaskHandle) -> None:
        task.progress(7)
        seen.append(tasks.get(task.id)["progress"])
        task.progress(-1)
        seen.append(tasks.get(task.id)["progress"])
        await gate.wait()

    record = tasks.submit("x", "a", None, job)
    await async_wait_until(lambda: len(seen) == 2)
    gate.set()
    await tasks.wait(record["id"])
    assert seen == [1.0, 0.0]


async def test_log_reads_by_character_range_while_it_grows(service) -> None:
    tasks, _ = service
    gate = asyncio.Event()
    wrote = asyncio.Event()

    async def job(task: TaskHandle) -> None:
        task.log("=== héllo wörld ✓")
        wrote.set()
        await gate.wait()
        task.log("=== second")

    record = tasks.submit("install", "a", "1", job)
    await asyncio.wait_for(wrote.wait(), 5)
    text, more, total = tasks.read_log(record["id"])
    assert more is True and total == len(text)  # running: the log may grow
    assert text.endswith("=== héllo wörld ✓\n")
    head, more_head, total_head = tasks.read_log(record["id"], 0, 4)
    assert head == "id: " and more_head and total_head == total
    pos = text.index("ö")
    assert tasks.read_log(record["id"], pos, pos + 1)[0] == "ö"
    assert tasks.read_log(record["id"], total + 10)[0] == ""
    assert tasks.read_log(record["id"], 5, 2)[0] == ""
    gate.set()
    await tasks.wait(record["id"], timeout=5)
    rest, more_after, total_after = tasks.read_log(record["id"], total)
    assert rest.startswith("=== second\n") and more_after is False and total_after > total
    assert tasks.read_log(record["id"], 0, 3)[1] is True  # more text beyond end


async def test_wait_times_out(service) -> None:
    tasks, _ = service
    gate = asyncio.Event()
    record = tasks.submit("x", "a", None, gated_job(gate))
    with pytest.raises(TimeoutError):
        await tasks.wait(record["id"], timeout=0.05)
    gate.set()
    await tasks.wait(record["id"], timeout=5)


async def test_shutdown_fails_running_and_queued_tasks(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs")
    await tasks.start()
    never = asyncio.Event()
    polite_started = asyncio.Event()

    async def polite(task: TaskHandle) -> None:
        polite_started.set()
        await async_wait_until(lambda: task.cancelled, timeout=10, what="the shutdown's cancel request")
        task.check_cancelled()

    stubborn = tasks.submit("download", "s", "1", gated_job(never))
    nice = tasks.submit("download", "p", "1", polite)
    queued = tasks.submit("download", "q", "1", gated_job(never))
    await asyncio.wait_for(polite_started.wait(), 5)
    await tasks.shutdown(grace=0.2)
    for record in (stubborn, nice, queued):
        after = tasks.get(record["id"])
        assert after["status"] == "failed" and after["error"] == SHUTDOWN_REASON, after
        assert tasks.read_log(record["id"])[0].splitlines()[-1].endswith(f"failed: {SHUTDOWN_REASON}")
    with pytest.raises(RuntimeError):
        tasks.submit("x", "a", None, _noop)
    db.close()
    reopened = Database(tmp_path / "db.json")
    assert {row["status"] for row in reopened.table("tasks").all()} == {"failed"}
    reopened.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from bolt_host.services.tasks import Tasks
    from bolt_host.storage import Database

    async def main(folder):
        tasks = Tasks(Database(folder / "db.json"), folder / "logs")
        await tasks.start()
        async def job(task):
            task.log("=== extract")
            print("RUNNING", task.id, flush=True)
            await asyncio.Event().wait()
        async def later(task):
            return None
        tasks.submit("install", "notes", "1.0.0", job)
        tasks.submit("install", "other", "2.0.0", later)
        await asyncio.Event().wait()

    asyncio.run(main(Path(sys.argv[1])))
    """
)


async def test_a_task_cut_off_by_a_crash_is_failed_at_boot(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)  # type: ignore[union-attr]
        assert line.startswith("RUNNING"), line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    rows = json.loads((tmp_path / "db.json").read_text())["tasks"]
    assert sorted(row["status"] for row in rows.values()) == ["queued", "running"]

    db = Database(tmp_path / "db.json")
    tasks = Tasks(db, tmp_path / "logs")
    await tasks.start()
    running, queued = sorted(tasks.list(), key=lambda r: r["id"])
    assert running["status"] == "failed" and running["error"] == CRASH_REASON_RUNNING and running["end_time"]
    assert queued["status"] == "failed" and "before this task started" in queued["error"]
    log_text = tasks.read_log(running["id"])[0]
    assert "=== extract" in log_text and log_text.splitlines()[-1].endswith(CRASH_REASON_RUNNING)
    fresh = tasks.submit("install", "notes", "1.0.0", _noop)
    assert fresh["id"] == queued["id"] + 1
    await tasks.wait(fresh["id"], timeout=5)
    await tasks.shutdown()
    db.close()
