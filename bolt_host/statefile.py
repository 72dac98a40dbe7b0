"""Small, hot state kept in memory and in one JSON file, written with group commit.

The supervisor's process records and the app tokens change at every start, stop
and crash.  In ``db.json`` each such change would rewrite (and fsync twice) the
whole host database on the event loop.  Here a change is made in memory at once
and :meth:`StateFile.commit` waits until it is on disk: every change made before
a write begins goes into that one write, and the write (temp file, fsync,
rename, fsync of the folder) runs in a worker thread, so the event loop never
waits on the disk and N concurrent starts cost a handful of writes, not N.

The file is written the same crash-safe way as ``db.json``: ``kill -9`` at any
moment leaves the previous or the next state.  A write that fails (disk full)
fails every commit waiting on it; the changes stay in memory and go into the
next write that succeeds.

Visible before durable (:meth:`StateFile.commit_visible`).  Some changes must be
seen by the next host *if this one is killed*, but need not survive a crash of the
machine, because that crash undoes what they describe: the record of an app process
about to be spawned (its generation, its token) lets a host started after a
``kill -9`` find and adopt or end that process, and a machine crash ends the process
too.  The kernel keeps a written file in its page cache when the process that wrote
it dies, so for those changes a write without ``fsync`` is enough, and the fsync
(milliseconds, more on a busy disk) need not sit between an app's crash and its
restart.  Such a write replaces ``<file>.pending``, a whole snapshot like the main
file, and each snapshot carries its write number (``"#write"``, counted on across
host runs): a load takes whichever of the two is newer and whole.  A machine crash
may leave the pending file missing, older, empty or torn; it is then ignored (it
was never promised durable), and the main file, written only with fsync, holds
every commit that was.  The durable write follows at once (group commit as above).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bolt_host.state_journal import DEFAULT_FLOOR, StateJournal, replay
from bolt_host.storage import (
    CorruptDatabaseError,
    Database,
    atomic_write_bytes,
    json_copy,
    load_json_object,
    remove_stale_temp_files,
)

log = logging.getLogger("bolt_host.statefile")
Row = dict[str, Any]
RUNTIME_STATE_FILE = "runtime.json"  # the host's: app processes and app tokens, kept out of db.json
WRITE_NUMBER = "#write"  # in each snapshot: which is newer, the main file or the pending one
PENDING_SUFFIX = ".pending"


class StateFile:
    """Sections of rows keyed by name (``{section: {key: row}}``) in one JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.path.parent, self.path.name)
        self._version = 0  # bumped by every change; a snapshot written carries it as its write number
        self._sections: dict[str, dict[str, Row]] = self._load()  # (sets _version to the loaded write number)
        self._fragments = {  # section -> key -> b'"key":{...}', what _encode joins
            section: {key: _fragment(key, row) for key, row in rows.items()} for section, rows in self._sections.items()
        }
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._durable = self._version  # the version the main file holds
        self._visible = self._version  # the version a load would find (main or pending file)
        self._visible_waiters: list[asyncio.Future[None]] = []
        self.writes = 0  # completed writes, for tests and benchmarks
        self._background: set[asyncio.Task[None]] = set()
        self.journal: StateJournal | None = None  # append mode (append_writes)

    def append_writes(self, floor: int = DEFAULT_FLOOR) -> None:
        """From the next commit on, append what changed to ``<file>.log`` instead of rewriting the
        file (:mod:`bolt_host.state_journal`): for a host that starts apps often (a device agent
        starts one at every install, each start two or three whole-file writes, each a new inode).
        The file is written whole now, opening the journal (a write of the host's start, not of its
        first app start)."""
        self.journal = StateJournal(self.path, floor)
        try:
            self.commit_now()
        except OSError as exc:  # (disk full) the first commit compacts instead
            log.error("%s could not be written whole for its journal yet: %s", self.path.name, exc)

    def close(self) -> None:
        """After the last commit.  In append mode the file is written whole once more and the
        journal goes: a stopped host's ``runtime.json`` alone holds its state, as its ``db.json``
        does (a failure is logged; the journal then stays for the next load)."""
        journal, self.journal = self.journal, None
        if journal is None:
            return
        journal.close()
        try:
            atomic_write_bytes(self.path, self._snapshot(self._version))
        except OSError as exc:
            log.error("%s could not be written whole at close (its journal is kept): %s", self.path.name, exc)
            return
        self._saved(self._version)
        journal.remove()

    @property
    def pending_path(self) -> Path:
        return self.path.with_name(self.path.name + PENDING_SUFFIX)

    def _load(self) -> dict[str, dict[str, Row]]:
        data = load_json_object(self.path) or {}
        self._version = _write_number(data, self.path)
        pending = _load_pending(self.pending_path)
        if pending is not None and _write_number(pending, self.pending_path) > self._version:
            data = pending  # the last host was killed after a visible write, before its durable one
            self._version = _write_number(data, self.pending_path)
        data.pop(WRITE_NUMBER, None)
        if not all(isinstance(rows, dict) for rows in data.values()):
            raise CorruptDatabaseError(f"{self.path} does not hold JSON objects of rows; it was left as it is.")
        self._version = replay(self.path, data, self._version)  # what a host in append mode wrote after it
        return data

    # reading (from memory) ---------------------------------------------------
    def get(self, section: str, key: str) -> Row | None:
        row = self._sections.get(section, {}).get(key)
        return None if row is None else json_copy(row)

    def rows(self, section: str) -> list[Row]:
        return [json_copy(row) for row in self._sections.get(section, {}).values()]

    def shared_row(self, section: str, key: str) -> Row | None:
        """A row itself, uncopied: for look-ups that only read it."""
        return self._sections.get(section, {}).get(key)

    def shared_rows(self, section: str) -> list[Row]:
        """The rows themselves, uncopied: for look-ups that only read them."""
        return list(self._sections.get(section, {}).values())

    # changing (in memory now, on disk at the next commit) ---------------------
    def put(self, section: str, key: str, row: Row) -> bool:
        """Set a row; False (and nothing to write) when it already says the same."""
        rows = self._sections.setdefault(section, {})
        if rows.get(key) == row:
            return False
        rows[key] = json_copy(row)
        fragment = self._fragments.setdefault(section, {})[key] = _fragment(key, row)
        if self.journal is not None:
            self.journal.note(section, key, fragment)
        self._version += 1
        return True

    def delete(self, section: str, key: str) -> bool:
        rows = self._sections.get(section)
        if rows is None or key not in rows:
            return False
        del rows[key]
        del self._fragments[section][key]
        if not rows:
            del self._sections[section], self._fragments[section]
        if self.journal is not None:
            self.journal.note(section, key, _encode_json(key) + b":null")
        self._version += 1
        return True

    @property
    def unsaved(self) -> bool:
        return self._durable != self._version

    @property
    def version(self) -> int:
        """How many changes were made so far (for :meth:`commit`'s ``through``)."""
        return self._version

    async def commit(self, through: int | None = None) -> None:
        """Return once every change made so far (``through``: up to that :attr:`version`) is on
        disk (raises the write's OSError)."""
        if self._durable >= (self._version if through is None else through):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name=f"write {self.path.name}")
        await waiter

    async def commit_visible(self) -> None:
        """Return once every change made so far is what a load of this file would find, on
        disk or not yet (raises the write's OSError); the durable write follows at once.

        For changes a machine crash makes moot (see the module's docstring): they must hold
        for a host started after this one is killed, and the page cache keeps them for it.
        Callers waiting at the same time share one write, made on the event loop (a write to
        the page cache, no fsync: microseconds)."""
        if self._visible == self._version:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._visible_waiters.append(waiter)
        if len(self._visible_waiters) == 1:
            loop.call_soon(self._write_visible)  # after the callers woken with this one
        await waiter

    def _write_visible(self) -> None:
        waiters, self._visible_waiters = self._visible_waiters, []
        version = self._version
        if self._visible < version:
            try:
                if self.journal is not None and self.journal.appending:
                    self.journal.append(version)  # one line into the page cache: no new inode
                else:
                    atomic_write_bytes(self.pending_path, self._snapshot(version), durable=False)
            except OSError as exc:
                _settle(waiters, exc)
                return
            self._visible = version
        _settle(waiters, None)
        self.commit_soon()

    def commit_soon(self) -> None:
        """Let the changes made so far reach the disk without waiting; a failure is logged
        (the changes stay in memory and go out with the next commit that succeeds)."""
        if self.unsaved:
            task = asyncio.create_task(self._commit_logged())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _commit_logged(self) -> None:
        try:
            await self.commit()
        except OSError as exc:
            log.error("%s could not be saved (retried at the next change): %s", self.path.name, exc)

    def commit_now(self) -> None:
        """Write synchronously (at boot, at shut-down and outside an event loop)."""
        version = self._version
        try:
            self._next_write()()
        except OSError:
            self._write_failed()
            raise
        self._saved(version)

    async def _write_batches(self) -> None:
        while self._waiters:
            waiters, self._waiters = self._waiters, []
            if not self.unsaved:  # they joined while the last write ran, and it held all they changed
                _settle(waiters, None)
                continue
            version, write = self._version, self._next_write()  # every change its waiters made is in memory
            try:
                await asyncio.to_thread(write)
            except OSError as exc:
                self._write_failed()
                _settle(waiters, exc)
            else:
                self._saved(version)
                _settle(waiters, None)

    def _next_write(self) -> Callable[[], None]:
        """What the next write does (built on the event loop, run in a worker thread)."""
        version = self._version
        if self.journal is not None:
            return self.journal.next_write(version, lambda: self._snapshot(version))
        return partial(atomic_write_bytes, self.path, self._snapshot(version))

    def _write_failed(self) -> None:
        """A write failed: nothing to undo here, the next write holds every change again."""
        if self.journal is not None:
            self.journal.failed()

    def _saved(self, version: int) -> None:
        self._durable = max(self._durable, version)
        self._visible = max(self._visible, version)
        self.writes += 1

    def _snapshot(self, version: int) -> bytes:
        """The whole state as the main and the pending file hold it: with its write number."""
        number = _encode_json(WRITE_NUMBER) + b":%d" % version
        return b"{" + b",".join([number, *self._encoded_sections()]) + b"}"

    def _encode(self) -> bytes:
        return b"{" + b",".join(self._encoded_sections()) + b"}"

    def _encoded_sections(self) -> Iterator[bytes]:
        # Each row is encoded once, when it changes; a write joins the pieces (at 200 apps,
        # encoding the whole state for every commit was a tenth of a start storm's loop time).
        for section, rows in self._fragments.items():
            yield _encode_json(section) + b":{" + b",".join(rows.values()) + b"}"


