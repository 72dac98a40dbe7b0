"""``db.json``'s journal (bolt_host/db_journal.py): N writes of a growing database write O(N) bytes,
and whatever a load finds (a torn last line, a journal a compaction left behind) it reads the
state a write acknowledged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinydb import Query

from bolt_host.storage import CorruptDatabaseError, Database

ROW = "x" * 1000  # about an app record's size


def _install_like(db: Database, count: int) -> None:
    """``count`` records added one write each, as installs add apps (upsert by name)."""
    for i in range(count):
        with db.transaction():
            db.table("apps").upsert({"name": f"app-{i}", "blob": ROW, "i": i}, Query().name == f"app-{i}")


def _names(db: Database) -> dict[str, int]:
    return {row["name"]: row["i"] for row in db.table("apps").all()}


def _killed(db: Database) -> None:
    """Leave ``db`` as a host killed now leaves it: not closed (a close writes the file whole)."""
    db._db.storage.journal.close()  # type: ignore[attr-defined]  # only its open descriptor


@pytest.mark.parametrize("journal_from", [0, 64 * 1024])
def test_n_inserts_into_a_growing_database_write_bytes_linear_in_n(tmp_path: Path, journal_from: int) -> None:
    """Each write used to rewrite the whole file: N installs wrote about N^2/2 rows' worth of bytes
    (16 times as much for 4 times the apps); now a write appends what changed and the file is
    rewritten only when the journal has outgrown it."""
    written = {}
    for count in (100, 400):
        db = Database(tmp_path / f"db-{count}.json", journal_from=journal_from)
        _install_like(db, count)
        written[count] = db.bytes_written
        db.close()
    # the 300 rows more: whole-file writes would write about 250 rows' worth for each
    per_row = (written[400] - written[100]) / (300 * len(ROW))
    assert per_row < 4, (per_row, written)
    if journal_from == 0:
        assert written[400] < 6 * written[100], written  # linear: 4x; the file rewritten each time: 16x


def test_the_journal_holds_every_change_a_reload_finds(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    db = Database(path, journal_from=0)
    _install_like(db, 50)
    db.table("apps").upsert({"name": "app-3", "blob": "y", "i": -3}, Query().name == "app-3")
    db.table("apps").remove(Query().name == "app-5")
    db.table("tasks").insert({"id": 1})
    db.drop_table("tasks")
    expected = _names(db)
    assert db._db.storage.journal.appends > 0  # type: ignore[attr-defined]
    assert json.loads(path.read_bytes())["apps"] != db._db.storage.read_shared()["apps"]  # type: ignore[attr-defined]
    _killed(db)
    again = Database(path, journal_from=0)
    assert _names(again) == expected and expected["app-3"] == -3 and "app-5" not in expected
    assert again.table("tasks").all() == []
    # the load replayed the journal and wrote the file whole again: it holds everything itself
    assert {row["name"] for row in json.loads(path.read_bytes())["apps"].values()} == set(expected)
    again.close()


def _journaled(path: Path) -> tuple[dict[str, int], bytes]:
    """A database with changes in its journal (the file not rewritten since): its state, and the
    journal's bytes."""
    db = Database(path, journal_from=0)
    _install_like(db, 20)
    db._db.storage.journal.must_compact = True  # type: ignore[attr-defined]  # the next write: a fresh journal
    db.table("apps").insert({"name": "last", "blob": "", "i": 0})
    db.table("apps").update({"i": 1}, Query().name == "last")
    db.table("apps").update({"i": 2}, Query().name == "last")
    journal = path.with_name(path.name + ".log")
    assert len(journal.read_bytes().splitlines()) == 3  # its first line and two writes
    state = _names(db)
    _killed(db)
    return state, journal.read_bytes()


