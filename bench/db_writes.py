"""What N installs cost ``db.json``: bytes written and CPU per install, through the real storage.

Each install is what ``AppInstalls.install_tree`` does to the database: one upsert of an app
record by name, in a transaction.  Usage (from the repo root, venv active)::

    python bench/db_writes.py 50 200 1000
    PYTHONPATH=/tmp/main python bench/db_writes.py 1000     # another checkout, for a comparison

Bytes are counted through the storage (``Database.bytes_written``; for a checkout without it,
the whole-file writes are counted where they are made).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tinydb import Query

from bolt_host.storage import Database


def app_record(i: int) -> dict[str, Any]:
    """About the size and shape of a benchmark app's record."""
    name = f"app-{i:04d}"
    return {
        "name": name, "version": "1.0.0", "description": "benchmark app", "tags": ["bolt-app"], "system": False,
        "path": name, "folder": f"/var/lib/bolt-host/apps/{name}", "main": "server.py",
        "source": {"type": "local", "path": name}, "dateCreated": "2026-12-07T19:00:00.000Z",
        "bolt": {"main": "server.py", "health": "/health", "env": {"BENCH_RUN": "x" * 20}},
        "start": {"argv": ["python3", "server.py"], "kind": "python"}, "hash": "sha256-" + "a" * 64,
        "env": {}, "public": [], "isolation": True, "module": False, "order": 0,
    }  # fmt: skip


def measure(n: int) -> tuple[int, float]:
    """Bytes written and CPU seconds of ``n`` installs into a fresh database."""
    db = Database(Path(tempfile.mkdtemp(prefix="bolt-dbwrites-")) / "db.json")
    storage: Any = db._db.storage
    counted = [0]
    if not hasattr(storage, "bytes_written"):
        write_encoded = storage.write_encoded

        def counting(version: int, encoded: bytes) -> None:
            counted[0] += len(encoded)
            write_encoded(version, encoded)

        storage.write_encoded = counting
    t0 = time.process_time()
    for i in range(n):
        with db.transaction():
            db.table("apps").upsert(app_record(i), Query().name == f"app-{i:04d}")
    cpu = time.process_time() - t0
    written = storage.bytes_written if hasattr(storage, "bytes_written") else counted[0]
    db.close()
    return written, cpu


def main(argv: list[str]) -> int:
    for n in [int(arg) for arg in argv] or [50, 200, 1000]:
        written, cpu = measure(n)
        print(f"N={n}: {written / 1e6:.1f} MB written ({written / n / 1e3:.1f} KB per install), "
              f"CPU {cpu * 1000 / n:.2f} ms per install")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
