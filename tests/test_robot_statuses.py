"""Every PackageStatus of the seed is reached through the API, and access is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.robot_support import (
    ADMIN,
    PACKAGE_STATUSES,
    GatedTarballs,
    RobotClient,
    make_package,
    publish_gated,
    robot_host,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def test_every_package_status_is_reachable(tmp_path: Path, registry) -> None:
    seen: set[str] = set()
    with GatedTarballs() as tarballs, robot_host(tmp_path / "data", registry) as robot:
        client = robot.client

        def expect(name: str, *statuses: str) -> dict:
            package = client.wait_status(name, *statuses)
            seen.add(package["status"])
            return package

        gated = {n: publish_gated(registry, tarballs, make_package(tmp_path, n, "1.0.0")) for n in ("q1", "q2", "q3")}
        registry.publish_dir(make_package(tmp_path, "tampered", "1.0.0"), tamper=True)
        registry.publish_dir(make_package(tmp_path, "broken", "1.0.0", restart="sometimes"))
        client.refresh_app_store()
        for name in ("q1", "q2", "q3", "tampered", "broken"):
            expect(name, "not_installed")

        # downloads: two run at once (the download limit), the third waits
        tasks = {n: client.app_store_download_packages([n]).json()[n]["task_id"] for n in ("q1", "q2", "q3")}
        tarballs.wait_for_request(gated["q1"])
        tarballs.wait_for_request(gated["q2"])
        assert expect("q1", "downloading")["download_task_id"] == tasks["q1"]
        expect("q2", "downloading")
        queued = expect("q3", "download_queueing")
        assert queued["download_task_id"] == tasks["q3"] and queued["downloading_progress"] == 0
        for filename in gated.values():
            tarballs.release(filename)
        for name in ("q1", "q2", "q3"):
            assert expect(name, "downloaded")["downloaded_versions"] == ["1.0.0"]

        # installs: one at a time; q1 waits inside its task while the test holds q1's app lock
        with robot.capture.holding_app_lock("q1"):
            install_q1 = client.app_store_install_packages(["q1"]).json()["q1"]["task_id"]
            expect("q1", "installing")
            installing = wait_until(  # past its checksum, the task waits at the app lock the test holds
                lambda: (p := client.package("q1"))["installing_progress"] > 0 and p, what="q1's install under way"
            )
            assert installing["status"] == "installing" and installing["install_task_id"] == install_q1
            assert installing["installing_version"] == "1.0.0" and 0 < installing["installing_progress"] < 1
            assert client.package("q2")["status"] == "downloaded"  # q1's install does not touch q2
            client.app_store_install_packages(["q2"])
            assert expect("q2", "install_queueing")["installing_progress"] == 0
        expect("q1", "up_to_date")
        expect("q2", "up_to_date")

        # uninstalls: q1 waits on its lock, q2 is queued and removed behind its back, so its task fails
        with robot.capture.holding_app_lock("q1"):
            removal = client.app_store_uninstall_packages(["q1"]).json()["q1"]["task_id"]
            assert expect("q1", "uninstalling")["uninstall_task_id"] == removal
            second = client.app_store_uninstall_packages(["q2"]).json()["q2"]["task_id"]
            assert expect("q2", "uninstall_queueing")["uninstall_task_id"] == second
            assert robot.bolt("DELETE", "/api/apps/q2").status_code == 200
        expect("q1", "not_installed")
        failed = expect("q2", "uninstall_failed")
        assert failed["uninstall_task_id"] == second
        assert "no longer installed" in client.log_text("install", second)

        # failures, and an upgrade becoming available
        client.app_store_download_packages(["tampered", "broken", "q3"])
        expect("tampered", "download_failed")
        expect("broken", "downloaded")
        client.app_store_install_packages(["broken", "q3"])
        assert "bolt.restart" in expect("broken", "install_failed")["install_failed_reason"]
        expect("q3", "up_to_date")
        registry.publish_dir(make_package(tmp_path, "q3", "1.1.0"))
        client.refresh_app_store()
        expect("q3", "upgradable")

    assert seen == PACKAGE_STATUSES


def test_access_needs_the_admin_or_the_robot_secret(tmp_path: Path, registry, monkeypatch) -> None:
    monkeypatch.setenv("BOLT_ROBOT_SECRET", "s3cret-for-tests")
    with robot_host(tmp_path / "data", registry) as robot:
        anonymous = RobotClient(robot.url, auth=None)
        with_secret = RobotClient(robot.url, auth=None, headers={"Secret": "s3cret-for-tests"})
        wrong_secret = RobotClient(robot.url, auth=ADMIN, headers={"Secret": "wrong"})
        created = robot.bolt("POST", "/api/users", json={"name": "viewer", "password": "viewer-password-1"})
        assert created.status_code == 201, created.text
        viewer = RobotClient(robot.url, auth=("viewer", "viewer-password-1"))
        try:
            refused = anonymous.list_app_store_packages()
            assert refused.status_code == 401 and "detail" in refused.json()
            assert anonymous.app_store_download_packages(["notes"]).status_code == 401
            assert anonymous.get_download_task_log(1).status_code == 401
            assert with_secret.list_app_store_packages().status_code == 200
            assert with_secret.app_store_download_packages(["notes"]).status_code == 201
            assert wrong_secret.list_app_store_packages().status_code == 401  # a wrong secret never falls back
            assert robot.client.list_app_store_packages().status_code == 200  # the admin, no secret
            for call in (  # a user without the admin role may neither read nor change anything
                viewer.list_app_store_packages,
                viewer.list_firmware_packages,
                viewer.list_download_tasks,
                viewer.list_install_tasks,
                lambda: viewer.get_download_task_log(1),
                lambda: viewer.app_store_download_packages(["notes"]),
                viewer.refresh_app_store,
            ):
                refused = call()
                assert refused.status_code == 403 and "detail" in refused.json(), refused.text
        finally:
            for client in (anonymous, with_secret, wrong_secret, viewer):
                client.close()


def test_without_the_secret_setting_a_secret_header_grants_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BOLT_ROBOT_SECRET", raising=False)
    with robot_host(tmp_path / "data") as robot:
        response = httpx.get(f"{robot.url}/app_store/packages", headers={"Secret": ""})
        assert response.status_code == 401
        response = httpx.get(f"{robot.url}/app_store/packages", headers={"Secret": "anything"})
        assert response.status_code == 401  # and no trust by source address: this came from 127.0.0.1
        login = httpx.post(f"{robot.url}/api/users/login", json={"name": ADMIN[0], "password": ADMIN[1]})
        cookies = login.cookies
        assert httpx.get(f"{robot.url}/app_store/packages", cookies=cookies).status_code == 200
        no_csrf = httpx.post(f"{robot.url}/app_store/services/refresh_store", cookies=cookies,
                             headers={"Sec-Fetch-Site": "same-site"})
        assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["detail"]
