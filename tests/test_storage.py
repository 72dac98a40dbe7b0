from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bolt_host.journal import JournalFile
from bolt_host.statefile import StateFile, move_tables_from
from bolt_host.storage import AtomicJSONStorage, CorruptDatabaseError, Database
from bolt_host.testing import running_host
from tests.helpers import async_wait_until

WRITER = Path(__file__).parent / "fixtures" / "storage_writer.py"


def _check_state(path: Path) -> int:
    """Load the file as the host would and verify the record is whole."""
    if path.name == "runtime.json":
        row = StateFile(path).get("state", "only")
    else:
        db = Database(path)
        row = db.table("state").get(doc_id=1)
        db.close()
    assert row is not None
    assert hashlib.sha256(row["blob"].encode()).hexdigest() == row["digest"], "torn record"
    assert row["blob"].startswith(f"{row['counter']}:")
    return row["counter"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("db.json", []),
        ("db.json", ["--journal"]),
        ("runtime.json", ["--statefile"]),
        ("runtime.json", ["--statefile", "--visible"]),
        ("runtime.json", ["--statefile", "--append"]),
        ("runtime.json", ["--statefile", "--visible", "--append"]),
    ],
    ids=["db.json", "db.json-journal", "runtime.json", "runtime.json-visible", "runtime.json-append",
         "runtime.json-append-visible"],
)
def test_kill_9_at_random_moments_leaves_old_or_new_state(tmp_path: Path, kind: str, extra: list[str]) -> None:
    path = tmp_path / kind
    rng = random.Random(1234)
    rounds = 40
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), *extra], stdout=subprocess.PIPE, text=True)
        try:
            wanted = rng.randint(1, 40)
            acked = 0
            for _line_number in range(wanted):
                line = proc.stdout.readline()
                assert line, "writer died early"
                acked = int(line)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for line in proc.stdout.read().split():
            acked = int(line)
        proc.stdout.close()
        counter = _check_state(path)
        # The last acknowledged write is on disk (or with --visible, in the page cache, which
        # a kill -9 leaves); the one in flight may or may not be (a state file's round
        # acknowledges three changes at once).
        assert acked <= counter <= acked + 3, (counter, acked)
    assert not list(tmp_path.glob(f".{kind}.*.tmp")), "temp files left behind after reopening"


