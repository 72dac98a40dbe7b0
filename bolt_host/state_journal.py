"""``runtime.json``'s journal: in append mode a commit appends the rows that changed.

:class:`~bolt_host.statefile.StateFile` rewrites its whole file at every commit: a new temp
file (a new inode), an fsync, a rename and an fsync of the folder, and before that, for a
spawn's record, a ``runtime.json.pending`` the same way without the fsyncs.  An app start
commits two or three times.  A host whose owner asks for appends
(:meth:`StateFile.append_writes`: a device agent, which starts an app at every install)
instead writes each commit as one line at the end of ``runtime.json.log`` —
``{"#write": N, "rows": {section: {key: row | null}}}``, every row put or deleted since the
last line — on the event loop into the page cache (visible to a host started after this one
is killed), and a durable commit fsyncs that open file in a worker thread: no new inode, no
rename, no folder fsync.  ``runtime.json`` is written whole as append mode begins (the
host's start; also the next write after a failed one), rewritten (compaction) when the journal
outgrows ``floor`` bytes (or the file), and written whole
when the host closes it (the journal then goes: a stopped host's file alone holds its state).

Crash safety (``kill -9`` or power loss at any moment leaves the previous or the next state):

- every line carries its write number; a load replays, onto ``runtime.json`` (or the newer
  pending file), only the lines numbered above what it holds, in order, so lines a compaction
  already took in are skipped whether or not the journal was emptied after it;
- a compaction first moves the appends to a new journal (``runtime.json.log.next``, opened on
  the event loop, so every line lands in order) and writes there at once the changes no line
  holds yet (a visible commit made while the snapshot is being written finds them there), then
  writes the snapshot (temp file, fsync, rename, fsync of the folder) and renames the new
  journal over the old one; a load replays the old journal, then the new one;
- a line is one ``write``; a torn or unreadable line ends the replay (what follows it was never
  acknowledged as durable: a durable commit fsyncs every line before its own), and after a
  write that failed (disk full) the next one writes the whole file and starts an empty journal
  (in that order, on the event loop), so appends only follow whole lines.

A host without append mode still replays a journal it finds (its first commit then rewrites the
whole file, numbered above every line).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bolt_host.storage import _fsync_dir, atomic_write_bytes

log = logging.getLogger("bolt_host.state_journal")
JOURNAL_SUFFIX = ".log"
NEXT_SUFFIX = ".log.next"
DEFAULT_FLOOR = 64 * 1024  # the journal may grow to this (or to the file's size) before a compaction


def replay(path: Path, sections: dict[str, Any], version: int) -> int:
    """Apply the journal lines of ``path`` numbered above ``version`` to ``sections`` (the file's
    rows, changed in place); the write number they reach."""
    for journal in (path.with_name(path.name + JOURNAL_SUFFIX), path.with_name(path.name + NEXT_SUFFIX)):
        try:
            lines = journal.read_bytes().split(b"\n")
        except FileNotFoundError:
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                number, rows = entry["#write"], entry["rows"]
                if not isinstance(number, int) or not isinstance(rows, dict):
                    raise ValueError("not a journal line")
            except (ValueError, KeyError, TypeError):
                log.warning("%s: replay ended at a torn or unreadable line (never acknowledged)", journal.name)
                return version
            if number <= version:
                continue  # a compaction holds it
            apply_line(sections, rows)
            version = number
    drop_empty_sections(sections)
    return version


def apply_line(sections: dict[str, Any], changes: dict[str, Any]) -> None:
    """Apply one journal line's ``{section: {key: row | null}}`` to ``sections`` (a null deletes)."""
    for section, rows in changes.items():
        for key, row in rows.items():
            if row is None:
                sections.get(section, {}).pop(key, None)
            else:
                sections.setdefault(section, {})[key] = row


def drop_empty_sections(sections: dict[str, Any]) -> None:
    """A section whose last row a journal deleted is gone, as in a file written whole."""
    for section in [name for name, rows in sections.items() if not rows]:
        del sections[section]


