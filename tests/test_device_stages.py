"""The manager's stage log (BOLT_DEVICE_STAGE_LOG): when each job call reached each stage,
written as the manager stops; a real Mosquitto, manager and agents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.device.fleet import running_fleet, sha256_of
from tests.fixtures.device.mosquitto import NEEDS_MOSQUITTO

pytestmark = [NEEDS_MOSQUITTO, pytest.mark.timeout(120)]
STAGES = ("call", "created", "published", "reply", "resumed", "answered", "sent")


def test_each_job_call_s_stages_are_logged_in_order_when_the_manager_stops(tmp_path: Path) -> None:
    log = tmp_path / "stages.json"
    operations = {}
    with running_fleet(tmp_path / "fleet", stage_log=str(log)) as fleet:
        for client_id in ("dev-1", "dev-2"):
            device = fleet.device_id(client_id)
            body = {"uri": fleet.hello["dist"]["tarball"], "name": fleet.hello["name"],
                    "version": fleet.hello["version"], "fileHash": sha256_of(fleet.hello_bytes)}
            response = fleet.kapua.post(f"/_/devices/{device}/packages/_download", json=body)
            assert response.status_code == 200, response.text
            operations[client_id] = fleet.kapua.wait_operation_end(device, response.json()["id"])
        assert not log.exists()  # written when the manager stops, not per call
    rows = json.loads(log.read_text())
    assert set(rows) == {operation["operationId"] for operation in operations.values()}
    for client_id, operation in operations.items():
        row = rows[operation["operationId"]]
        assert row["clientId"] == client_id
        times = [row[stage] for stage in STAGES]
        assert times == sorted(times), row
