"""Folder trees deeper than Python's recursion limit and longer than PATH_MAX.

An app can write such a tree into its folder (or one installed before extraction capped
nesting can hold one): deleting, reinstalling and booting must still work, and boot
recovery never brings back a folder the host holds no record for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bolt_host.services.trees import remove_tree
from bolt_host.testing import running_host

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _no_deep_leftovers(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of old temp dirs uses shutil.rmtree, which these trees defeat."""
    yield
    remove_tree(tmp_path, ignore_errors=True)


def _nest(root: Path, depth: int, part: str = "a") -> None:
    """``depth`` nested folders below ``root``, made through folder handles (no long paths)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(part, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as leaf:
            leaf.write("deep")
    finally:
        os.close(fd)


def _make_app(repo: Path, name: str, version: str = "1.0.0") -> None:
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version}))


def test_remove_tree_removes_any_depth_and_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    tree = tmp_path / "tree"
    tree.mkdir()
    _nest(tree, 1_500)  # deeper than the recursion limit
    (tree / "wide").mkdir()
    _nest(tree / "wide", 40, part="w" * 250)  # 10,000 bytes of path: past PATH_MAX
    (tree / "link").symlink_to(outside, target_is_directory=True)
    (tree / "wide" / ("w" * 250) / "link-file").symlink_to(outside / "keep.txt")

    remove_tree(tree)

    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "kept"
    remove_tree(tree)  # a missing tree is no error


async def test_an_app_holding_a_very_deep_tree_is_deleted_and_reinstalled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _make_app(repo, "deep")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        installed = await bolt.admin.post("/api/apps/local", json={"path": "deep"})
        assert installed.status_code == 201, installed.text
        folder = Path(installed.json()["body"]["folder"])
        _nest(folder, 1_100)  # what the app wrote into its folder

        again = await bolt.admin.post("/api/apps/local", json={"path": "deep", "upgrade": True})
        assert again.status_code == 201, again.text  # the old copy moved aside and removed
        _nest(folder, 1_100)

        deleted = await bolt.admin.request("DELETE", "/api/apps/deep", json={"deleteSourceFolder": True})
        assert deleted.status_code == 200, deleted.text
        assert (await bolt.admin.get("/api/apps/deep")).status_code == 404
        assert not folder.exists()
        assert sorted(p.name for p in bolt.host.apps.apps_dir.iterdir()) == []

        reinstalled = await bolt.admin.post("/api/apps/local", json={"path": "deep"})
        assert reinstalled.status_code == 201, reinstalled.text


async def test_boot_never_resurrects_a_folder_without_a_record(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _make_app(repo, "kept")
    data = tmp_path / "data"
    async with running_host(data, local_repo=repo) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "kept"})).status_code == 201
    apps_dir, public_dir = data / "apps", data / "public"
    (apps_dir / "kept").rename(apps_dir / ".old-kept-ab_cd123")  # a swap cut off: put back
    _make_app(apps_dir, ".old-ghost-x1y2z3w4")  # a removal cut off: not recorded, must go
    _nest(apps_dir / ".old-ghost-x1y2z3w4", 1_100)
    public_dir.mkdir(exist_ok=True)
    (public_dir / ".old-ghost-q1w2e3r4").mkdir()

    async with running_host(data, local_repo=repo) as bolt:
        assert (await bolt.admin.get("/api/apps/ghost")).status_code == 404
        assert (await bolt.admin.get("/api/apps/kept")).status_code == 200
    assert sorted(p.name for p in apps_dir.iterdir()) == ["kept"]
    assert list(public_dir.iterdir()) == []
