"""``POST /api/apps/upload``: a package tarball as the raw body, installed like any other package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.extract import pack_directory
from bolt_host.testing import RunningHost, running_host

GZIP = {"Content-Type": "application/gzip"}


def tarball(tmp_path: Path, sample: str = "notes") -> bytes:
    return pack_directory(BUNDLED_LOCAL_REPO / sample, tmp_path / f"{sample}.tgz").read_bytes()


async def test_an_uploaded_tarball_is_installed(bolt: RunningHost, tmp_path: Path) -> None:
    data = tarball(tmp_path)
    answer = await bolt.admin.post("/api/apps/upload?filename=../../notes.tgz&system=true", content=data, headers=GZIP)
    assert answer.status_code == 201, answer.text
    app = answer.json()["body"]
    assert (app["name"], app["system"], app["source"]) == ("notes", True, {"type": "upload", "filename": "notes.tgz"})
    assert (Path(app["folder"]) / "package.json").is_file()
    assert list((bolt.host.apps.apps_dir).glob(".staging-*")) == []  # the upload is not kept

    again = await bolt.admin.post("/api/apps/upload", content=data, headers=GZIP)
    assert again.status_code == 409 and again.json()["code"] == errors.APP_NAME_TAKEN
    upgraded = await bolt.admin.post("/api/apps/upload?upgrade=true", content=data, headers=GZIP)
    assert upgraded.status_code == 201 and upgraded.json()["body"]["system"] is True  # kept from before


@pytest.mark.parametrize(
    ("query", "content", "headers", "status", "words"),
    [
        ("", b"", GZIP, 400, "upload is empty"),
        ("", b"\x1f\x8b not a tarball", GZIP, 400, "Unsafe or broken package"),
        ("?force=1", b"x", GZIP, 400, "Unknown fields: force"),
        ("?upgrade=maybe", b"x", GZIP, 400, "'upgrade' must be true or false"),
        ("", b"--b\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, 400, "raw body"),
    ],
)
async def test_bad_uploads_are_refused_clearly_and_change_nothing(
    bolt: RunningHost, query: str, content: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    answer = await bolt.admin.post(f"/api/apps/upload{query}", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert bolt.host.apps.list() == []
    assert list(bolt.host.apps.apps_dir.glob(".staging-*")) == []


async def test_uploads_are_capped_and_need_an_installer(tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", max_upload_bytes=4096) as bolt:
        big = await bolt.admin.post("/api/apps/upload", content=b"\0" * 8192, headers=GZIP)
        assert big.status_code == 413 and big.json()["code"] == errors.PAYLOAD_TOO_LARGE

        async def chunks():
            for _ in range(4):
                yield b"\0" * 2048  # no Content-Length: the cap is counted while the body streams

        streamed = await bolt.admin.post("/api/apps/upload", content=chunks(), headers=GZIP)
        assert streamed.status_code == 413
        anonymous = await bolt.client.post("/api/apps/upload", content=b"\x1f\x8b", headers=GZIP)
        assert anonymous.status_code == 401
        assert bolt.host.apps.list() == []
        assert list(bolt.host.apps.apps_dir.glob(".staging-*")) == []


async def test_an_install_never_rewrites_the_database_unchanged(bolt: RunningHost, tmp_path: Path) -> None:
    """Each fsynced whole-file write of ``db.json`` during an install changes it: the new app's
    record took two before (TinyDB's upsert of a new name: an update that matched nothing, written
    as it was, then the insert), one write more per install for every device of a fleet."""
    await bolt.host.db.flush()
    storage: Any = bolt.host.db._db.storage
    written = [storage.path.read_bytes()]
    write_encoded = storage.write_encoded

    def observed(version: int, encoded: bytes) -> None:
        write_encoded(version, encoded)
        written.append(encoded)

    storage.write_encoded = observed
    tarball = pack_directory(BUNDLED_LOCAL_REPO / "notes", tmp_path / "notes.tgz")
    app = await bolt.host.apps.install_tarball(tarball, {"type": "upload", "filename": "notes.tgz"})
    await bolt.host.db.flush()
    assert app["name"] == "notes" and bolt.host.apps.get("notes") is not None
    assert len(written) > 1
    unchanged = [i for i in range(1, len(written)) if written[i] == written[i - 1]]
    assert unchanged == []
