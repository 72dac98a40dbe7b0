"""Crash-safe TinyDB storage and the database handle every service shares.

Every write goes to a temp file in the same folder, is fsynced, renamed over
the old file and the folder is fsynced, so ``kill -9`` at any instant leaves
either the previous or the next state on disk, never a torn file.  The last
good state is cached in memory; a failed write (disk full, say) leaves both
the cache and the file at the previous state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from bolt_host.db_journal import DEFAULT_JOURNAL_FROM, DbJournal, encode_line

log = logging.getLogger("bolt_host.storage")
META_TABLE = "_meta"
Changed = dict[str, set[str] | None]  # table -> doc ids of rows changed (None: the table dropped)
LineRows = dict[str, dict[str, bytes] | None]  # table -> doc id -> row encoded, b"null" if deleted


class CorruptDatabaseError(RuntimeError):
    """The database file exists but cannot be parsed; it is left untouched."""


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through temp file, fsync and rename.

    ``durable=False`` leaves out both fsyncs: every reader sees the new contents at once, also
    a process started after this one is killed (they are in the page cache), but a crash of the
    machine may leave ``path`` missing, empty or torn: only for a file whose loader accepts that.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:  # the folder's first file (a mkdir before every write cost a syscall each)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)  # through the open file: no second look-up of the path
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def load_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None when missing or empty); a corrupt file raises and is kept."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_json_object(raw, path)


def parse_json_object(raw: bytes, path: Path) -> dict[str, Any] | None:
    """:func:`load_json_object` of bytes read from ``path``."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptDatabaseError(
            f"{path} is not valid JSON ({exc}); it was left as it is. "
            "Restore it from a backup or move it away to start empty."
        ) from exc
    if not isinstance(data, dict):
        raise CorruptDatabaseError(f"{path} does not hold a JSON object; it was left as it is.")
    return data


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _encode_row(row: Any) -> bytes:
    return b"null" if row is None else _encode(row)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(folder: Path, name: str) -> None:
    """Delete temp files a killed writer may have left next to ``name``."""
    for leftover in folder.glob(f".{name}.*.tmp"):
        leftover.unlink(missing_ok=True)


