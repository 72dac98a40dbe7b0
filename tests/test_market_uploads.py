"""Uploads through a real uvicorn server: a valid chart, a non-tarball, a too-large file, hostile tarballs."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_market_support import chart_tarball, market_host

pytestmark = pytest.mark.timeout(120)


def _hostile(member: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        manifest = json.dumps({"name": "evil", "version": "1.0.0", "bolt": {"main": "server.py"}}).encode()
        info = tarfile.TarInfo("package/package.json")
        info.size = len(manifest)
        tf.addfile(info, io.BytesIO(manifest))
        bad = tarfile.TarInfo(member)
        bad.type = kind
        bad.linkname = target
        payload = b"owned"
        bad.size = len(payload) if kind == tarfile.REGTYPE else 0
        tf.addfile(bad, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


def _upload(client: httpx.Client, filename: str, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/apps/upload", files={"chart": (filename, data, "application/gzip")}, data=fields)


def test_valid_chart_becomes_installable_and_can_be_deleted(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        hash_before = admin.get("/market/hash").json()["data"]["hash"]
        answer = _upload(admin, "uploaded-echo-2.0.0.tgz", chart_tarball(tmp_path))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["message"] == "App package uploaded and processed successfully"
        assert body["data"]["source"] == "upload" and body["data"]["user_id"] == "admin"
        assert body["data"]["app_info"]["app_simple_info"]["app_version"] == "2.0.0"
        assert admin.get("/market/hash").json()["data"]["hash"] != hash_before

        wanted = [{"appid": "uploaded-echo", "sourceDataName": "upload"}, {"appid": "nope", "sourceDataName": "upload"},
                  {"appid": "uploaded-echo", "sourceDataName": "no-such-source"}]
        found = admin.post("/apps", json={"apps": wanted}).json()["data"]
        assert found["total_count"] == 1 and found["not_found"] == wanted[1:]

        installed = admin.post("/apps/uploaded-echo/install",
                               json={"source": "upload", "app_name": "uploaded-echo", "version": "2.0.0", "sync": True})
        assert installed.status_code == 200, installed.text
        removed = admin.request("DELETE", "/apps/uploaded-echo", json={"sync": True})
        assert removed.status_code == 200, removed.text

        deleted = admin.request("DELETE", "/local-apps/delete", json={"app_name": "uploaded-echo",
                                                                      "app_version": "2.0.0"})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["data"]["source"] == "upload"
        assert admin.get("/market/hash").json()["data"]["hash"] == hash_before
        gone = admin.request("DELETE", "/local-apps/delete", json={"app_name": "uploaded-echo", "app_version": "2.0.0"})
        assert gone.status_code == 404 and gone.json()["success"] is False


def test_uploads_that_are_not_packages_are_refused(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        folder = Path(market.live.host.settings.data_dir) / "market" / "sources" / "upload"
        wrong_name = _upload(admin, "notes.txt", b"hello")
        assert wrong_name.status_code == 400 and ".tgz" in wrong_name.json()["message"]
        not_tar = _upload(admin, "fake.tgz", b"this is not a tarball at all")
        assert not_tar.status_code == 400 and not_tar.json()["success"] is False
        no_file = admin.post("/apps/upload", data={"source": "upload"}, files={"other": ("a.tgz", b"x")})
        assert no_file.status_code == 400
        not_multipart = admin.post("/apps/upload", content=b"raw", headers={"content-type": "application/gzip"})
        assert not_multipart.status_code == 400
        assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("member", "kind", "target"),
    [
        ("package/../../escaped.txt", tarfile.REGTYPE, ""),
        ("/tmp/absolute-market-test.txt", tarfile.REGTYPE, ""),
        ("package/link", tarfile.SYMTYPE, "../../../etc/passwd"),
        ("package/hard", tarfile.LNKTYPE, "package/package.json"),
        ("package/fifo", tarfile.FIFOTYPE, ""),
    ],
)
def test_hostile_tarballs_are_refused(tmp_path: Path, member: str, kind: bytes, target: str) -> None:
    with market_host(tmp_path) as market:
        data_dir = Path(market.live.host.settings.data_dir)
        answer = _upload(market.admin, "evil-1.0.0.tgz", _hostile(member, kind, target))
        assert answer.status_code == 400, answer.text
        assert "Invalid chart package" in answer.json()["message"]
        assert not (data_dir / "escaped.txt").exists() and not Path("/tmp/absolute-market-test.txt").exists()
        folder = data_dir / "market" / "sources" / "upload"
        assert list(folder.iterdir()) == []
        listed = market.admin.post("/apps", json={"apps": [{"appid": "evil"}]}).json()["data"]
        assert listed["total_count"] == 0


def test_too_large_upload_is_cut_off_while_streaming(tmp_path: Path) -> None:
    limit = 256 * 1024
    with market_host(tmp_path, max_upload_bytes=limit) as market:
        boundary = "market-test-boundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"chart\"; filename=\"big.tgz\"\r\n"
                "Content-Type: application/gzip\r\n\r\n").encode()

        def body() -> Iterator[bytes]:  # no Content-Length: the cap must be enforced while reading
            yield head
            for _ in range(64):
                yield b"\0" * 16384
            yield f"\r\n--{boundary}--\r\n".encode()

        answer = market.admin.post("/apps/upload", content=body(),
                                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert answer.status_code == 413, answer.text
        assert answer.json() == {"success": False, "message": f"The chart is larger than the limit of {limit} bytes"}
        folder = Path(market.live.host.settings.data_dir) / "market" / "sources" / "upload"
        assert list(folder.glob("*")) == []

        declared = market.admin.post("/apps/upload", files={"chart": ("big.tgz", b"\0" * (limit + 1))})
        assert declared.status_code == 413  # refused by the host before the plugin runs, in the Market's envelope
        assert declared.json() == {"success": False, "message": f"Request body is over the limit of {limit} bytes"}
        assert list(folder.glob("*")) == []


def test_too_large_json_bodies_get_the_market_envelope(tmp_path: Path) -> None:
    limit = 8192
    with market_host(tmp_path, max_body_bytes=limit) as market:
        padded = {"apps": [{"appid": "env-echo"}], "pad": "x" * limit}
        declared = market.admin.post("/apps", json=padded)
        assert declared.status_code == 413, declared.text
        assert declared.json() == {"success": False, "message": f"Request body is over the limit of {limit} bytes"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is enforced while the body is read
            data = json.dumps(padded).encode()
            for start in range(0, len(data), 1024):
                yield data[start:start + 1024]

        chunked = market.admin.post("/apps", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413, chunked.text
        assert chunked.json() == {"success": False, "message": f"Request body is over the limit of {limit} bytes"}

        small = market.admin.post("/apps", json={"apps": [{"appid": "env-echo"}]})
        assert small.status_code == 200 and small.json()["data"]["total_count"] == 1