def _encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _fragment(key: str, row: Row) -> bytes:
    return _encode_json(key) + b":" + _encode_json(row)


def _write_number(data: dict[str, Any], path: Path) -> int:
    number = data.get(WRITE_NUMBER, 0)  # 0: a file written before write numbers
    if not isinstance(number, int):
        raise CorruptDatabaseError(f"{path}: {WRITE_NUMBER} is not a number; it was left as it is.")
    return number


def _load_pending(path: Path) -> dict[str, Any] | None:
    """The pending snapshot, or None when there is none or not a whole one (a machine crash
    before it reached the disk: it was never promised durable)."""
    try:
        return load_json_object(path)
    except CorruptDatabaseError as exc:
        log.warning("%s ignored (a write that never reached the disk whole): %s", path.name, exc)
        return None


def move_tables_from(db: Database, state: StateFile, tables: dict[str, str]) -> None:
    """Move the rows of ``db`` tables (older data dirs kept them there) into ``state``.

    ``tables`` maps a table name to the field its rows are keyed by; the section keeps
    the table's name.  The state file is written before the tables are dropped, so a
    crash in between only repeats the drop.
    """
    moved = False
    for table, key_field in tables.items():
        if not state.rows(table):
            for row in db.table(table).all():
                moved |= state.put(table, str(row[key_field]), dict(row))
    if moved:
        state.commit_now()
    for table in tables:
        db.drop_table(table)


def _settle(waiters: list[asyncio.Future[None]], error: OSError | None) -> None:
    for waiter in waiters:
        if waiter.done():  # its caller was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
