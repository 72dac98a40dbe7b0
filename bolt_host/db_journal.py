"""``db.json``'s journal: a write appends the rows that changed instead of rewriting the file.

:class:`~bolt_host.storage.AtomicJSONStorage` rewrote the whole ``db.json`` (temp file, two
fsyncs, rename) at every write, so N installs wrote N times a file that grows with N: N^2
bytes (at 1000 apps, gigabytes).  Once the file is large (``journal_from`` bytes), a write
appends one line to ``db.json.log`` instead — ``{table: {doc id: row | null}}``, the rows
changed since the last write, or ``{table: null}`` for a table dropped — and fsyncs it.  The
file is rewritten (compaction) when the journal has grown past it, so the bytes written stay
a constant times what changed, and when the database is closed (a stopped host's file holds
its whole state: a copy of it is a backup).  Below ``journal_from`` every write rewrites the file as
before (a small ``db.json`` always holds the whole state, for whoever reads it), unless its owner
asked for appends at any size (``Database.append_writes``: a device agent, whose small database
takes seven writes per install); its journal then grows to ``journal_floor`` bytes before a
compaction.

Crash safety (``kill -9`` or power loss at any moment leaves the previous or the next state):

- the journal's first line names the file it follows (``{"follows": fingerprint}``, a hash of its
  bytes); a load replays a journal only onto that file, so a journal left behind by a
  compaction that replaced the file but not yet the journal is ignored;
- a compaction writes the file (temp file, fsync, rename, fsync of the folder), then replaces
  the journal the same way by one holding only its first line;
- a line is one ``write`` ending in a newline, fsynced before the write is acknowledged: a torn
  last line was never acknowledged and is ignored;
- after a load that replayed lines, or an append that failed (disk full: the journal may end in
  a torn line), the next write is a compaction, so appends only ever follow whole lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("bolt_host.db_journal")
JOURNAL_SUFFIX = ".log"
DEFAULT_JOURNAL_FROM = 64 * 1024  # a db.json smaller than this is rewritten whole at each write


def fingerprint(snapshot: bytes) -> str:
    return hashlib.blake2b(snapshot, digest_size=16).hexdigest()


class DbJournal:
    """The journal next to one JSON file of tables (``{table: {doc id: row}}``)."""

    def __init__(self, path: Path, journal_from: int = DEFAULT_JOURNAL_FROM) -> None:
        self.path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.journal_from = journal_from
        self.journal_floor = 0  # the journal may grow to the file's size, or to this if larger
        self._fd: int | None = None  # open for appends after this process's first compaction
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self.must_compact = True
        self.bytes_written = 0  # file and journal bytes, for tests and benchmarks
        self.appends = 0
        self.compactions = 0

    # loading -----------------------------------------------------------------------
    def replay(self, snapshot: bytes, state: dict[str, Any]) -> int:
        """Apply the journal's lines to ``state`` (the file's ``snapshot`` parsed); how many."""
        self._snapshot_bytes = len(snapshot)
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return 0
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None  # a journal whose first write never finished: it follows no file
        if not isinstance(header, dict) or header.get("follows") != fingerprint(snapshot):
            return 0  # a compaction replaced the file after this journal was made: it holds it all
        replayed = 0
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                changes = json.loads(line)
            except ValueError:
                if number >= len(lines) - 1:  # the last line: an append that was never acknowledged
                    log.warning("%s: ignored a torn last line (a write that was not acknowledged)", self.path.name)
                    break
                problem = f"{self.path} line {number} is not valid JSON; it was left as it is."
                from bolt_host.storage import CorruptDatabaseError  # (storage imports this module)

                raise CorruptDatabaseError(problem) from None
            _apply(state, changes)
            replayed += 1
        return replayed

    # writing -------------------------------------------------------------------------
    def may_append(self) -> bool:
        """Whether a write may append to the journal at all (else it rewrites the file)."""
        return not self.must_compact and self._fd is not None

    def appends_now(self, line_bytes: int) -> bool:
        """Whether the next write appends a line of this size (else it rewrites the file: the
        journal would outgrow it)."""
        limit = max(self._snapshot_bytes, self.journal_floor)
        return self.may_append() and self._journal_bytes + line_bytes <= limit

    def append(self, line: bytes) -> None:
        """Append ``line`` (ending in a newline) and fsync it; may run in a worker thread."""
        assert self._fd is not None  # appends_now said so
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except BaseException:
            self.must_compact = True  # a torn line may end the journal now: the next write starts another
            raise
        self._journal_bytes += len(line)
        self.bytes_written += len(line)
        self.appends += 1

    def rewrite(self, target: Path, snapshot: bytes) -> None:
        """Write the whole file, then (for a large one) a journal that follows it."""
        from bolt_host.storage import atomic_write_bytes  # (storage imports this module)

        self.must_compact = True  # until both are written: a failure leaves no journal to append to
        self.close()
        atomic_write_bytes(target, snapshot)
        self.bytes_written += len(snapshot)
        self._snapshot_bytes, self._journal_bytes = len(snapshot), 0
        if len(snapshot) >= self.journal_from:
            header = b'{"follows":"%s"}\n' % fingerprint(snapshot).encode()
            atomic_write_bytes(self.path, header)
            self.bytes_written += len(header)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        else:  # a small file holds it all; a journal left next to it follows an older one
            self.path.unlink(missing_ok=True)
        self.must_compact = False
        self.compactions += 1

    @property
    def holds_rows(self) -> bool:
        """Whether this process appended lines since the file was last written whole."""
        return self._journal_bytes > 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def encode_line(changes: dict[str, dict[str, bytes] | None]) -> bytes:
    """One journal line from ``{table: {doc id: encoded row or b"null"} | None (dropped)}``."""
    parts = []
    for table, rows in changes.items():
        name = json.dumps(table).encode()
        if rows is None:
            parts.append(name + b":null")
        else:
            encoded = b",".join(json.dumps(key).encode() + b":" + row for key, row in rows.items())
            parts.append(name + b":{" + encoded + b"}")
    return b"{" + b",".join(parts) + b"}\n"


def _apply(state: dict[str, Any], changes: dict[str, Any]) -> None:
    for table, rows in changes.items():
        if rows is None:
            state.pop(table, None)
            continue
        current = state.setdefault(table, {})
        for key, row in rows.items():
            if row is None:
                current.pop(key, None)
            else:
                current[key] = row
