"""JournalFile: commits append only what changed, compaction rewrites the snapshot, and what a
commit acknowledged survives ``kill -9`` of the writing process (a real one), torn lines and
a crash in the middle of a compaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bolt_host.journal import JournalFile
from bolt_host.storage import CorruptDatabaseError
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "fixtures" / "journal" / "writer.py"


def _journals(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.*.log"))


async def test_a_commit_appends_the_changed_rows_and_leaves_the_snapshot_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = JournalFile(path)
    for i in range(100):
        state.put("rows", f"r{i}", {"i": i})
    await state.commit()
    snapshot = path.read_bytes()
    [journal] = _journals(path)
    size = journal.stat().st_size

    state.put("rows", "r5", {"i": 500})
    state.delete("rows", "r6")
    await state.commit()
    assert path.read_bytes() == snapshot  # nothing rewritten
    appended = journal.read_bytes()[size:]
    assert appended == b'{"rows":{"r5":{"i":500},"r6":null}}\n'  # only what changed
    state.close()

    reopened = JournalFile(path)
    assert reopened.get("rows", "r5") == {"i": 500} and reopened.get("rows", "r6") is None
    assert len(reopened.rows("rows")) == 99
    reopened.close()


async def test_a_journal_grown_past_the_snapshot_is_compacted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = JournalFile(path, min_compact_bytes=4096)
    first = state.compactions
    for round_ in range(200):  # the same 10 rows again and again: the journal grows, the state does not
        for i in range(10):
            state.put("rows", f"r{i}", {"i": i, "round": round_})
        await state.commit()
    assert state.compactions > first
    [journal] = _journals(path)  # the old journals are gone
    assert journal.stat().st_size <= 4096
    state.close()
    reopened = JournalFile(path)
    assert {r["round"] for r in reopened.rows("rows")} == {199}
    reopened.close()


async def _committed(path: Path, key: str, row: dict) -> Path:
    """One row committed to a fresh journal file, closed; the journal's path."""
    state = JournalFile(path)
    state.put("rows", key, row)
    await state.commit()
    state.close()
    [journal] = _journals(path)
    return journal


async def test_a_torn_last_line_is_dropped_and_a_torn_middle_line_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    journal = await _committed(path, "kept", {"v": 1})
    with journal.open("ab") as handle:
        handle.write(b'{"rows":{"lost":{"v"')  # a kill -9 in the middle of an append
    reopened = JournalFile(path)
    assert reopened.get("rows", "kept") == {"v": 1} and reopened.get("rows", "lost") is None
    [fresh] = _journals(path)
    assert fresh != journal and fresh.read_bytes() == b""  # replayed into a new snapshot
    reopened.put("rows", "after", {"v": 2})
    await reopened.commit()
    reopened.close()
    again = JournalFile(path)
    assert again.get("rows", "after") == {"v": 2}
    again.close()

    [journal] = _journals(path)
    journal.write_bytes(b'{"rows":{"x":\n{"rows":{"y":{"v":3}}}\n')
    before = journal.read_bytes()
    with pytest.raises(CorruptDatabaseError, match="line 1"):
        JournalFile(path)
    assert journal.read_bytes() == before  # left as it is


async def test_a_crash_in_the_middle_of_a_compaction_keeps_the_last_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    journal = await _committed(path, "a", {"v": 1})
    generation = int(journal.name.split(".")[-2])
    leftover = path.with_name(f"{path.name}.{generation + 1}.log")
    leftover.write_bytes(b'{"rows":{"a":{"v":99}}}\n')  # the next journal, created before the crash
    reopened = JournalFile(path)
    assert reopened.get("rows", "a") == {"v": 1}
    assert leftover not in _journals(path) or leftover.read_bytes() == b""
    reopened.close()


def _run_and_kill(tmp_path: Path, kind: str, acks_wanted: int) -> list[str]:
    """Start the writer, let it acknowledge ``acks_wanted`` lines, SIGKILL it; its acknowledgements."""
    out = tmp_path / "acks.txt"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    with out.open("wb") as sink:
        process = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path / "state.json"), kind],
                                   stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: out.read_bytes().count(b"\n") >= acks_wanted, timeout=40)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return out.read_text().split("\n")[:-1]  # whole lines only


def test_every_acknowledged_commit_survives_kill_9(tmp_path: Path) -> None:
    acks = [line.split()[1] for line in _run_and_kill(tmp_path, "journal", 3000) if line.startswith("ack ")]
    assert len(acks) >= 3000
    state = JournalFile(tmp_path / "state.json")
    stored = {row["i"] for row in state.rows("rows")}
    for key in acks:
        i = int(key[1:])
        deleted_later = (i + 1) % 7 == 0  # the writer deletes n{i} when it puts n{i+1}
        assert deleted_later or i in stored, f"{key} was acknowledged but is lost"
    state.close()


def test_acknowledged_operations_and_notifications_survive_kill_9(tmp_path: Path) -> None:
    from bolt_device.operations import Operations

    lines = _run_and_kill(tmp_path, "operations", 400)
    devices = dict(line.split()[1:] for line in lines if line.startswith("op "))  # operation -> device
    notes = [line.split()[1:] for line in lines if line.startswith("note ")]
    assert len(devices) >= 50
    ops = Operations(JournalFile(tmp_path / "state.json"))
    for operation_id, device_id in devices.items():
        operation = ops.get("AQ", device_id, operation_id)
        assert operation is not None and operation["status"] == "RUNNING", f"operation {operation_id} lost"
    for operation_id, progress in notes:
        operation = ops.get("AQ", devices[operation_id], operation_id)
        assert int(progress) in {n["progress"] for n in ops.notifications(operation)}, (operation_id, progress)