def test_a_closed_database_is_its_file_alone(tmp_path: Path) -> None:
    """A stopped host's ``db.json`` holds everything (a copy of it is a backup, a hand edit loses
    nothing): the close writes it whole when the journal holds rows, and leaves the journal empty."""
    path = tmp_path / "db.json"
    state, _ = _journaled(path)
    db = Database(path, journal_from=0)  # replays, writes the file whole
    db.table("apps").update({"i": 7}, Query().name == "last")
    assert db._db.storage.journal.holds_rows  # type: ignore[attr-defined]
    db.close()
    journal = path.with_name("db.json.log")
    assert len(journal.read_bytes().splitlines()) == 1  # its first line only
    journal.unlink()
    assert _names(Database(path, journal_from=0)) == {**state, "last": 7}


def test_a_torn_last_line_was_never_acknowledged_and_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    state, journal = _journaled(path)
    path.with_name("db.json.log").write_bytes(journal[:-10])  # the last append cut short (kill -9, power loss)
    assert _names(Database(path, journal_from=0)) == {**state, "last": 1}


def test_a_journal_that_follows_an_older_file_is_ignored(tmp_path: Path) -> None:
    """A compaction writes the file, then replaces the journal: killed in between, the journal
    left names the previous file, and its lines (in the new file already) are not applied again."""
    path = tmp_path / "db.json"
    state, journal = _journaled(path)
    db = Database(path, journal_from=0)
    db._db.storage.journal.must_compact = True  # type: ignore[attr-defined]  # the next write: a compaction
    db.table("apps").update({"i": 9}, Query().name == "last")
    db.close()
    path.with_name("db.json.log").write_bytes(journal)  # as if the journal was not replaced yet
    assert _names(Database(path, journal_from=0)) == {**state, "last": 9}  # replayed, it would say 2


def test_a_corrupt_line_inside_the_journal_refuses_the_load_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    _journaled(path)
    journal = path.with_name("db.json.log")
    lines = journal.read_bytes().split(b"\n")
    broken = b"\n".join([lines[0], b"{not json", *lines[2:]])
    journal.write_bytes(broken)
    file_before = path.read_bytes()
    with pytest.raises(CorruptDatabaseError, match=r"db\.json\.log line 2"):
        Database(path, journal_from=0)
    assert journal.read_bytes() == broken and path.read_bytes() == file_before


def test_a_small_database_is_one_whole_file_without_a_journal(tmp_path: Path) -> None:
    """Below ``journal_from`` every write rewrites the file, as before: it holds the whole state."""
    path = tmp_path / "db.json"
    db = Database(path)
    _install_like(db, 20)
    assert {row["name"] for row in json.loads(path.read_bytes())["apps"].values()} == set(_names(db))
    assert not path.with_name("db.json.log").exists()
    db.close()


def test_a_small_database_that_appends_its_writes_compacts_at_its_journal_size(tmp_path: Path) -> None:
    """``append_writes`` (a device agent's database): the small file's writes append, the file is
    rewritten once the journal holds the given bytes, and a load (a killed host) finds every row."""
    path = tmp_path / "db.json"
    db = Database(path)
    db.append_writes(journal_bytes=8 * len(ROW))
    _install_like(db, 20)  # the first write opens the journal; the next ones append, 8 rows or so each
    journal = db._db.storage.journal  # type: ignore[attr-defined]
    assert journal.appends >= 15 and 2 <= journal.compactions <= 4, (journal.appends, journal.compactions)
    _killed(db)
    assert _names(Database(path)) == {f"app-{i}": i for i in range(20)}


def test_a_row_written_to_the_journal_is_the_cache_s_own_copy(tmp_path: Path) -> None:
    """As with a whole-file write, what the caller passed and changes afterwards is not the cache."""
    db = Database(tmp_path / "db.json", journal_from=0)
    _install_like(db, 30)
    appends = db._db.storage.journal.appends  # type: ignore[attr-defined]
    document = {"name": "mine", "nested": {"a": 1}, "i": 0}
    db.table("apps").insert(document)
    assert db._db.storage.journal.appends == appends + 1  # type: ignore[attr-defined]
    document["nested"]["a"] = 2
    assert db.table("apps").get(Query().name == "mine")["nested"] == {"a": 1}
    db.close()
