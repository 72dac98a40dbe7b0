"""The robot App Store backend through a real uvicorn server and a real registry server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bolt_robot.jobs import invalid
from bolt_robot.routes import SKIPPED_COUNT_HEADER, SKIPPED_HEADER, SKIPPED_HEADER_MAX, skipped_headers

from tests.helpers import wait_until
from tests.registry_server import RegistryServer
from tests.robot_support import GatedTarballs, RobotHost, make_package, publish_gated, robot_host

pytestmark = pytest.mark.timeout(120)
TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def tarballs() -> Iterator[GatedTarballs]:
    with GatedTarballs() as server:
        yield server


@pytest.fixture
def robot(tmp_path: Path, registry: RegistryServer) -> Iterator[RobotHost]:
    with robot_host(tmp_path / "data", registry) as running:
        yield running


def publish_and_download(client, registry: RegistryServer, folder: Path) -> str:
    """Publish ``folder``, wait until the store lists it, download it through the robot; its name."""
    name = json.loads((folder / "package.json").read_text())["name"]
    registry.publish_dir(folder)
    client.refresh_app_store()
    client.wait_status(name, "not_installed", "upgradable")
    client.wait_task("download", client.app_store_download_packages([name]).json()[name]["task_id"])
    return name


def test_full_cycle_download_install_upgrade_uninstall(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    registry.publish_dir(make_package(tmp_path, "cycle", "1.0.0"))
    assert client.refresh_app_store().json() == {"status": 200}
    listed = client.wait_status("cycle", "not_installed")
    assert listed == {"name": "cycle", "latest_version": "1.0.0", "current_version": "", "status": "not_installed"}

    queued = client.app_store_download_packages(["cycle"])
    assert queued.status_code == 201
    download_id = queued.json()["cycle"]["task_id"]
    assert queued.json() == {"cycle": {"task_id": download_id, "version": "1.0.0"}}
    downloaded = client.wait_status("cycle", "downloaded")
    assert downloaded["downloaded_versions"] == ["1.0.0"] and downloaded["current_version"] == ""

    installing = client.app_store_install_packages(["cycle"])
    assert installing.status_code == 201
    install_id = installing.json()["cycle"]["task_id"]
    assert install_id > download_id and installing.json()["cycle"]["version"] == "1.0.0"
    up = client.wait_status("cycle", "up_to_date")
    assert up == {"name": "cycle", "latest_version": "1.0.0", "current_version": "1.0.0", "status": "up_to_date"}
    assert robot.bolt("GET", "/api/apps/cycle").json()["body"]["version"] == "1.0.0"

    registry.publish_dir(make_package(tmp_path, "cycle", "1.1.0"))
    assert client.refresh_app_store().status_code == 200
    upgradable = client.wait_status("cycle", "upgradable")
    assert (upgradable["latest_version"], upgradable["current_version"]) == ("1.1.0", "1.0.0")

    second = client.app_store_download_packages(["cycle"]).json()["cycle"]
    assert second["version"] == "1.1.0"
    assert client.wait_status("cycle", "downloaded")["downloaded_versions"] == ["1.1.0"]
    upgrade = client.app_store_install_packages(["cycle"]).json()["cycle"]
    done = client.wait_status("cycle", "up_to_date")
    assert done["current_version"] == "1.1.0" and "downloaded_versions" not in done

    removal = client.app_store_uninstall_packages(["cycle"])
    assert removal.status_code == 201 and removal.json()["cycle"]["version"] == "1.1.0"
    gone = client.wait_status("cycle", "not_installed")
    assert gone["current_version"] == "" and gone["latest_version"] == "1.1.0"
    assert robot.bolt("GET", "/api/apps/cycle").json()["code"] == 403  # Bolt: app not found

    downloads = client.list_download_tasks().json()
    assert [t["id"] for t in downloads][:2] == [second["task_id"], download_id]
    first = downloads[1]
    assert set(first) == {"id", "status", "module", "version", "create_time", "start_time", "end_time", "url"}
    assert first["status"] == "succeeded" and first["module"] == "cycle" and re.fullmatch(TIME, first["end_time"])
    assert first["url"] == f"{robot.url}/app_store/jobs/download/tasks/{download_id}/log"
    installs = [t["id"] for t in client.list_install_tasks().json()]
    assert installs[:3] == [removal.json()["cycle"]["task_id"], upgrade["task_id"], install_id]

    log = client.log_text("install", install_id).splitlines()
    assert log[:3] == [f"id: {install_id}", log[1], "install task cycle(1.0.0) added"]
    assert re.fullmatch(rf"create time: {TIME}", log[1])
    assert "install task cycle(1.0.0) begin" in log and "=== installing cycle:1.0.0" in log
    assert log.index("=== checking checksum") < log.index("=== extract") and log[-1].endswith("succeeded")
    assert "=== checking checksum" in client.log_text("download", download_id)


def test_download_messages_and_partial_success(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    registry.publish_dir(make_package(tmp_path, "iot", "1.0.5"))
    registry.publish_dir(make_package(tmp_path, "iot", "master"), tag=None)
    registry.publish_dir(make_package(tmp_path, "py_axbot", "1.1.6-opi64"))
    client.refresh_app_store()
    client.wait_status("py_axbot", "not_installed")
    installed = robot.bolt("POST", "/api/apps", json={"name": "iot", "version": "master"})
    assert installed.status_code == 201, installed.text

    refused = client.app_store_download_packages(["iot", "some_random_package"])
    assert refused.status_code == 400
    assert refused.json() == {
        "iot": "installed version(master) is already up to date",
        "some_random_package": "invalid module some_random_package, skip...",
    }
    partial = client.app_store_download_packages(["py_axbot", "iot"])
    assert partial.status_code == 201
    body = partial.json()
    assert set(body) == {"py_axbot"}  # only task objects, as in the seed's 201 example
    assert body["py_axbot"]["version"] == "1.1.6-opi64" and isinstance(body["py_axbot"]["task_id"], int)
    skipped = json.loads(partial.headers["x-skipped-packages"])
    assert skipped == {"iot": "installed version(master) is already up to date"}
    assert partial.headers["x-skipped-count"] == "1"
    client.wait_status("py_axbot", "downloaded")
    assert client.package("iot")["status"] == "up_to_date"  # master ranks above every release

    for bad in ({"packages": "iot"}, {"packages": []}, {"nope": 1}):
        answer = client.http.post("/app_store/services/download_packages", json=bad)
        assert answer.status_code == 400 and "detail" in answer.json()
    assert client.http.post("/app_store/services/download_packages", content=b"{not json").status_code == 400


def test_install_messages(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    registry.publish_dir(make_package(tmp_path, "ax", "2.4.1-pi64"))
    client.refresh_app_store()
    client.wait_status("ax", "not_installed")

    nothing = client.app_store_install_packages(["ax", "ghost"])
    assert nothing.status_code == 400
    assert nothing.json()["ghost"] == {"error": "invalid module ghost, skip..."}
    assert "download it first" in nothing.json()["ax"]["error"]

    task = client.app_store_download_packages(["ax"]).json()["ax"]["task_id"]
    client.wait_task("download", task)
    registry.publish_dir(make_package(tmp_path, "ax", "master-pi64"), tag=None)
    assert robot.bolt("POST", "/api/apps", json={"name": "ax", "version": "master-pi64"}).status_code == 201
    higher = client.app_store_install_packages(["ax"])
    assert higher.status_code == 400
    assert higher.json() == {
        "ax": {"error": "installed version(master-pi64) is higher than downloaded version(2.4.1-pi64), skip..."}
    }


def test_tampered_tarball_fails_the_download_and_a_retry_recovers(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    folder = make_package(tmp_path, "tampered", "1.0.0")
    registry.publish_dir(folder, tamper=True)
    client.refresh_app_store()
    client.wait_status("tampered", "not_installed")
    task_id = client.app_store_download_packages(["tampered"]).json()["tampered"]["task_id"]
    failed = client.wait_status("tampered", "download_failed")
    assert failed["download_task_id"] == task_id and "downloaded_versions" not in failed
    log = client.log_text("download", task_id)
    assert "does not match" in log and log.splitlines()[-1].startswith("download task tampered(1.0.0) failed: ")
    assert client.wait_task("download", task_id)["status"] == "failed"

    registry.publish_dir(folder)  # the registry serves the right bytes again
    retry = client.app_store_download_packages(["tampered"]).json()["tampered"]["task_id"]
    assert retry != task_id
    assert client.wait_status("tampered", "downloaded")["downloaded_versions"] == ["1.0.0"]


def test_failing_install_reports_its_reason_and_can_be_retried(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    registry.publish_dir(make_package(tmp_path, "broken", "1.0.0", restart="sometimes"))
    client.refresh_app_store()
    client.wait_status("broken", "not_installed")
    client.wait_task("download", client.app_store_download_packages(["broken"]).json()["broken"]["task_id"])

    first = client.app_store_install_packages(["broken"]).json()["broken"]["task_id"]
    failed = client.wait_status("broken", "install_failed")
    assert failed["install_task_id"] == first and "bolt.restart" in failed["install_failed_reason"]
    assert failed["downloaded_versions"] == ["1.0.0"] and failed["current_version"] == ""
    assert "failed: bolt.restart" in client.log_text("install", first)

    retry = client.app_store_install_packages(["broken"]).json()["broken"]["task_id"]
    assert retry > first
    again = client.wait_status("broken", "install_failed")
    assert again["install_task_id"] == retry

    registry.publish_dir(make_package(tmp_path, "broken", "1.0.1"))
    client.refresh_app_store()
    assert client.wait_latest("broken", "1.0.1")["status"] == "install_failed"  # the last outcome until the user acts
    client.wait_task("download", client.app_store_download_packages(["broken"]).json()["broken"]["task_id"])
    client.app_store_install_packages(["broken"])
    assert client.wait_status("broken", "up_to_date")["current_version"] == "1.0.1"


def test_a_tarball_changed_in_the_cache_fails_the_install_checksum(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    publish_and_download(client, registry, make_package(tmp_path, "cached", "1.0.0"))
    tarball = next((tmp_path / "data" / "cache").glob("cached@1.0.0.tgz"))
    tarball.write_bytes(tarball.read_bytes() + b"\0")

    task_id = client.app_store_install_packages(["cached"]).json()["cached"]["task_id"]
    failed = client.wait_status("cached", "install_failed")
    assert "checksum mismatch" in failed["install_failed_reason"]
    log = client.log_text("install", task_id).splitlines()
    assert "=== checking checksum" in log and "=== extract" not in log


def test_concurrent_requests_for_one_package_make_one_task(tmp_path: Path, registry, tarballs, robot) -> None:
    client = robot.client
    filename = publish_gated(registry, tarballs, make_package(tmp_path, "busy", "1.0.0"))
    client.refresh_app_store()
    client.wait_status("busy", "not_installed")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.app_store_download_packages(["busy"]), range(8)))
    assert {a.status_code for a in answers} == {201}
    task_ids = {a.json()["busy"]["task_id"] for a in answers}
    assert len(task_ids) == 1
    tarballs.wait_for_request(filename)
    downloading = wait_until(  # the gate lets the first bytes through; the download reports them
        lambda: (p := client.wait_status("busy", "downloading"))["downloading_progress"] > 0 and p,
        what="busy's download under way",
    )
    assert downloading["download_task_id"] in task_ids and downloading["downloading_version"] == "1.0.0"
    assert 0 < downloading["downloading_progress"] < 1
    tarballs.release(filename)
    client.wait_status("busy", "downloaded")
    busy_tasks = [t for t in client.list_download_tasks().json() if t["module"] == "busy"]
    assert len(busy_tasks) == 1


def test_the_log_can_be_read_progressively_while_the_task_runs(tmp_path: Path, registry, tarballs, robot) -> None:
    client = robot.client
    filename = publish_gated(registry, tarballs, make_package(tmp_path, "slow", "1.0.0"))
    client.refresh_app_store()
    client.wait_status("slow", "not_installed")
    task_id = client.app_store_download_packages(["slow"]).json()["slow"]["task_id"]
    tarballs.wait_for_request(filename)
    client.wait_status("slow", "downloading")

    whole = client.get_download_task_log(task_id)
    assert whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert whole.headers["x-more-data"] == "true"  # still running: more will come
    size = int(whole.headers["x-text-size"])
    assert size == len(whole.text) and whole.text.startswith(f"id: {task_id}\ncreate time: ")
    assert "=== downloading slow:1.0.0" in whole.text and "succeeded" not in whole.text

    head = client.get_download_task_log(task_id, start=0, end=10)
    assert head.text == whole.text[:10] and head.headers["x-more-data"] == "true"
    assert head.headers["x-text-size"] == str(size)
    middle = client.get_download_task_log(task_id, start=5, end=20)
    assert middle.text == whole.text[5:20]
    assert client.get_download_task_log(task_id, start=size).text == ""

    tarballs.release(filename)
    client.wait_task("download", task_id)
    rest = client.get_download_task_log(task_id, start=size)
    assert rest.headers["x-more-data"] == "false" and int(rest.headers["x-text-size"]) > size
    assert rest.text.endswith("download task slow(1.0.0) succeeded\n")
    full = client.get_download_task_log(task_id).text
    assert full == whole.text + rest.text
    # older clients: end=0 meant "to the end"; POST with a JSON body; a Range header
    assert client.http.get(f"/app_store/jobs/download/tasks/{task_id}/log?start=3&end=0").text == full[3:]
    posted = client.http.post(f"/app_store/jobs/download/tasks/{task_id}/log", json={"start": 0, "end": 7})
    assert posted.text == full[:7]
    ranged = client.http.get(f"/app_store/jobs/download/tasks/{task_id}/log", headers={"Range": "2-9"})
    assert ranged.text == full[2:9]

    assert client.get_install_task_log(task_id).status_code == 404  # a download task is not an install task
    assert client.get_download_task_log(99999).status_code == 404
    assert client.http.get(f"/app_store/jobs/download/tasks/{task_id}/log?start=x").status_code == 400
    assert client.http.get("/app_store/jobs/other/tasks").status_code == 400


def test_installing_a_running_app_upgrades_and_restarts_it(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    sample = Path(__file__).resolve().parent.parent / "node_modules_sample" / "hello-web"
    registry.publish_dir(sample)
    client.refresh_app_store()
    client.wait_status("hello-web", "not_installed")
    client.wait_task("download", client.app_store_download_packages(["hello-web"]).json()["hello-web"]["task_id"])
    client.app_store_install_packages(["hello-web"])
    client.wait_status("hello-web", "up_to_date")
    started = robot.bolt("POST", "/api/apps/start", json={"name": "hello-web"})
    assert started.status_code == 200, started.text
    old_pid = started.json()["body"]["pid"]

    registry.publish_dir(sample, version="1.0.1")
    client.refresh_app_store()
    client.wait_status("hello-web", "upgradable")
    client.wait_task("download", client.app_store_download_packages(["hello-web"]).json()["hello-web"]["task_id"])
    task_id = client.app_store_install_packages(["hello-web"]).json()["hello-web"]["task_id"]
    assert client.wait_task("install", task_id)["status"] == "succeeded", client.log_text("install", task_id)
    assert client.package("hello-web")["current_version"] == "1.0.1"
    live = {c["name"]: c for c in robot.bolt("GET", "/api/apps/@live").json()["body"]}
    assert live["hello-web"]["status"] == "running" and live["hello-web"]["pid"] != old_pid
    assert "was running: restarted with version 1.0.1" in client.log_text("install", task_id)
    robot.bolt("POST", "/api/apps/stop", json={"name": "hello-web"})


def test_an_install_done_another_way_leaves_no_stale_download(tmp_path: Path, registry, robot) -> None:
    client = robot.client
    publish_and_download(client, registry, make_package(tmp_path, "stale", "1.0.0"))
    assert client.package("stale")["downloaded_versions"] == ["1.0.0"]

    installed = robot.bolt("POST", "/api/apps", json={"name": "stale"})  # the Bolt API, not the robot's
    assert installed.status_code == 201, installed.text
    assert client.package("stale") == {
        "name": "stale", "latest_version": "1.0.0", "current_version": "1.0.0", "status": "up_to_date",
    }  # fmt: skip
    refused = client.app_store_install_packages(["stale"])
    assert refused.status_code == 400
    assert refused.json() == {"stale": {"error": "installed version(1.0.0) is already up to date, skip..."}}

    publish_and_download(client, registry, make_package(tmp_path, "stale", "1.1.0"))
    newer = client.wait_status("stale", "downloaded")
    assert newer["downloaded_versions"] == ["1.1.0"] and newer["current_version"] == "1.0.0"


def test_tasks_are_canceled_through_the_cancel_extension(tmp_path: Path, registry, tarballs, robot) -> None:
    client = robot.client
    files = {n: publish_gated(registry, tarballs, make_package(tmp_path, n, "1.0.0")) for n in ("c1", "c2", "c3")}
    client.refresh_app_store()
    client.wait_status("c3", "not_installed")
    ids = {n: client.app_store_download_packages([n]).json()[n]["task_id"] for n in files}
    tarballs.wait_for_request(files["c1"])
    tarballs.wait_for_request(files["c2"])
    client.wait_status("c3", "download_queueing")

    def cancel(group: str, task_id: object):
        return client.http.post(f"/app_store/jobs/{group}/tasks/{task_id}/cancel")

    queued = cancel("download", ids["c3"])
    assert queued.status_code == 201
    assert set(queued.json()) == {"id", "status", "module", "version", "create_time", "start_time", "end_time"}
    assert (queued.json()["id"], queued.json()["status"], queued.json()["start_time"]) == (ids["c3"], "canceled", None)
    assert client.package("c3")["status"] == "not_installed"  # a canceled task is not a failure
    assert "=== canceled before it started" in client.log_text("download", ids["c3"])

    running = cancel("download", ids["c1"])
    assert running.status_code == 201 and running.json()["status"] == "running"  # it stops at its next chunk
    tarballs.release(files["c1"])
    assert client.wait_task("download", ids["c1"])["status"] == "canceled"
    stopped = client.package("c1")
    assert stopped["status"] == "not_installed" and "downloaded_versions" not in stopped
    assert "=== cancel requested (canceled on request)" in client.log_text("download", ids["c1"])

    tarballs.release(files["c2"])
    client.wait_status("c2", "downloaded")
    finished = cancel("download", ids["c2"])
    assert finished.status_code == 201 and finished.json()["status"] == "succeeded"  # nothing left to cancel
    for group, task_id in (("install", ids["c2"]), ("download", 99999), ("download", "abc")):
        missing = cancel(group, task_id)
        assert missing.status_code == 404 and missing.json() == {"detail": "task not found"}
    assert cancel("other", ids["c2"]).status_code == 400


def test_the_skipped_header_stays_small_and_counts_everything() -> None:
    skipped = {f"module-{n:04d}": invalid(f"module-{n:04d}") for n in range(1000)}
    headers = skipped_headers(skipped)
    shown = json.loads(headers[SKIPPED_HEADER])
    assert len(headers[SKIPPED_HEADER]) <= SKIPPED_HEADER_MAX and headers[SKIPPED_COUNT_HEADER] == "1000"
    assert 0 < len(shown) < 1000 and list(shown) == list(skipped)[: len(shown)]  # the first ones, in order
    assert shown["module-0000"] == "invalid module module-0000, skip..."
    assert skipped_headers({}) == {}
    assert json.loads(skipped_headers({"ghost\\n": "x"})[SKIPPED_HEADER]) == {"ghost\\n": "x"}  # one header line
