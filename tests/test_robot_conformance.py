"""Conformance: the seed's curl calls, one to one and in the seed's order, with the seed's bodies.

The client (``RobotClient``) has one method per curl call, like the third-party
``AxbotClient``.  Every answer is checked against the seed's TypeScript types,
and where the seed shows a concrete example the same situation is set up and
the same body expected (task ids aside).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.registry_server import RegistryServer
from tests.robot_support import (
    PACKAGE_STATUSES,
    GatedTarballs,
    RobotClient,
    firmware_package,
    make_package,
    packed,
    publish_gated,
    robot_host,
)

pytestmark = pytest.mark.timeout(180)
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
OPTIONAL_FIELDS: dict[str, Any] = {
    "downloaded_versions": list,
    "downloading_version": str,
    "downloading_progress": (int, float),
    "download_task_id": int,
    "installing_version": str,
    "installing_progress": (int, float),
    "install_task_id": int,
    "install_failed_reason": str,
    "uninstall_task_id": int,
    "optional": bool,
}
TASK_FIELDS = {"id", "status", "module", "version", "create_time", "start_time", "end_time", "url"}


def check_package(package: dict[str, Any]) -> None:
    """``interface Package`` of the seed."""
    for key in ("name", "latest_version", "current_version"):
        assert isinstance(package[key], str), (key, package)
    assert package["status"] in PACKAGE_STATUSES, package
    for key, value in package.items():
        if key in ("name", "latest_version", "current_version", "status"):
            continue
        assert key in OPTIONAL_FIELDS, f"field {key} is not in the seed's Package type"
        assert isinstance(value, OPTIONAL_FIELDS[key]), key
        assert key == "optional" or not isinstance(value, bool), key
    for key in ("downloading_progress", "installing_progress"):
        if key in package:
            assert 0.0 <= package[key] <= 1.0
    assert all(isinstance(v, str) for v in package.get("downloaded_versions", []))


def check_packages(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200
    packages = response.json()
    assert isinstance(packages, list)
    for package in packages:
        check_package(package)
    return packages


def like(example: dict[str, Any], actual: dict[str, Any], ids: tuple[str, ...] = ()) -> None:
    """``actual`` carries every field of the seed's ``example`` with the same value (ids: any int)."""
    for key, value in example.items():
        if key in ids:
            assert isinstance(actual[key], int), key
        else:
            assert actual[key] == value, (key, actual)


def check_task_list(response: Any, base_url: str, group: str) -> list[dict[str, Any]]:
    assert response.status_code == 200
    tasks = response.json()
    assert [t["id"] for t in tasks] == sorted((t["id"] for t in tasks), reverse=True)  # newest first
    for task in tasks:
        assert set(task) == TASK_FIELDS
        assert task["status"] in {"queued", "running", "succeeded", "failed", "canceled"}
        assert TIME.match(task["create_time"])
        assert task["url"] == f"{base_url}/app_store/jobs/{group}/tasks/{task['id']}/log"
    return tasks


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def install_through_robot(client: RobotClient, name: str) -> None:
    client.wait_task("download", client.app_store_download_packages([name]).json()[name]["task_id"])
    client.wait_task("install", client.app_store_install_packages([name]).json()[name]["task_id"])


