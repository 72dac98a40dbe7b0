"""A :class:`StateFile` whose commits append only what changed: for state that grows.

``StateFile`` rewrites its whole file at every commit, which is right for small state.
Rows that accumulate (a fleet's operations and their notifications) would make each
commit rewrite megabytes.  Here a commit appends one line to a journal — every row
put or deleted since the last commit, ``{section: {key: row | null}}`` — and fsyncs it;
the snapshot (``{"journal": N, "sections": {...}}``) is rewritten only when the journal
has grown past the snapshot's size (compaction), so a write costs what changed.

Crash safety, with the same group commit as ``StateFile``:

- a commit's line is one ``write`` ending in a newline: a torn last line (``kill -9``
  or power loss mid-append) was never acknowledged and is ignored at load;
- compaction creates journal N+1 empty, then atomically replaces the snapshot naming
  N+1 (the commit point), then deletes journal N; a crash before the rename leaves the
  old snapshot and journal N, after it the new snapshot; the journal the snapshot does
  not name is a leftover, deleted at load;
- a load that replayed any line compacts at once, so appends always follow whole lines;
  an append that fails (disk full) makes the next write a compaction for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bolt_host.state_journal import apply_line, drop_empty_sections
from bolt_host.statefile import Row, StateFile, _encode_json
from bolt_host.storage import CorruptDatabaseError, atomic_write_bytes, load_json_object

log = logging.getLogger("bolt_host.journal")
MIN_COMPACT_BYTES = 1 << 20  # below this a journal is never worth rewriting the snapshot for


class JournalFile(StateFile):
    """Sections of rows keyed by name, in a snapshot file plus an append-only journal."""

    def __init__(self, path: str | Path, min_compact_bytes: int = MIN_COMPACT_BYTES) -> None:
        self._generation = 0
        self._replayed = 0  # journal lines applied at load
        self._pending: dict[str, dict[str, bytes]] = {}  # section -> key -> fragment (or b'"key":null')
        self._fd: int | None = None
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._must_compact = True  # the first write starts a journal of this process's own
        self.min_compact_bytes = min_compact_bytes
        self.compactions = 0  # for tests and benchmarks
        super().__init__(path)
        for leftover in self.path.parent.glob(f"{self.path.name}.*.log"):
            if leftover != self._journal_path(self._generation):
                leftover.unlink(missing_ok=True)
        if self._replayed or not self.path.exists():
            self.commit_now()  # a fresh journal, never appended to after a possibly torn line

    def _journal_path(self, generation: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{generation}.log")

    # loading ------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Row]]:
        snapshot = load_json_object(self.path) or {"journal": 0, "sections": {}}
        sections, generation = snapshot.get("sections"), snapshot.get("journal")
        if not isinstance(sections, dict) or not isinstance(generation, int):
            raise CorruptDatabaseError(f"{self.path} is not a journal snapshot; it was left as it is.")
        if not all(isinstance(rows, dict) for rows in sections.values()):
            raise CorruptDatabaseError(f"{self.path} does not hold JSON objects of rows; it was left as it is.")
        self._generation = generation
        self._replay(sections, self._journal_path(generation))
        return sections

    def _replay(self, sections: dict[str, dict[str, Row]], journal: Path) -> None:
        try:
            lines = journal.read_bytes().split(b"\n")
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                changes = json.loads(line)
            except ValueError:
                if number >= len(lines) - 1:  # the last line: an append that never finished
                    log.warning("%s: ignored a torn last line (a commit that was not acknowledged)", journal.name)
                    return
                problem = f"{journal} line {number} is not valid JSON; it was left as it is."
                raise CorruptDatabaseError(problem) from None
            apply_line(sections, changes)
            self._replayed += 1
        drop_empty_sections(sections)

    # changing -------------------------------------------------------------------
    def put(self, section: str, key: str, row: Row) -> bool:
        changed = super().put(section, key, row)
        if changed:
            self._pending.setdefault(section, {})[key] = self._fragments[section][key]
        return changed

    def delete(self, section: str, key: str) -> bool:
        deleted = super().delete(section, key)
        if deleted:
            self._pending.setdefault(section, {})[key] = _encode_json(key) + b":null"
        return deleted

    # writing (see StateFile: built on the event loop, run in a worker thread) ----------
    async def commit_visible(self) -> None:
        """As :meth:`commit`: the journal has no pending snapshot (its appends are small already)."""
        await self.commit()

    def _next_write(self) -> Callable[[], None]:
        pending, self._pending = self._pending, {}
        line = b"{" + b",".join(
            _encode_json(section) + b":{" + b",".join(rows.values()) + b"}" for section, rows in pending.items()
        ) + b"}\n"
        outgrown = self._journal_bytes + len(line) > max(self.min_compact_bytes, self._snapshot_bytes)
        if self._must_compact or self._fd is None or outgrown:
            snapshot = b'{"journal":%d,"sections":' % (self._generation + 1) + self._encode() + b"}"
            return lambda: self._compact(snapshot)
        return lambda: self._append(line)

    def _append(self, line: bytes) -> None:
        assert self._fd is not None  # _next_write compacts (opening a journal) when there is none
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self._journal_bytes += len(line)

    def _compact(self, snapshot: bytes) -> None:
        generation = self._generation + 1
        journal = self._journal_path(generation)
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            atomic_write_bytes(self.path, snapshot)  # fsyncs the folder: the new journal's entry too
        except BaseException:
            os.close(fd)
            journal.unlink(missing_ok=True)
            raise
        old_fd, self._fd = self._fd, fd
        old_journal = self._journal_path(self._generation)
        self._generation, self._journal_bytes, self._snapshot_bytes = generation, 0, len(snapshot)
        self._must_compact = False
        self.compactions += 1
        if old_fd is not None:
            os.close(old_fd)
        old_journal.unlink(missing_ok=True)

    def _write_failed(self) -> None:
        self._must_compact = True  # the journal may end in a torn line now: start a new one

    def close(self) -> None:
        """Close the journal (after the last commit)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

