"""Memory of the device manager's state at 500 devices: tracemalloc, in one process.

Builds what a 500-device burst leaves (500 devices with their BIRTH, 500 operations, 3 progress
notifications and a COMPLETED per operation, in batches of 100 as the manager's notification
worker writes them) twice: in the device backend's journal (``JournalFile``, as the manager
does now) and in the host's TinyDB ``db.json`` (``Database``, where these tables were before),
and reports for each the memory held once idle and the peak during the batches (tracemalloc,
Python allocations only), the file sizes and the wall time.  Ratios, same process, same data.

    python bench/device_state_memory.py [--devices 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bolt_device.devices import TABLE, Devices  # noqa: E402
from bolt_device.operations import NOTIFICATIONS, OPERATIONS, Operations  # noqa: E402

from bolt_host.journal import JournalFile  # noqa: E402
from bolt_host.storage import Database  # noqa: E402

BATCH = 100
STEPS = (("download", "IN_PROGRESS", 50), ("download", "COMPLETED", 100), ("install", "IN_PROGRESS", 50),
         ("install", "COMPLETED", 100))
BIRTH = {"display_name": "bolt", "model_name": "bolt-host", "firmware_version": "1.0.0", "os_version": "Linux 6",
         "application_ids": "DEPLOY-V2", "connection_ip": "127.0.0.1", "bolt.boot": "b" * 32, "uptime": 12}


async def journal_run(folder: Path, count: int) -> dict[str, Any]:
    state = JournalFile(folder / "device-state.json")
    devices, ops = Devices(state), Operations(state)
    for i in range(count):
        devices.presence("AQ", f"agent-{i}", "BIRTH", "2026-01-01T00:00:00.000Z", BIRTH)
    devices.store_presence(devices.take_presence())
    await devices.saved()
    operations = [await ops.create(devices.by_client("AQ", f"agent-{i}"), "download",
                                    {"kapua.package.download.install": True}, "AQ") for i in range(count)]
    for resource, status, progress in STEPS:
        for first in range(0, count, BATCH):
            items = [(o, {f"dp.{resource}.status": status, f"dp.{resource}.progress": progress}, resource,
                      "2026-01-01T00:00:01.000Z") for o in operations[first:first + BATCH]]
            ops.notify_many(items)
            await ops.saved()
    state.close()
    return {"devices": devices, "operations": ops}


def tinydb_run(folder: Path, journal_folder: Path) -> Database:
    """The same rows, written to db.json the way the manager wrote them before: a batch per write."""
    source = JournalFile(journal_folder / "device-state.json")
    db = Database(folder / "db.json")
    db.table(TABLE).insert_multiple(source.rows(TABLE))
    for first in range(0, len(source.rows(OPERATIONS)), BATCH):
        db.table(OPERATIONS).insert_multiple(source.rows(OPERATIONS)[first:first + BATCH])
    notes = source.rows(NOTIFICATIONS)
    source.close()
    for first in range(0, len(notes), BATCH):
        db.table(NOTIFICATIONS).insert_multiple(notes[first:first + BATCH])
    return db


def measured(run: Any) -> tuple[Any, dict[str, float]]:
    tracemalloc.start()
    started = time.perf_counter()
    kept = run()
    seconds = time.perf_counter() - started
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return kept, {"heldMiB": round(held / 2**20, 2), "peakMiB": round(peak / 2**20, 2), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="device-memory-") as work:
        journal_dir, tinydb_dir = Path(work) / "journal", Path(work) / "tinydb"
        journal_dir.mkdir()
        tinydb_dir.mkdir()
        _, journal = measured(lambda: asyncio.run(journal_run(journal_dir, args.devices)))
        _, tinydb = measured(lambda: tinydb_run(tinydb_dir, journal_dir))
        journal["fileBytes"] = sum(f.stat().st_size for f in journal_dir.iterdir())
        tinydb["fileBytes"] = (tinydb_dir / "db.json").stat().st_size
        print(json.dumps({"devices": args.devices, "journal": journal, "tinydb": tinydb,
                          "peakRatio": round(journal["peakMiB"] / tinydb["peakMiB"], 2)}, indent=2))


if __name__ == "__main__":
    main()
