"""Disk faults: a data dir on a small filesystem that fills up, and a corrupt ``db.json`` at boot.

The full-disk tests mount an 8 MiB tmpfs for the data dir (they need root and a kernel
that lets the test mount; otherwise they are skipped, with the reason printed).  On a
full disk every write answers a clear 507 (code 1100) and changes nothing; reads keep
working; the task queue keeps running; once space is freed the same writes succeed
without a restart, and a host restarted on a full disk still starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import RunningHost, running_host

FS_SIZE = "8m"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a {FS_SIZE} tmpfs here: {(mounted.stderr or mounted.stdout).strip()}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30, check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30, check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; return it (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28, exc
    with filler.open("ab", buffering=0) as handle:  # and the last few bytes a 4 KiB block left
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass
    return filler


def _disk_full(response: Any) -> None:
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["code"] == errors.STORAGE_FULL and "No space left" in body["error"]["message"]


async def _state(bolt: RunningHost, app_token: str) -> dict[str, Any]:
    return {
        "users": (await bolt.admin.get("/api/users")).json()["body"],
        "roles": (await bolt.admin.get("/api/roles")).json()["body"],
        "apps": (await bolt.admin.get("/api/apps")).json()["body"],
        "docs": (
            await bolt.client.post("/api/db/notes/find", json={}, headers={"X-Bolt-App-Token": app_token})
        ).json()["body"],
    }


async def test_full_disk_clear_errors_state_intact_and_recovery(small_fs: Path) -> None:
    data = small_fs / "data"
    async with running_host(data, local_repo=BUNDLED_LOCAL_REPO) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "notes"})).status_code == 201
        token = bolt.host.tokens.issue("notes")
        app = {"X-Bolt-App-Token": token}
        inserted = await bolt.client.post("/api/db/notes/insert", json={"object": {"text": "kept"}}, headers=app)
        assert inserted.status_code == 201
        before = await _state(bolt, token)
        db_before = json.loads((data / "db.json").read_text())

        filler = fill(small_fs)
        _disk_full(await bolt.admin.post("/api/users", json={"name": "carol", "password": "carol-password"}))
        _disk_full(await bolt.admin.post("/api/roles", json={"name": "ops"}))
        _disk_full(await bolt.admin.post("/api/apps/local", json={"path": "hello-web"}))
        _disk_full(await bolt.client.post("/api/db/notes/insert", json={"object": {"text": "lost"}}, headers=app))
        _disk_full(await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password}))

        # The previous state is intact, in memory and on disk, and reads still work.
        assert await _state(bolt, token) == before
        assert json.loads((data / "db.json").read_text()) == db_before
        assert sorted(p.name for p in (data / "apps").iterdir()) == ["notes"], "no half-installed app or staging"
        assert not list(data.glob(".*.tmp")) and not list((data / "databases").glob(".*.tmp"))

        # A task that cannot store its end still frees the queue for the next one.
        import asyncio

        gate = asyncio.Event()

        async def waits(task: Any) -> dict[str, bool]:
            await gate.wait()
            return {"done": True}

        filler.unlink()
        first = bolt.host.tasks.submit("install", "first", None, waits)
        filler = fill(small_fs)
        gate.set()
        finished = await bolt.host.tasks.wait(first["id"], timeout=10)
        assert finished["status"] == "succeeded"

        # Space is back: the same writes succeed, no restart needed.
        filler.unlink()

        async def quick(task: Any) -> dict[str, bool]:
            return {"done": True}

        second = bolt.host.tasks.submit("install", "second", None, quick)
        assert (await bolt.host.tasks.wait(second["id"], timeout=10))["status"] == "succeeded"
        assert (await bolt.admin.post("/api/users", json={"name": "carol", "password": "carol-password"})).status_code
        assert (await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})).status_code == 201
        again = await bolt.client.post("/api/db/notes/insert", json={"object": {"text": "new"}}, headers=app)
        assert again.status_code == 201
        texts = {d["text"] for d in (await _state(bolt, token))["docs"]}
        assert texts == {"kept", "new"}


async def test_a_host_restarted_on_a_full_disk_starts_and_serves_reads(small_fs: Path) -> None:
    data = small_fs / "data"
    async with running_host(data, local_repo=BUNDLED_LOCAL_REPO) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "notes"})).status_code == 201
    filler = fill(small_fs)
    async with running_host(data, local_repo=BUNDLED_LOCAL_REPO) as bolt:
        assert [a["name"] for a in (await bolt.admin.get("/api/apps")).json()["body"]] == ["notes"]
        _disk_full(await bolt.admin.post("/api/roles", json={"name": "ops"}))
        filler.unlink()
        assert (await bolt.admin.post("/api/roles", json={"name": "ops"})).status_code == 201


def test_corrupt_db_refuses_to_start_with_a_clear_message_and_keeps_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    torn = b'{"users": {"1": {"name": "admin", "passw'
    (data / "db.json").write_bytes(torn)
    env = {**os.environ, "BOLT_ADMIN_PASSWORD": "some-admin-password", "BOLT_DEVICE_MODE": "off"}
    result = subprocess.run(
        [sys.executable, "-m", "bolt_host", "serve", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(data / "db.json") in message and "left as it is" in message, result.stderr
    assert "Traceback" not in result.stderr
    assert (data / "db.json").read_bytes() == torn, "the file was changed"
    assert sorted(p.name for p in data.iterdir() if p.name.startswith("db.json")) == ["db.json"]