class AtomicJSONStorage(Storage):
    """TinyDB storage that writes atomically and caches the last good state.

    A large file gets a journal (:mod:`bolt_host.db_journal`): a write then appends the rows
    that changed instead of rewriting the file."""

    def __init__(self, path: str | Path, journal_from: int = DEFAULT_JOURNAL_FROM) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal = DbJournal(self.path, journal_from)
        remove_stale_temp_files(self.path.parent, self.path.name)
        remove_stale_temp_files(self.path.parent, self.journal.path.name)
        self._dirty: Changed = {}  # rows changed since the last write was made
        self._unsaved: list[tuple[int, Changed]] = []  # writes made, perhaps not on disk yet
        self._narrow: tuple[str, frozenset[str]] | None = None  # see rows_changing
        self._bookkeeping = threading.Lock()  # _dirty and _unsaved: a flush (on the loop) and a writer thread
        self.revision = 0  # bumped by every write: lets readers cache what they derive
        self._batching = False
        self.changes = 0  # counts changes, deferred ones too; ``durable`` is the count the file holds
        self.durable = 0
        self.writes = 0  # completed file writes, for tests and benchmarks
        self._file_lock = threading.Lock()  # a deferred write (in a thread) and a direct one never cross
        self._state: dict[str, Any] | None = self._load()

    def _load(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        state = parse_json_object(raw, self.path)
        if state is not None and self.journal.replay(raw, state):
            self.write_encoded(1, _encode(state))  # the file whole again; appends start a journal of its own
            self.durable = self.writes = 0
        return state

    def read(self) -> dict[str, Any] | None:
        # TinyDB mutates what read() returns before calling write(); hand out copies
        # so a failed write cannot leave unsaved changes in the cache.  Only the table
        # being written is copied, not the whole database.
        return None if self._state is None else _CopyOnAccess(self._state, self._narrow)

    def read_shared(self) -> dict[str, Any] | None:
        """The cached state itself, for readers that copy only what they return."""
        return self._state

    def write(self, data: dict[str, Any]) -> None:
        # the tables TinyDB changed are its private copies (see _CopyOnAccess), the rest
        # the cached ones, unchanged: the new state without copying anything
        state = {name: dict.__getitem__(data, name) for name in data}
        if self._batching:
            self._state = state
            return
        self._write_file(self._state, state)

    def _write_file(self, before: dict[str, Any] | None, state: dict[str, Any]) -> None:
        self._note_changes(before, state)
        self.changes += 1
        write, written = self._next_write(state)
        write()
        if isinstance(written, bytes):  # the whole file: a private copy, as the file has it
            state = json.loads(written)
        else:  # the rows this write changed, as private copies; the others are cached ones or TinyDB's copies
            for table, rows in written.items():
                if rows is None or state[table] is (before or {}).get(table):  # (an earlier write's rows)
                    continue
                for key, row in rows.items():
                    if row != b"null":
                        state[table][key] = json.loads(row)
        self._state = state
        self.revision += 1

    def _note_changes(self, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        """Note which rows differ from ``before`` (the next write carries them)."""
        with self._bookkeeping:
            self._note_rows(before or {}, after)

    def _note_rows(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        for table in before.keys() - after.keys():
            self._dirty[table] = None
        for table, rows in after.items():
            old = before.get(table)
            if rows is old or (table in self._dirty and self._dirty[table] is None):
                continue
            if old is None:
                self._dirty[table] = set(rows)
                continue
            keys = {key for key, row in rows.items() if row is not old.get(key) and row != old.get(key)}
            keys.update(old.keys() - rows.keys())
            if keys:
                self._dirty.setdefault(table, set()).update(keys)  # type: ignore[union-attr]

    def _next_write(self, state: dict[str, Any]) -> tuple[Callable[[], None], LineRows | bytes]:
        """What writes ``state`` (change :attr:`changes`), and what it writes: a journal line of
        every row changed since the file last had it (those rows, encoded), or the whole file."""
        version = self.changes
        with self._bookkeeping:
            self._unsaved = [(made, dirty) for made, dirty in self._unsaved if made > self.durable]
            self._unsaved.append((version, self._dirty))
            self._dirty = {}
            changed: Changed = {}
            for _, dirty in self._unsaved:
                for table, keys in dirty.items():
                    if keys is None or (table in changed and changed[table] is None):
                        changed[table] = None
                    else:
                        changed.setdefault(table, set()).update(keys)  # type: ignore[union-attr]
        # a table dropped and made again is written whole (rare: migrations at boot)
        if self.journal.may_append() and all(keys is not None or table not in state for table, keys in changed.items()):
            line_rows: LineRows = {
                table: None if table not in state else {key: _encode_row(state[table].get(key)) for key in keys or ()}
                for table, keys in changed.items()
            }
            line = encode_line(line_rows)
            if self.journal.appends_now(len(line)):
                return partial(self.write_line, version, line), line_rows
        encoded = _encode(state)
        return partial(self.write_encoded, version, encoded), encoded

    def write_encoded(self, version: int, encoded: bytes) -> None:
        """Put ``encoded`` (the state at change ``version``) in the file, unless a later state
        is there already; may run in a worker thread (a deferred write)."""
        with self._file_lock:
            if version <= self.durable:
                return
            self.journal.rewrite(self.path, encoded)
            self.durable = version
            self.writes += 1

    def write_line(self, version: int, line: bytes) -> None:
        """Append ``line`` (every row changed up to change ``version``) to the journal, unless a
        later state is on disk already; may run in a worker thread (a deferred write)."""
        with self._file_lock:
            if version <= self.durable:
                return
            if not self.journal.may_append():  # a write failed since this one was made
                raise OSError(f"{self.journal.path}: a write failed; the next one rewrites {self.path.name}")
            self.journal.append(line)
            self.durable = version
            self.writes += 1

    @property
    def bytes_written(self) -> int:
        """Bytes written to the file and its journal so far (tests and benchmarks)."""
        return self.journal.bytes_written

    def pending(self) -> Callable[[], None] | None:
        """The write of the changes not yet in the file (to run in a worker thread), or None."""
        if self.changes <= self.durable or self._state is None:
            return None
        return self._next_write(self._state)[0]

    @contextmanager
    def rows_changing(self, table: str, keys: frozenset[str]) -> Iterator[None]:
        """Writes in the block change only the rows ``keys`` of ``table`` (or add rows): TinyDB's
        copy of that table then copies those rows alone."""
        self._narrow = (table, keys)
        try:
            yield
        finally:
            self._narrow = None

    def deferred(self) -> AbstractContextManager[None]:
        """Writes in the block change the cache only; they reach the file with the next write,
        or a :meth:`Database.flush`.  A block that raises leaves the cache as before it."""
        return self._holding(self._note_deferred)

    def _note_deferred(self, before: dict[str, Any] | None, state: dict[str, Any]) -> None:
        self._note_changes(before, state)
        self.changes += 1
        self.revision += 1

    def batch(self) -> AbstractContextManager[None]:
        """Several writes, one file write when the block ends (each fsynced write of the
        whole file costs the same, however little changed): all of them or, when the block
        raises or the write fails, none, the cache back at the state before the block.
        Readers see the block's changes before they are on disk. Nested blocks join the outer."""
        return self._holding(self._write_file)

    @contextmanager
    def _holding(self, changed: Callable[[dict[str, Any] | None, dict[str, Any]], None]) -> Iterator[None]:
        """Writes in the block change the cache only; when it ends, ``changed(before, state)`` if
        they changed anything.  A block (or a ``changed``) that raises leaves the cache as before."""
        if self._batching:
            yield
            return
        before = self._state
        self._batching = True
        try:
            yield
            self._batching = False
            if self._state is not before and self._state is not None:
                changed(before, self._state)
        except BaseException:
            self._state = before
            raise
        finally:
            self._batching = False

    def close(self) -> None:
        """The file is written whole first when the journal holds rows: a closed database (a
        stopped host's) is its file alone, which a copy backs up and a hand edit may change."""
        if self._state is not None and self.journal.holds_rows:
            try:
                with self._file_lock:
                    self.journal.rewrite(self.path, _encode(self._state))
                    self.durable = self.changes
            except OSError as exc:  # the journal still holds every change: the next load replays it
                log.warning("%s not written whole at close (%s); %s holds the changes",
                            self.path, exc, self.journal.path.name)
        self._state = None
        self.journal.close()


class _CopyOnAccess(dict):  # type: ignore[type-arg]
    """The cached tables, each deep-copied the first time TinyDB takes it by ``[]``.

    TinyDB reaches a table only through ``tables[name]``; tables it never takes stay the
    cached objects, unchanged, and are only serialised again by :meth:`write`.
    """

    def __init__(self, state: dict[str, Any], narrow: tuple[str, frozenset[str]] | None = None) -> None:
        super().__init__(state)
        self._copied: set[str] = set()
        self._narrow = narrow

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if key not in self._copied:
            if self._narrow is not None and self._narrow[0] == key:  # only these rows change
                rows = self._narrow[1]
                value = {doc_id: json_copy(row) if doc_id in rows else row for doc_id, row in value.items()}
            else:
                value = json_copy(value)
            super().__setitem__(key, value)
            self._copied.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._copied.add(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (must copy, as [] does)


_CONTAINERS = (dict, list)


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): several times faster than ``deepcopy``.
    Scalars are shared without a call each (most of an app's values are scalars)."""
    if isinstance(value, dict):
        return {key: json_copy(item) if isinstance(item, _CONTAINERS) else item for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) if isinstance(item, _CONTAINERS) else item for item in value]
    return value


class SharedReadTable(Table):
    """A table whose reads copy only the documents they return.

    TinyDB's reads go through ``_read_table``; here it hands out the storage's cached
    state instead of a copy of the whole table, and every document a read returns is
    copied deeply, so a caller that changes what it got cannot change the cache.
    Writes still go through ``read()`` (a copy of the table being written).
    """

    def _read_table(self) -> dict[str, Any]:
        storage = self.storage
        tables = storage.read_shared() if isinstance(storage, AtomicJSONStorage) else storage.read()
        if not tables:
            return {}
        return tables.get(self.name, {})

    def search(self, cond: Any) -> list[Document]:
        return [_detached(doc) for doc in super().search(cond)]

    def get(self, cond: Any = None, doc_id: int | None = None, doc_ids: list[int] | None = None) -> Any:
        found = super().get(cond, doc_id, doc_ids)
        if isinstance(found, list):
            return [_detached(doc) for doc in found]
        return None if found is None else _detached(found)

    def __iter__(self) -> Iterator[Document]:
        for doc in super().__iter__():
            yield _detached(doc)

    def upsert(self, document: Mapping[str, Any], cond: Any = None) -> list[int]:
        """One file write: TinyDB's upsert of a new row is an update that matches nothing, written
        unchanged, then the insert (two fsynced writes of the whole file per new app or catalog
        source, one of them for nothing)."""
        storage = self.storage
        if not isinstance(storage, AtomicJSONStorage):
            return super().upsert(document, cond)
        if cond is None and not isinstance(document, Document):
            return super().upsert(document, cond)  # TinyDB's error for neither
        with storage.batch():
            rows = self._read_table()
            if isinstance(document, Document):
                keys = [str(document.doc_id)] if str(document.doc_id) in rows else []
            else:  # one look at the rows (TinyDB's update would look at every row again)
                keys = [key for key, row in rows.items() if cond(row)]
            with storage.rows_changing(self.name, frozenset(keys)):  # the table's other rows are not copied
                if keys:
                    return self.update(document, doc_ids=[int(key) for key in keys])
                return [self.insert(document)]


def _detached(doc: Document) -> Document:
    # Document() already copied the top level; copy the nested containers too.
    for key, value in doc.items():
        if isinstance(value, dict | list):
            doc[key] = json_copy(value)
    return doc


Migration = Callable[[Table], None]
Schema = dict[int, Migration]


def _first_layout(table: Table) -> None:
    """Version 1 is the layout the table was first written with: nothing to change."""


INITIAL_SCHEMA: Schema = {1: _first_layout}


class Database:
    """One TinyDB file with one re-entrant lock around every read-modify-write.

    Tables carry a schema version in the ``_meta`` table; :meth:`migrate` runs
    the registered migrations up to the wanted version at boot.
    """

    def __init__(self, path: str | Path, journal_from: int = DEFAULT_JOURNAL_FROM) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._db = TinyDB(self.path, storage=AtomicJSONStorage, journal_from=journal_from)
        self._db.table_class = SharedReadTable
        self._indexes: dict[tuple[str, str], tuple[Any, dict[Any, int]]] = {}
        self._flushing: asyncio.Future[None] | None = None

    @property
    def writes(self) -> int:
        """File writes completed so far (tests and benchmarks)."""
        return int(self._db.storage.writes)  # type: ignore[attr-defined]

    @property
    def bytes_written(self) -> int:
        """Bytes written to the file and its journal so far (tests and benchmarks)."""
        return int(self._db.storage.bytes_written)  # type: ignore[attr-defined]

    @property
    def revision(self) -> int:
        """Changes each time anything is written (cache keys for derived views)."""
        return int(self._db.storage.revision)  # type: ignore[attr-defined]

    def table(self, name: str) -> Table:
        return self._db.table(name, cache_size=0)

    def ids_by(self, table: str, field: str) -> dict[Any, int]:
        """``{row[field]: doc id}`` of ``table``'s rows, for look-ups by a unique field without a
        scan (a query per name made a call naming N apps cost N^2).  Kept until the table
        changes: every write replaces the cached table object this is keyed by."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)  # the only storage a Database opens
        rows = (storage.read_shared() or {}).get(table, {})
        cached = self._indexes.get((table, field))
        if cached is None or cached[0] is not rows:
            cached = (rows, {row.get(field): int(doc_id) for doc_id, row in rows.items()})
            self._indexes[(table, field)] = cached
        return cached[1]

    def shared_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` themselves, uncopied: for callers that only read them."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)  # the only storage a Database opens
        return list((storage.read_shared() or {}).get(table, {}).values())

    def append_writes(self, journal_bytes: int = DEFAULT_JOURNAL_FROM) -> None:
        """From the next write on, a write appends its rows to the journal whatever the file's
        size, and the file is rewritten once the journal holds ``journal_bytes`` (or outgrows it):
        for a host whose small database takes many writes (a device agent: seven per install,
        each a new temp file, two fsyncs and a rename when rewritten whole).  Durable as before;
        the file alone holds the whole state again once the database is closed."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)  # the only storage a Database opens
        storage.journal.journal_from = 0
        storage.journal.journal_floor = journal_bytes

    def drop_table(self, name: str) -> None:
        with self.lock:
            if name in self._db.tables():
                self._db.drop_table(name)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Hold the lock for a read-modify-write spanning several calls."""
        with self.lock:
            yield self

    @contextmanager
    def batch(self) -> Iterator[Database]:
        """A transaction whose writes reach the file as one write when it ends, all or none
        (:meth:`AtomicJSONStorage.batch`)."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)  # the only storage a Database opens
        with self.lock, storage.batch():
            yield self

    @contextmanager
    def later(self) -> Iterator[Database]:
        """A transaction whose writes are in memory at once (readers see them) and reach the file
        with the next write, or with :meth:`flush`; for state that must not block the event loop
        on the disk, whose owner awaits :meth:`flush` before it relies on it being stored."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        with self.lock, storage.deferred():
            yield self

    async def flush(self) -> None:
        """Return once every change made so far is on disk; the write (temp file, fsync, rename)
        runs in a worker thread, and one write carries every change made before it began, so
        concurrent callers share it.  A failed write raises; its changes stay for the next."""
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        target = storage.changes
        loop = asyncio.get_running_loop()
        while storage.durable < target:
            if self._flushing is None or self._flushing.done() or self._flushing.get_loop() is not loop:
                self._flushing = asyncio.ensure_future(self._write_pending(storage))
            await asyncio.shield(self._flushing)

    @staticmethod
    async def _write_pending(storage: AtomicJSONStorage) -> None:
        if storage.changes <= storage.durable:
            return
        write = storage.pending()  # encoded here, on the event loop: the state cannot change meanwhile
        if write is None:
            raise OSError(f"{storage.path}: the database was closed before its last changes were written")
        await asyncio.to_thread(write)

    def schema_version(self, table: str) -> int:
        with self.lock:
            row = self.table(META_TABLE).get(doc_id=_table_doc_id(table))
            return int(row["version"]) if row else 0

    def migrate_all(self, schemas: Mapping[str, Schema]) -> None:
        """:meth:`migrate` each table of ``schemas`` (how a service registers its tables)."""
        for table, migrations in schemas.items():
            self.migrate(table, migrations)

    def migrate(self, table: str, migrations: Schema) -> int:
        """Run ``migrations[v]`` for each version above the stored one, in order."""
        with self.lock:
            current = self.schema_version(table)
            for version in sorted(v for v in migrations if v > current):
                migrations[version](self.table(table))
                self.table(META_TABLE).upsert(
                    Document({"table": table, "version": version}, doc_id=_table_doc_id(table))
                )
                current = version
            return current

    def close(self) -> None:
        with self.lock:
            self._db.close()


def _table_doc_id(table: str) -> int:
    # Stable small integer per table name so the meta row can be upserted by id.
    import zlib

    return zlib.crc32(table.encode()) or 1