def test_failed_write_keeps_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(tmp_path / "db.json")
    db.table("t").insert({"a": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
    with pytest.raises(OSError):
        db.table("t").insert({"a": 2})
    monkeypatch.undo()
    assert [r["a"] for r in db.table("t").all()] == [1]
    assert json.loads((tmp_path / "db.json").read_text())["t"] == {"1": {"a": 1}}
    assert not list(tmp_path.glob(".db.json.*.tmp"))


def test_a_batch_of_writes_to_several_tables_is_one_file_write(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    db.table("counter").insert({"last": 0})
    before = db.revision
    with db.batch():
        db.table("counter").update({"last": 1}, doc_ids=[1])
        db.table("tasks").insert({"id": 1})
        assert json.loads((tmp_path / "db.json").read_text()) == {"counter": {"1": {"last": 0}}}
        assert db.table("tasks").all() == [{"id": 1}]  # the block reads its own changes
    assert db.revision == before + 1
    on_disk = json.loads((tmp_path / "db.json").read_text())
    assert on_disk == {"counter": {"1": {"last": 1}}, "tasks": {"1": {"id": 1}}}
    db.close()
    assert Database(tmp_path / "db.json").table("tasks").all() == [{"id": 1}]


def test_an_upsert_is_one_file_write_whether_it_inserts_or_updates(tmp_path: Path) -> None:
    from tinydb import Query
    from tinydb.table import Document

    db = Database(tmp_path / "db.json")
    db.table("apps").insert({"name": "other"})
    for row, cond in (({"name": "notes", "version": "1"}, Query().name == "notes"),  # a new row
                      ({"name": "notes", "version": "2"}, Query().name == "notes"),  # that row again
                      (Document({"source": "local"}, doc_id=7), None)):  # a new row by doc id
        writes = db.writes
        with db.transaction():
            db.table("apps").upsert(row, cond)
        assert db.writes == writes + 1
    on_disk = json.loads((tmp_path / "db.json").read_text())
    assert on_disk == {"apps": {"1": {"name": "other"}, "2": {"name": "notes", "version": "2"},
                                "7": {"source": "local"}}}
    db.close()


async def test_deferred_changes_are_read_at_once_and_flushed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(tmp_path / "db.json")
    db.table("tasks").insert({"status": "queued"})
    writes = db.writes
    for status in ("running", "succeeded"):
        with db.later():
            db.table("tasks").update({"status": status}, doc_ids=[1])
    with db.later():
        db.table("tasks").insert({"status": "queued"})
    assert db.table("tasks").get(doc_id=1)["status"] == "succeeded"  # readers see it at once
    assert json.loads((tmp_path / "db.json").read_text())["tasks"] == {"1": {"status": "queued"}}
    assert db.writes == writes

    await asyncio.gather(*(db.flush() for _ in range(10)))  # ten waiters, one write
    assert db.writes == writes + 1
    assert Database(tmp_path / "db.json").table("tasks").all() == [{"status": "succeeded"}, {"status": "queued"}]
    await db.flush()
    assert db.writes == writes + 1  # nothing new: nothing written

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    with db.later():
        db.table("tasks").update({"status": "failed"}, doc_ids=[2])
    monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
    with pytest.raises(OSError):
        await db.flush()
    monkeypatch.undo()
    assert db.table("tasks").get(doc_id=2)["status"] == "failed"  # kept for the next write
    db.table("other").insert({"n": 1})  # a direct write carries the deferred change along
    assert json.loads((tmp_path / "db.json").read_text())["tasks"]["2"] == {"status": "failed"}
    writes = db.writes
    await db.flush()
    assert db.writes == writes
    with db.later():
        db.table("tasks").update({"status": "queued"}, doc_ids=[2])
    db.close()
    with pytest.raises(OSError, match="closed"):  # not a wait for ever
        await db.flush()


def test_a_batch_whose_write_fails_or_that_raises_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(tmp_path / "db.json")
    db.table("counter").insert({"last": 0})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
    with pytest.raises(OSError), db.batch():
        db.table("counter").update({"last": 1}, doc_ids=[1])
        db.table("tasks").insert({"id": 1})
    monkeypatch.undo()
    with pytest.raises(KeyError), db.batch():
        db.table("counter").update({"last": 2}, doc_ids=[1])
        raise KeyError("the caller's own failure")
    assert db.table("counter").all() == [{"last": 0}]
    assert db.table("tasks").all() == []
    assert json.loads((tmp_path / "db.json").read_text()) == {"counter": {"1": {"last": 0}}}
    db.table("tasks").insert({"id": 2})  # the storage goes on writing at once after a failed batch
    assert list(json.loads((tmp_path / "db.json").read_text())["tasks"].values()) == [{"id": 2}]


def test_ids_by_a_field_follow_every_write_and_batch(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    assert db.ids_by("apps", "name") == {}
    first = db.table("apps").insert({"name": "a"})
    second = db.table("apps").insert({"name": "b"})
    assert db.ids_by("apps", "name") == {"a": first, "b": second}
    db.table("apps").update({"name": "c"}, doc_ids=[first])
    assert db.ids_by("apps", "name") == {"c": first, "b": second}
    with db.batch():
        third = db.table("apps").insert({"name": "d"})
        assert db.ids_by("apps", "name") == {"c": first, "b": second, "d": third}  # the block's own change
        db.table("apps").remove(doc_ids=[second])
    assert db.ids_by("apps", "name") == {"c": first, "d": third}
    with pytest.raises(KeyError), db.batch():
        db.table("apps").remove(doc_ids=[first])
        raise KeyError("the caller's own failure")
    assert db.ids_by("apps", "name") == {"c": first, "d": third}  # the batch left nothing behind


def test_corrupt_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    path.write_text('{"users": {"1": ')
    with pytest.raises(CorruptDatabaseError, match="left as it is"):
        AtomicJSONStorage(path)
    assert path.read_text() == '{"users": {"1": '


def test_migrations_run_once_in_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    calls: list[int] = []
    migrations = {1: lambda t: calls.append(1), 2: lambda t: calls.append(2)}
    assert db.migrate("apps", migrations) == 2
    assert db.migrate("apps", migrations) == 2
    assert calls == [1, 2]
    db.close()
    reopened = Database(tmp_path / "db.json")
    assert reopened.schema_version("apps") == 2


def test_reads_copy_only_what_they_return_and_cannot_change_the_cache(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    db.table("apps").insert({"name": "a", "tags": ["x"], "bolt": {"env": {"K": "1"}}})
    db.table("apps").insert({"name": "b", "tags": []})

    got = db.table("apps").get(lambda row: row["name"] == "a")
    got["tags"].append("changed")
    got["bolt"]["env"]["K"] = "2"
    for row in db.table("apps").all():
        row["tags"].append("changed too")
    db.table("apps").search(lambda row: True)[0]["bolt"]["env"].clear()

    stored = db.table("apps").get(lambda row: row["name"] == "a")
    assert stored == {"name": "a", "tags": ["x"], "bolt": {"env": {"K": "1"}}}
    assert db.table("apps").get(doc_ids=[2]) == [{"name": "b", "tags": []}]
    db.close()
    assert json.loads((tmp_path / "db.json").read_text())["apps"]["1"]["tags"] == ["x"]


async def test_state_file_commits_concurrent_changes_together_and_off_the_loop(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "runtime.json")

    async def change(n: int) -> None:
        state.put("apps", f"app-{n}", {"n": n})
        await state.commit()

    await asyncio.gather(*(change(n) for n in range(50)))

    assert state.writes < 10  # 50 acknowledged changes, a few writes
    assert StateFile(tmp_path / "runtime.json").get("apps", "app-49") == {"n": 49}  # on disk when acked
    assert state.put("apps", "app-1", {"n": 1}) is False  # the same row: nothing to write
    writes = state.writes
    await state.commit()
    assert state.writes == writes
    assert state.delete("apps", "app-1") and not state.delete("apps", "app-1")
    await state.commit()
    assert StateFile(tmp_path / "runtime.json").get("apps", "app-1") is None


async def test_a_state_file_in_append_mode_appends_each_commit_and_is_whole_after_close(tmp_path: Path) -> None:
    """A device agent's runtime.json: written whole as append mode begins (the host's start), then
    each commit is one line of the journal (the file is not rewritten: same inode), any load
    replays the lines, and at close the file is written whole and the journal goes."""
    path = tmp_path / "runtime.json"
    state = StateFile(path)
    state.append_writes()
    inode = path.stat().st_ino
    for version in range(1, 6):
        state.put("apps", "a", {"v": version})
        await state.commit_visible()
        await state.commit()
    assert path.stat().st_ino == inode
    assert len((tmp_path / "runtime.json.log").read_text().splitlines()) == 5
    assert not (tmp_path / "runtime.json.pending").exists()
    assert StateFile(path).get("apps", "a") == {"v": 5}  # a load (in any mode) replays the journal
    state.delete("apps", "a")
    state.put("apps", "b", {"v": 1})
    await state.commit()
    assert StateFile(path).rows("apps") == [{"v": 1}]
    state.close()
    assert not (tmp_path / "runtime.json.log").exists()
    assert json.loads(path.read_text())["apps"] == {"b": {"v": 1}}


async def test_a_failed_journal_append_fails_the_commit_and_the_next_one_writes_the_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runtime.json"
    state = StateFile(path)
    state.append_writes()
    state.put("apps", "kept", {"v": 1})
    await state.commit()

    def disk_full(*args: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bolt_host.state_journal.os.write", disk_full)
    state.put("apps", "kept", {"v": 2})
    with pytest.raises(OSError, match="No space"):
        await state.commit()
    assert StateFile(path).get("apps", "kept") == {"v": 1}
    monkeypatch.undo()
    await state.commit()
    assert json.loads(path.read_text())["apps"]["kept"] == {"v": 2}  # written whole, not appended
    assert (tmp_path / "runtime.json.log").read_bytes() == b""  # a fresh journal: no torn line to append after
    state.put("apps", "kept", {"v": 3})
    await state.commit()
    assert StateFile(path).get("apps", "kept") == {"v": 3}


async def test_a_commit_made_while_its_changes_are_being_written_shares_that_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateFile(tmp_path / "runtime.json")
    writing, release = threading.Event(), threading.Event()
    replace = os.replace

    def held_replace(*args: Any, **kwargs: Any) -> None:
        writing.set()
        release.wait(10)
        replace(*args, **kwargs)

    monkeypatch.setattr("bolt_host.storage.os.replace", held_replace)
    writes = state.writes
    state.put("apps", "a", {"v": 1})
    first = asyncio.ensure_future(state.commit())
    await async_wait_until(writing.is_set, timeout=10, what="the write to reach its rename")
    second = asyncio.ensure_future(state.commit())  # nothing changed since the write began
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert state.writes == writes + 1
    assert StateFile(tmp_path / "runtime.json").get("apps", "a") == {"v": 1}


async def test_state_file_write_failure_fails_the_commit_and_the_next_commit_saves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateFile(tmp_path / "runtime.json")
    state.put("apps", "kept", {"v": 1})
    await state.commit()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bolt_host.storage.os.replace", disk_full)
    state.put("apps", "kept", {"v": 2})
    with pytest.raises(OSError, match="No space"):
        await state.commit()
    assert StateFile(tmp_path / "runtime.json").get("apps", "kept") == {"v": 1}
    assert not list(tmp_path.glob(".runtime.json.*.tmp"))
    monkeypatch.undo()

    await state.commit()
    assert StateFile(tmp_path / "runtime.json").get("apps", "kept") == {"v": 2}


async def test_a_visible_commit_is_what_the_next_load_finds_and_the_durable_write_follows(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    state = StateFile(path)
    state.put("apps", "web", {"generation": 1})
    await state.commit()
    state.put("apps", "web", {"generation": 2})
    state.put("tokens", "web", {"digest": "d2"})

    await state.commit_visible()

    assert json.loads(path.read_bytes())["apps"]["web"] == {"generation": 1}  # no fsync waited for
    reloaded = StateFile(path)  # as a host started after this one is killed -9 reads it
    assert reloaded.get("apps", "web") == {"generation": 2} and reloaded.get("tokens", "web") == {"digest": "d2"}
    assert state.pending_path.stat().st_mode & 0o777 == 0o600  # app tokens: the host's alone, as runtime.json
    await async_wait_until(lambda: not state.unsaved, what="the durable write after the visible one")
    assert json.loads(path.read_bytes())["apps"]["web"] == {"generation": 2}


async def test_load_takes_the_newer_whole_snapshot_of_the_main_and_the_pending_file(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    state = StateFile(path)
    state.put("apps", "web", {"v": 1})
    await state.commit_visible()
    whole_older = state.pending_path.read_bytes()
    state.put("apps", "web", {"v": 2})
    await state.commit()
    durable = path.read_bytes()

    # What a machine crash may leave of a pending file that never reached the disk: ignored,
    # the main file holds every durable commit.
    for left in (whole_older, whole_older[: len(whole_older) // 2], b"", b"\0" * len(whole_older)):
        state.pending_path.write_bytes(left)
        assert StateFile(path).get("apps", "web") == {"v": 2}

    # A host killed after a visible write, before its durable one: the pending file is newer.
    state.put("apps", "web", {"v": 3})
    await state.commit_visible()
    await async_wait_until(lambda: not state.unsaved, what="the durable write")
    path.write_bytes(durable)  # the durable write that never happened
    reloaded = StateFile(path)
    assert reloaded.get("apps", "web") == {"v": 3}

    # The next host counts on from there, so its own writes are newer than the pending file.
    reloaded.put("apps", "web", {"v": 4})
    reloaded.commit_now()
    assert StateFile(path).get("apps", "web") == {"v": 4}


async def test_a_journal_commits_visible_changes_durably(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path / "fleet.json")
    journal.put("ops", "1", {"state": "queued"})
    await journal.commit_visible()
    assert not journal.unsaved and not journal.pending_path.exists()
    assert JournalFile(tmp_path / "fleet.json").get("ops", "1") == {"state": "queued"}
    journal.close()


def test_state_file_refuses_a_corrupt_file_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    path.write_text('{"supervisor": [1, 2]}')
    with pytest.raises(CorruptDatabaseError, match="left as it is"):
        StateFile(path)
    assert path.read_text() == '{"supervisor": [1, 2]}'


def test_tables_of_an_older_data_dir_move_into_the_state_file(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    db.table("supervisor").insert({"name": "web", "pid": 12, "desired": "running"})
    db.table("app_tokens").insert({"app": "web", "digest": "d1"})
    state = StateFile(tmp_path / "runtime.json")

    move_tables_from(db, state, {"supervisor": "name", "app_tokens": "app"})

    reloaded = StateFile(tmp_path / "runtime.json")
    assert reloaded.get("supervisor", "web") == {"name": "web", "pid": 12, "desired": "running"}
    assert reloaded.get("app_tokens", "web") == {"app": "web", "digest": "d1"}
    assert "supervisor" not in json.loads((tmp_path / "db.json").read_text())
    move_tables_from(db, state, {"supervisor": "name", "app_tokens": "app"})  # again: nothing changes
    assert StateFile(tmp_path / "runtime.json").rows("supervisor") == [{"name": "web", "pid": 12, "desired": "running"}]
    db.close()


CORE_TABLES = ("host", "users", "roles", "sessions", "apps", "app_roles", "app_users", "catalog", "tasks",
               "tasks_counter")  # fmt: skip


async def test_a_fresh_host_gives_every_table_a_schema_version(tmp_path: Path) -> None:
    async with running_host(tmp_path) as bolt:
        await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
        await bolt.admin.post("/api/apps/local", json={"path": "notes"})
        await bolt.admin.post("/api/roles", json={"name": "writers"})
        await bolt.admin.post("/api/app-roles", json={"app": "notes", "role": "writers"})
        bolt.host.visibility.grant_user("notes", "admin")
        await bolt.host.catalog.ready(timeout=10)
        versions = {table: bolt.host.db.schema_version(table) for table in CORE_TABLES}
    assert versions == {**dict.fromkeys(CORE_TABLES, 1), "apps": 2}  # apps 2: Bolt's path, the folder apart
    stored = json.loads((tmp_path / "db.json").read_text())
    versioned = {row["table"] for row in stored["_meta"].values()}
    assert set(stored) - {"_meta"} <= versioned, "tables without a schema version"
    assert {"users", "sessions", "apps", "app_roles", "app_users"} <= set(stored)


def test_json_copy_copies_every_container_and_shares_only_scalars() -> None:
    from bolt_host.storage import json_copy

    def app() -> dict[str, Any]:
        return {"name": "web", "command": ["node", "app.js"], "health": {"path": "/", "codes": [200, 204]}, "n": 1}

    original = app()
    copied = json_copy(original)
    assert copied == original
    copied["command"].append("--x")
    copied["health"]["codes"].append(500)
    copied["health"]["path"] = "/other"
    assert original == app()
    assert json_copy([{"a": [1]}, 2]) == [{"a": [1]}, 2] and json_copy("s") == "s"