class StateJournal:
    """The journal of one :class:`~bolt_host.statefile.StateFile` in append mode."""

    def __init__(self, path: Path, floor: int = DEFAULT_FLOOR) -> None:
        self.target = path
        self.path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.next_path = path.with_name(path.name + NEXT_SUFFIX)
        self.floor = floor
        self._fd: int | None = None  # the journal appends go to; None: the next write compacts
        self._bytes = 0
        self._snapshot_bytes = 0
        self._changes: dict[str, dict[str, bytes]] = {}  # section -> key -> b'"key":row' (or null)
        self.appends = 0  # for tests and benchmarks
        self.compactions = 0

    def note(self, section: str, key: str, fragment: bytes) -> None:
        """A row put (``fragment``: ``b'"key":{...}'``) or deleted (``b'"key":null'``)."""
        self._changes.setdefault(section, {})[key] = fragment

    def append(self, version: int) -> None:
        """Write the changes noted so far as line ``version`` (on the event loop: the page cache,
        no fsync).  Raises OSError; the next write is then a compaction."""
        if not self._changes:
            return
        changes, self._changes = self._changes, {}
        line = b'{"#write":%d,"rows":{' % version + b",".join(
            json.dumps(section).encode() + b":{" + b",".join(rows.values()) + b"}" for section, rows in changes.items()
        ) + b"}}\n"
        assert self._fd is not None  # next_write compacts (opening a journal) when there is none
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self._fd = self._close(self._fd)  # it may end in a torn line now: the next write compacts
            raise
        self._bytes += len(line)
        self.appends += 1

    @property
    def appending(self) -> bool:
        return self._fd is not None

    def next_write(self, version: int, snapshot: Callable[[], bytes]) -> Callable[[], None]:
        """The durable write of everything up to ``version`` (built on the event loop, run in a
        worker thread): the changes appended now and the journal fsynced, or a compaction."""
        if self._fd is None:  # the first write, or one after a failure: on the event loop, once
            try:
                self._start(snapshot())
            except OSError as exc:
                return _raise(exc)
            return _done
        if self._bytes <= max(self.floor, self._snapshot_bytes):
            try:
                self.append(version)
            except OSError as exc:
                return _raise(exc)
            return self._sync(self._fd)
        data = snapshot()
        try:  # from here on appends go to the new journal, behind this snapshot's number
            fd = os.open(self.next_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            return _raise(exc)
        old, self._fd, self._bytes, self._snapshot_bytes = self._fd, fd, 0, len(data)
        try:  # the changes no line holds yet: visible now (the snapshot is written later, in a thread)
            self.append(version)
        except OSError as exc:
            self._close(old)
            return _raise(exc)
        self.compactions += 1
        return lambda: self._compact(data, old)

    def _start(self, data: bytes) -> None:
        """The whole file first (every line of any journal is in it), then an empty journal: a kill
        at any point leaves the files a load needs."""
        self._changes.clear()  # the snapshot holds them
        atomic_write_bytes(self.target, data)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.next_path.unlink(missing_ok=True)
        self._fd, self._bytes, self._snapshot_bytes = fd, 0, len(data)
        self.compactions += 1

    @staticmethod
    def _sync(fd: int) -> Callable[[], None]:
        own = os.dup(fd)  # a failed append may close the journal's descriptor while this runs

        def sync() -> None:
            try:
                os.fsync(own)
            finally:
                os.close(own)

        return sync

    def _compact(self, snapshot: bytes, old: int | None) -> None:
        try:
            atomic_write_bytes(self.target, snapshot)
            os.replace(self.next_path, self.path)  # the old journal's lines are all in the snapshot
            _fsync_dir(self.path.parent)
        finally:
            self._close(old)

    def failed(self) -> None:
        """A write failed: the next one is a compaction (appends only ever follow whole lines)."""
        self.close()

    def close(self) -> None:
        self._fd = self._close(self._fd)

    def remove(self) -> None:
        """Delete the journal's files (the file was written whole since their last line)."""
        self.path.unlink(missing_ok=True)
        self.next_path.unlink(missing_ok=True)

    @staticmethod
    def _close(fd: int | None) -> None:
        if fd is not None:
            os.close(fd)


def _done() -> None:
    """A write already made (on the event loop)."""


def _raise(exc: OSError) -> Callable[[], None]:
    def fail() -> None:
        raise exc

    return fail
