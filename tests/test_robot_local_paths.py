"""``install_local_file`` by absolute path, as the robot document's own example does it
(``{"filename": "/tmp/ax.2.6.4.pi64.tar.gz"}``): inside the configured folders (the
staging folder and the system temp folder unless configured), regular files only, no
link anywhere on the path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from bolt_robot.state import LOCAL_FILE_DIRS_ENV, local_file_dirs_from

from tests.robot_support import make_package, packed, robot_host

pytestmark = pytest.mark.timeout(120)


def _tarball(folder: Path, name: str = "ax.2.6.4.pi64.tar.gz", version: str = "2.6.4") -> Path:
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(packed(make_package(folder / "src", "ax", version))[0])
    return target


def test_the_documents_example_a_file_in_the_temp_folder_installs(tmp_path: Path) -> None:
    assert tmp_path.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    tarball = _tarball(tmp_path.resolve())
    with robot_host(tmp_path / "data") as robot:
        installed = robot.client.app_store_install_local_file(str(tarball))
        assert installed.status_code == 201, installed.text
        assert installed.json() == {"module_name": "ax", "version": "2.6.4"}
        assert robot.client.package("ax")["status"] == "up_to_date"
        assert tarball.is_file()  # the caller's file is read, never moved or removed
        assert list((tmp_path / "data" / "cache" / "local-files").iterdir()) == []  # the private copy is gone


def test_links_directories_and_other_folders_are_refused(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    tarball = _tarball(base / "real")
    (base / "linked-dir").symlink_to(base / "real")
    (base / "link.tar.gz").symlink_to(tarball)
    with robot_host(tmp_path / "data") as robot:
        for name in (
            str(base / "linked-dir" / tarball.name),  # a link in the middle of the path
            str(base / "link.tar.gz"),  # the file itself is a link
            str(base / "real"),  # a folder
            str(base / "real" / ".." / "real" / tarball.name),  # '..' is never accepted
            "/etc/hostname",  # outside the folders
            "relative/ax.tgz",  # relative paths only name files in the staging folder
        ):
            refused = robot.client.app_store_install_local_file(name)
            assert refused.status_code == 400, name
            assert set(refused.json()) == {"detail"} and "regular file" in refused.json()["detail"], name
        assert robot.client.package("ax") is None
        assert robot.client.list_install_tasks().json() == []


def test_the_folders_are_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drop = tmp_path.resolve() / "drop"
    inside = _tarball(drop)
    elsewhere = _tarball(tmp_path.resolve() / "elsewhere", version="2.6.5")
    monkeypatch.setenv(LOCAL_FILE_DIRS_ENV, str(drop))
    with robot_host(tmp_path / "data") as robot:
        refused = robot.client.app_store_install_local_file(str(elsewhere))
        assert refused.status_code == 400 and str(drop) in refused.json()["detail"]
        installed = robot.client.app_store_install_local_file(str(inside))
        assert installed.status_code == 201, installed.text
    with pytest.raises(ValueError, match=LOCAL_FILE_DIRS_ENV):
        local_file_dirs_from({LOCAL_FILE_DIRS_ENV: "relative/dir"}, tmp_path)
    defaults = local_file_dirs_from({}, tmp_path / "uploads")
    assert defaults == (tmp_path / "uploads", Path(tempfile.gettempdir()))