def test_the_seed_one_call_at_a_time(tmp_path: Path, registry) -> None:
    empty_repo = tmp_path / "empty-repo"
    empty_repo.mkdir()
    pkgs = tmp_path / "pkgs"
    with GatedTarballs() as tarballs, robot_host(tmp_path / "data", registry, local_repo=empty_repo) as robot:
        client = robot.client
        registry.publish_dir(make_package(pkgs, "ax", "2.4.1-pi64"))
        registry.publish_dir(make_package(pkgs, "iot", "1.0.4", optional=False))
        registry.publish_dir(make_package(pkgs, "package_manager", "0.3.0", optional=False))
        client.refresh_app_store()
        client.wait_status("package_manager", "not_installed")
        for name in ("ax", "iot", "package_manager"):
            install_through_robot(client, name)

        # --- List Packages: the seed's example, rebuilt
        iot_file = publish_gated(registry, tarballs, make_package(pkgs, "iot", "1.0.5", optional=False))
        registry.publish_dir(make_package(pkgs, "package_manager", "0.3.2", optional=False))
        client.refresh_app_store()
        client.wait_status("package_manager", "upgradable")
        client.wait_status("iot", "upgradable")
        iot_task = client.app_store_download_packages(["iot"]).json()["iot"]["task_id"]
        tarballs.wait_for_request(iot_file)
        client.wait_task("download", client.app_store_download_packages(["package_manager"]).json()[
            "package_manager"]["task_id"])  # fmt: skip
        with robot.capture.holding_app_lock("package_manager"):
            pm_task = client.app_store_install_packages(["package_manager"]).json()["package_manager"]["task_id"]
            client.wait_status("package_manager", "installing")
            listed = check_packages(client.list_app_store_packages())
            assert [p["name"] for p in listed] == ["ax", "iot", "package_manager"]
            ax, iot, pm = listed
            assert ax == {"name": "ax", "latest_version": "2.4.1-pi64", "current_version": "2.4.1-pi64",
                          "status": "up_to_date"}  # fmt: skip
            like({"name": "iot", "latest_version": "1.0.5", "current_version": "1.0.4", "status": "downloading",
                  "download_task_id": iot_task, "optional": False}, iot)  # fmt: skip
            like({"name": "package_manager", "latest_version": "0.3.2", "current_version": "0.3.0",
                  "status": "installing", "install_task_id": pm_task, "optional": False}, pm)  # fmt: skip
        tarballs.release(iot_file)
        client.wait_status("iot", "downloaded")
        client.wait_status("package_manager", "up_to_date")

        # --- Refresh App Store: asynchronous, the list changes afterwards
        registry.publish_dir(make_package(pkgs, "py_axbot", "1.1.6-opi64"))
        refreshed = client.refresh_app_store()
        assert refreshed.status_code == 200
        client.wait_status("py_axbot", "not_installed")

        # --- Download Packages: success (201) and failure (400) as in the seed
        downloaded = client.app_store_download_packages(["ax", "py_axbot"])
        assert downloaded.status_code == 201
        assert list(downloaded.json()) == ["py_axbot"]  # the seed's 201 body: {"py_axbot": {task_id, version}}
        like({"task_id": 16, "version": "1.1.6-opi64"}, downloaded.json()["py_axbot"], ids=("task_id",))
        skipped = json.loads(downloaded.headers["x-skipped-packages"])  # what was skipped, outside the body
        assert skipped == {"ax": "installed version(2.4.1-pi64) is already up to date"}
        client.wait_status("py_axbot", "downloaded")
        registry.publish_dir(make_package(pkgs, "iot", "master"), tag=None)
        assert robot.bolt("POST", "/api/apps", json={"name": "iot", "version": "master", "upgrade": True}).is_success
        failed = client.app_store_download_packages(["iot", "some_random_package"])
        assert failed.status_code == 400
        assert failed.json() == {
            "iot": "installed version(master) is already up to date",
            "some_random_package": "invalid module some_random_package, skip...",
        }

        # --- Install Packages: failure (400) and success (201) as in the seed
        registry.publish_dir(make_package(pkgs, "ax", "master-pi64"), tag=None)
        registry.publish_dir(make_package(pkgs, "ax", "2.4.2-pi64"))
        client.refresh_app_store()
        client.wait_latest("ax", "2.4.2-pi64")
        client.wait_task("download", client.app_store_download_packages(["ax"]).json()["ax"]["task_id"])
        branch_build = {"name": "ax", "version": "master-pi64", "upgrade": True}
        assert robot.bolt("POST", "/api/apps", json=branch_build).is_success
        refused = client.app_store_install_packages(["ax", "iot"])
        assert refused.status_code == 400
        assert refused.json() == {
            "ax": {"error": "installed version(master-pi64) is higher than downloaded version(2.4.2-pi64), skip..."},
            "iot": {"error": "installed version(master) is higher than downloaded version(1.0.5), skip..."},
        }
        registry.publish_dir(make_package(pkgs, "follow", "1.1.6-opi64"))
        client.refresh_app_store()
        client.wait_status("follow", "not_installed")
        client.wait_task("download", client.app_store_download_packages(["follow"]).json()["follow"]["task_id"])
        installed = client.app_store_install_packages(["follow"])
        assert installed.status_code == 201
        assert set(installed.json()) == {"follow"} and installed.json()["follow"]["version"] == "1.1.6-opi64"
        follow_install = installed.json()["follow"]["task_id"]
        client.wait_status("follow", "up_to_date")

        # --- Install Package from a Local File: the seed's own request, a file in the temp folder
        tarball, _ = packed(make_package(pkgs, "ax", "2.6.4"))
        in_tmp = tmp_path.resolve() / "ax.2.6.4.pi64.tar.gz"  # tmp_path lies in the system temp folder
        in_tmp.write_bytes(tarball)
        local = client.app_store_install_local_file(str(in_tmp))
        assert local.status_code == 201, local.text
        assert local.json() == {"module_name": "ax", "version": "2.6.4"}
        # and through the staging folder, for a client on another machine
        newer, _ = packed(make_package(pkgs, "ax", "2.6.5"))
        staged = client.app_store_upload_local_file(newer, "ax.2.6.5.pi64.tar.gz").json()["filename"]
        local = client.app_store_install_local_file(staged)
        assert local.status_code == 201
        assert local.json() == {"module_name": "ax", "version": "2.6.5"}

        # --- Uninstall Packages
        removed = client.app_store_uninstall_packages(["follow"])
        assert removed.status_code == 201 and list(removed.json()) == ["follow"]
        like({"task_id": 7, "version": "1.1.6-opi64"}, removed.json()["follow"], ids=("task_id",))
        client.wait_status("follow", "not_installed")

        # --- View Download and Installation Tasks
        downloads = check_task_list(client.list_download_tasks(), robot.url, "download")
        installs = check_task_list(client.list_install_tasks(), robot.url, "install")
        assert iot_task in [t["id"] for t in downloads]
        assert removed.json()["follow"]["task_id"] == installs[0]["id"]
        assert all(t["status"] == "succeeded" and TIME.match(t["end_time"]) for t in downloads)

        # --- Show Task Details (Log), whole and progressive
        whole = client.get_install_task_log(follow_install)
        assert whole.status_code == 200 and whole.headers["content-type"] == "text/plain; charset=utf-8"
        assert whole.headers["x-more-data"] == "false" and int(whole.headers["x-text-size"]) == len(whole.text)
        lines = whole.text.splitlines()
        assert lines[0] == f"id: {follow_install}" and re.match(r"^create time: \d{4}-", lines[1])
        assert lines[2] == "install task follow(1.1.6-opi64) added"
        assert re.match(r"^start time: \d{4}-", lines[3])
        assert lines[4:8] == [
            "install task follow(1.1.6-opi64) begin",
            "=== installing follow:1.1.6-opi64",
            "=== checking checksum",
            "=== extract",
        ]
        first_kb = client.get_install_task_log(follow_install, start=0, end=1024)
        assert first_kb.text == whole.text[:1024]
        head = client.get_download_task_log(iot_task, start=0, end=5)
        assert head.text == f"id: {iot_task}"[:5] and head.headers["x-more-data"] == "true"

        # --- Refresh Firmware Store (same URL, the seed shows {"status": 200})
        registry.publish_dir(firmware_package(pkgs, "bottom-sensor", "1.3.1"))
        assert client.refresh_app_store().json() == {"status": 200}
        client.wait_status("bottom-sensor", "not_installed", firmware=True)
        flash = client.install_firmware_packages(["bottom-sensor"]).json()["bottom-sensor"]["task_id"]
        client.wait_task("install", flash)
        registry.publish_dir(firmware_package(pkgs, "bottom-sensor", "1.4.3"))
        client.refresh_app_store()

        # --- Firmware Status: the seed's example
        client.wait_status("bottom-sensor", "upgradable", firmware=True)
        assert check_packages(client.list_firmware_packages()) == [
            {"name": "bottom-sensor", "latest_version": "1.4.3", "current_version": "1.3.1", "status": "upgradable"}
        ]

        # --- Firmware Installation: download and install in one step
        answer = client.install_firmware_packages(["bottom-sensor"])
        assert answer.status_code == 201
        like({"task_id": 12, "version": "1.4.3"}, answer.json()["bottom-sensor"], ids=("task_id",))
        done = client.wait_status("bottom-sensor", "up_to_date", firmware=True)
        assert done["current_version"] == "1.4.3"
        assert "bottom-sensor" not in [p["name"] for p in check_packages(client.list_app_store_packages())]
