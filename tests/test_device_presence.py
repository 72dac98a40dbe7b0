"""The manager's device registry under a fleet's presence: BIRTHs change memory at once and are
stored in one write per batch (not one per device), and an update or delete made before the
batch is stored is what the database keeps.  A real host database file."""

from __future__ import annotations

from pathlib import Path

import pytest
from bolt_device.devices import CONNECTED, DISCONNECTED, Devices

from bolt_host.storage import Database

pytestmark = pytest.mark.timeout(30)
SCOPE = "AQ"


def _birth(devices: Devices, client: str) -> dict:
    return devices.presence(SCOPE, client, "BIRTH", "2026-01-01T00:00:00.000Z", {"bolt.boot": "b1", "uptime": 5})


def test_a_fleet_announcing_itself_is_stored_in_one_write(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    devices = Devices(db)
    before = db.revision
    births = [_birth(devices, f"dev-{i}") for i in range(200)]
    assert db.revision == before  # nothing written yet: presence lives in memory first
    assert all(b["connectionStatus"] == CONNECTED for b in births)
    assert devices.by_client(SCOPE, "dev-7")["agentBoot"] == "b1"

    devices.store_presence(devices.take_presence())
    assert db.revision == before + 1
    for i in range(0, 200, 2):  # half of them go away, then the fleet re-announces
        devices.presence(SCOPE, f"dev-{i}", "LWT", "2026-01-01T00:00:01.000Z")
    devices.store_presence(devices.take_presence())
    assert db.revision == before + 2
    assert devices.take_presence() == set()

    reopened = Devices(Database(tmp_path / "db.json"))
    rows = {d["clientId"]: d for d in reopened.list(SCOPE)}
    assert len(rows) == 200
    assert rows["dev-0"]["connectionStatus"] == DISCONNECTED and rows["dev-0"]["lastEvent"]["resource"] == "LWT"
    assert rows["dev-1"]["connectionStatus"] == CONNECTED and rows["dev-1"]["optlock"] == 2


def test_an_update_or_delete_before_the_batch_is_what_gets_stored(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.json")
    devices = Devices(db)
    kept, dropped = _birth(devices, "kept"), _birth(devices, "dropped")
    pending = devices.take_presence()
    devices.update(kept, {"displayName": "Renamed"}, "admin")
    devices.delete(dropped)
    devices.store_presence(pending)

    rows = {d["clientId"]: d for d in Devices(Database(tmp_path / "db.json")).list(SCOPE)}
    assert set(rows) == {"kept"}
    assert rows["kept"]["displayName"] == "Renamed" and rows["kept"]["connectionStatus"] == CONNECTED
