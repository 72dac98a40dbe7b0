"""Uploads into the staging folder, installs from it, and firmware packages."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from bolt_robot import uploads
from bolt_robot.state import LOCAL_FILE_DIRS_ENV, install_wait_from

from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.robot_support import (
    SAMPLES,
    GatedTarballs,
    firmware_package,
    make_package,
    packed,
    publish_gated,
    robot_host,
)

pytestmark = pytest.mark.timeout(120)


def test_upload_then_install_local_file(tmp_path: Path) -> None:
    data, _ = packed(make_package(tmp_path, "ax", "2.6.4"))
    with robot_host(tmp_path / "data") as robot:
        client = robot.client
        uploaded = client.app_store_upload_local_file(data, "ax.2.6.4.pi64.tar.gz")
        assert uploaded.status_code == 201, uploaded.text
        stored = uploaded.json()
        staging = (tmp_path / "data" / "uploads").resolve()
        assert Path(stored["filename"]).parent == staging and stored["filename"].endswith("ax.2.6.4.pi64.tar.gz")
        assert (stored["module_name"], stored["version"]) == ("ax", "2.6.4")
        assert Path(stored["filename"]).read_bytes() == data

        installed = client.app_store_install_local_file(stored["filename"])
        assert installed.status_code == 201, installed.text
        assert installed.json() == {"module_name": "ax", "version": "2.6.4"}
        assert client.package("ax")["status"] == "up_to_date"
        app = robot.bolt("GET", "/api/apps/ax").json()["body"]
        assert app["source"]["type"] == "upload" and app["version"] == "2.6.4"
        task = client.list_install_tasks().json()[0]
        assert (task["module"], task["version"], task["status"]) == ("ax", "2.6.4", "succeeded")
        assert "from the local file ax.2.6.4.pi64.tar.gz" in client.log_text("install", task["id"])

        # a bare name is looked up in the staging folder; a second upload with the same name gets a new one
        newer, _ = packed(make_package(tmp_path, "ax", "2.7.0"))
        second = client.app_store_upload_local_file(newer, "ax.2.6.4.pi64.tar.gz").json()
        assert second["filename"] != stored["filename"] and second["version"] == "2.7.0"
        assert client.app_store_install_local_file(Path(second["filename"]).name).json()["version"] == "2.7.0"


def test_install_local_file_refuses_files_outside_the_staging_folder(tmp_path: Path, monkeypatch) -> None:
    outside = tmp_path / "ax.tgz"
    outside.write_bytes(packed(make_package(tmp_path, "ax", "1.0.0"))[0])
    monkeypatch.setenv(LOCAL_FILE_DIRS_ENV, str(tmp_path / "data" / "uploads"))  # only the staging folder
    with robot_host(tmp_path / "data") as robot:
        client = robot.client
        staging = tmp_path / "data" / "uploads"
        (staging / "link.tgz").symlink_to(outside)
        (staging / "notes.txt").write_text("not a package")
        for name in (str(outside), "/etc/passwd", "../ax.tgz", "link.tgz", "", str(staging), "missing.tgz"):
            refused = client.app_store_install_local_file(name)
            assert refused.status_code == 400, name
            assert "upload staging folder" in refused.json()["detail"]
        assert client.http.post("/app_store/services/install_local_file", json={"filename": 7}).status_code == 400
        not_a_package = client.app_store_install_local_file("notes.txt")
        assert not_a_package.status_code == 400 and "not a package tarball" in not_a_package.json()["detail"]
        assert client.package("ax") is None


def test_uploads_are_checked_and_capped(tmp_path: Path) -> None:
    with robot_host(tmp_path / "data", max_upload_bytes=64 * 1024) as robot:
        client = robot.client
        junk = client.app_store_upload_local_file(b"\x1f\x8b not really gzip", "junk.tgz")
        assert junk.status_code == 400 and "not a package tarball" in junk.json()["detail"]
        too_big = client.app_store_upload_local_file(b"\0" * (200 * 1024), "big.tgz")
        assert too_big.status_code == 413
        empty_form = client.http.post("/app_store/services/upload_local_file", files={"other": ("x", b"")}, data={})
        assert empty_form.status_code == 400
        raw = client.http.post(
            "/app_store/services/upload_local_file?filename=../../evil.tgz",
            content=packed(make_package(tmp_path, "rawpkg", "1.0.0"))[0],
            headers={"Content-Type": "application/gzip"},
        )
        assert raw.status_code == 201, raw.text
        assert Path(raw.json()["filename"]).name == "evil.tgz"
        staging = tmp_path / "data" / "uploads"
        assert sorted(p.name for p in staging.iterdir()) == ["evil.tgz"]  # nothing half-written is left
        client.refresh_app_store()
        assert client.wait_status("rawpkg", "not_installed")["latest_version"] == "1.0.0"  # uploads are in the store


def test_firmware_is_downloaded_and_flashed_in_one_task(tmp_path: Path) -> None:
    with robot_host(tmp_path / "data") as robot:
        client = robot.client
        listed = client.list_firmware_packages().json()
        assert listed == [
            {"name": "demo-firmware", "latest_version": "1.0.0", "current_version": "", "status": "not_installed"}
        ]
        assert client.package("demo-firmware") is None  # firmware is not an app package
        wrong = client.app_store_download_packages(["demo-firmware"])
        assert wrong.status_code == 400 and "invalid module" in wrong.json()["demo-firmware"]
        not_firmware = client.install_firmware_packages(["notes"])
        assert not_firmware.json() == {"notes": {"error": "invalid module notes, skip..."}}

        started = client.install_firmware_packages(["demo-firmware"])
        assert started.status_code == 201
        task_id = started.json()["demo-firmware"]["task_id"]
        assert started.json()["demo-firmware"]["version"] == "1.0.0"
        done = client.wait_status("demo-firmware", "up_to_date", firmware=True)
        assert done["current_version"] == "1.0.0"
        target = tmp_path / "data" / "firmware" / "demo-firmware"
        assert (target / "version.txt").read_text() == "1.0.0\n"
        assert (target / "firmware.bin").read_bytes() == (SAMPLES / "demo-firmware" / "image.bin").read_bytes()
        log = client.log_text("install", task_id)
        assert "=== checking checksum" in log and "flash: installed demo-firmware 1.0.0" in log
        assert any(t["id"] == task_id for t in client.list_install_tasks().json())
        again = client.install_firmware_packages(["demo-firmware"])
        assert again.status_code == 400 and "already up to date" in again.json()["demo-firmware"]["error"]


def test_a_failing_flash_is_install_failed_with_its_reason(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLES / "demo-firmware", repo / "bad-firmware")
    manifest = json.loads((repo / "bad-firmware" / "package.json").read_text())
    (repo / "bad-firmware" / "package.json").write_text(json.dumps({**manifest, "name": "bad-firmware"}))
    (repo / "bad-firmware" / "image.bin").write_bytes(b"corrupted image")
    with robot_host(tmp_path / "data", local_repo=repo) as robot:
        client = robot.client
        task_id = client.install_firmware_packages(["bad-firmware"]).json()["bad-firmware"]["task_id"]
        failed = client.wait_status("bad-firmware", "install_failed", firmware=True)
        assert failed["install_task_id"] == task_id
        assert failed["install_failed_reason"] == "flash command exited with code 1"
        assert failed["current_version"] == ""
        assert "sha256 mismatch" in client.log_text("install", task_id)
        assert not (tmp_path / "data" / "firmware" / "bad-firmware" / "firmware.bin").exists()


def test_install_local_file_answers_with_the_task_when_the_install_takes_long(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BOLT_ROBOT_INSTALL_WAIT", "0.5")
    data, _ = packed(make_package(tmp_path, "ax", "2.6.4"))
    with robot_host(tmp_path / "data") as robot:
        client = robot.client
        staged = client.app_store_upload_local_file(data, "ax.tgz").json()["filename"]
        with robot.capture.holding_app_lock("ax"):  # the install task waits inside, as a slow one would
            held = client.app_store_install_local_file(staged)
            assert held.status_code == 202, held.text
            body = held.json()
            assert set(body) == {"module_name", "version", "task_id"}
            assert (body["module_name"], body["version"]) == ("ax", "2.6.4")
            installing = client.wait_status("ax", "installing")
            assert installing["install_task_id"] == body["task_id"]
        assert client.wait_task("install", body["task_id"])["status"] == "succeeded"
        assert client.wait_status("ax", "up_to_date")["current_version"] == "2.6.4"


def test_the_install_wait_setting_is_checked() -> None:
    assert install_wait_from({}) == 60.0
    assert install_wait_from({"BOLT_ROBOT_INSTALL_WAIT": " 2.5 "}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="BOLT_ROBOT_INSTALL_WAIT must be a positive number"):
            install_wait_from({"BOLT_ROBOT_INSTALL_WAIT": bad})


def _part(folder: Path, data: bytes) -> Path:
    path, handle = uploads.open_part_file(folder)
    with handle:
        handle.write(data)
    return path


def test_uploads_are_named_without_hard_links_too(tmp_path: Path, monkeypatch) -> None:
    """On a filesystem without hard links (vfat, some network mounts) os.link fails with EPERM."""
    folder = tmp_path / "uploads"

    def no_hard_links(source: object, target: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(uploads.os, "link", no_hard_links)
    first = uploads.publish_part(_part(folder, b"first"), folder, "ax.tgz")
    second = uploads.publish_part(_part(folder, b"second"), folder, "ax.tgz")
    assert (first.name, second.name) == ("ax.tgz", "ax-1.tgz")
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")  # nothing was overwritten
    assert sorted(p.name for p in folder.iterdir()) == ["ax-1.tgz", "ax.tgz"]  # no .part file is left

    monkeypatch.setattr(uploads.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):  # other errors are not taken for "no hard links"
        uploads.publish_part(_part(folder, b"third"), folder, "ax.tgz")


def test_firmware_tasks_queue_one_at_a_time_with_progress(tmp_path: Path) -> None:
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    with (
        RegistryServer() as registry,
        GatedTarballs() as tarballs,
        robot_host(tmp_path / "data", registry, local_repo=empty) as robot,
    ):
        client = robot.client
        files = {n: publish_gated(registry, tarballs, firmware_package(tmp_path / "pkgs", n, "1.0.0")) for n in
                 ("fw-a", "fw-b")}  # fmt: skip
        client.refresh_app_store()
        client.wait_status("fw-b", "not_installed", firmware=True)
        tasks = {n: client.install_firmware_packages([n]).json()[n]["task_id"] for n in files}
        tarballs.wait_for_request(files["fw-a"])
        flashing = wait_until(  # the gate lets the first bytes through; the download reports them
            lambda: (p := client.wait_status("fw-a", "installing", firmware=True))["installing_progress"] > 0 and p,
            what="fw-a's download under way",
        )
        assert flashing["install_task_id"] == tasks["fw-a"] and flashing["installing_version"] == "1.0.0"
        assert 0 < flashing["installing_progress"] < 1
        waiting = client.wait_status("fw-b", "install_queueing", firmware=True)  # one flash at a time
        assert (waiting["install_task_id"], waiting["installing_progress"]) == (tasks["fw-b"], 0)
        for filename in files.values():
            tarballs.release(filename)
        for name in files:
            assert client.wait_status(name, "up_to_date", firmware=True)["current_version"] == "1.0.0"


def test_a_flashed_firmware_stays_listed_after_it_left_the_catalog(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLES / "demo-firmware", repo / "demo-firmware")
    with robot_host(tmp_path / "data", local_repo=repo) as robot:
        client = robot.client
        client.wait_task("install", client.install_firmware_packages(["demo-firmware"]).json()["demo-firmware"][
            "task_id"])  # fmt: skip
        flashed = {"name": "demo-firmware", "latest_version": "1.0.0", "current_version": "1.0.0",
                   "status": "up_to_date"}  # fmt: skip
        assert client.list_firmware_packages().json() == [flashed]

        shutil.rmtree(repo / "demo-firmware")
        shutil.copytree(SAMPLES / "notes", repo / "notes")  # shows when the refresh has happened
        client.refresh_app_store()
        client.wait_status("notes", "not_installed")
        assert client.list_firmware_packages().json() == [flashed]
        gone = client.install_firmware_packages(["demo-firmware"])
        assert gone.status_code == 400
        assert gone.json() == {"demo-firmware": {"error": "invalid module demo-firmware, skip..."}}
