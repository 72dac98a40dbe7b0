"""RegistryClient against a real npm-protocol registry (tests/registry_server.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services.extract import ExtractError, pack_directory, safe_extract
from bolt_host.services.registry import RegistryClient, RegistryError, valid_package_name
from tests.registry_server import RegistryServer

MAX_BYTES = 256 * 1024
TOKEN = "s3cret-token-value"


def make_app(
    root: Path, name: str, version: str = "1.0.0", *, keywords: tuple[str, ...] = ("bolt-app",), **extra: Any
) -> Path:
    folder = root / name.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "version": version, "description": f"The {name} app", "keywords": list(keywords)}
    manifest["bolt"] = {"main": "server.py"}
    readme = extra.pop("readme", f"# {name}\n")
    manifest.update(extra)
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "server.py").write_text("print('hello')\n")
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def sri(alg: str, data: bytes) -> str:
    return f"{alg}-" + base64.b64encode(hashlib.new(alg, data).digest()).decode()


def tarball_paths(registry: RegistryServer) -> list[str]:
    return [p for p in registry.paths if "/-/" in p and not p.startswith("/-/")]


def cache_files(cache: Path) -> list[str]:
    return sorted(os.listdir(cache)) if cache.exists() else []


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
async def client(registry: RegistryServer, cache: Path) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(registry.url, cache, max_bytes=MAX_BYTES, timeout=10) as c:
        yield c


async def expect(kind: str, awaitable: Any, *words: str) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        await awaitable
    assert caught.value.kind == kind, caught.value
    for word in words:
        assert word in str(caught.value), str(caught.value)
    return caught.value


# ------------------------------------------------------------------ metadata


async def test_packument(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    app = make_app(tmp_path, "hello")
    registry.publish_dir(app)
    registry.publish_dir(app, version="1.1.0")
    doc = await client.packument("hello")
    assert doc["name"] == "hello"
    assert doc["dist-tags"] == {"latest": "1.1.0"}
    assert set(doc["versions"]) == {"1.0.0", "1.1.0"}
    assert {"created", "modified", "1.0.0", "1.1.0"} <= set(doc["time"])
    assert doc["readme"] == "# hello\n"


async def test_scoped_name_is_escaped(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "@acme/tool", "0.3.0"))
    doc = await client.packument("@acme/tool")
    assert doc["dist-tags"]["latest"] == "0.3.0"
    assert "/@acme%2ftool" in registry.raw_paths
    path = await client.download("@acme/tool", "0.3.0")
    assert path.name == "@acme+tool@0.3.0.tgz"


async def test_manifest_latest_tag_and_exact(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    app = make_app(tmp_path, "hello")
    registry.publish_dir(app, version="1.0.0")
    registry.publish_dir(app, version="1.1.0")
    registry.publish_dir(app, version="2.0.0-beta.1", tag="next")
    latest = await client.manifest("hello")
    assert latest["version"] == "1.1.0"
    assert latest["bolt"] == {"main": "server.py"}
    assert latest["dist"]["integrity"].startswith("sha512-")
    assert (await client.manifest("hello", "next"))["version"] == "2.0.0-beta.1"
    assert (await client.manifest("hello", "latest"))["version"] == "1.1.0"
    assert (await client.manifest("hello", "1.0.0"))["version"] == "1.0.0"


async def test_unknown_version_lists_available(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    app = make_app(tmp_path, "hello")
    registry.publish_dir(app, version="1.0.0")
    registry.publish_dir(app, version="1.10.0")
    err = await expect("not_found", client.manifest("hello", "3.0.0"), "'3.0.0'", "hello")
    assert "1.0.0, 1.10.0" in str(err)


async def test_unknown_package(registry: RegistryServer, client: RegistryClient) -> None:
    await expect("not_found", client.packument("nothing-here"), "nothing-here")
    await expect("not_found", client.download("nothing-here", "1.0.0"))


async def test_readme(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    app = make_app(tmp_path, "hello", readme="# Hello\n\nSay hi.\n")
    registry.publish_dir(app, extra_manifest={"readme": "old readme"})
    registry.publish_dir(app, version="1.1.0")
    assert await client.readme("hello") == "# Hello\n\nSay hi.\n"
    assert await client.readme("hello", "1.0.0") == "old readme"


async def test_missing_readme(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "bare", readme=None))
    await expect("readme", client.readme("bare"), "bare@1.0.0")
    registry.publish_dir(
        make_app(tmp_path, "npm-style", readme=None), extra_manifest={"readme": "ERROR: No README data found!"}
    )
    await expect("readme", client.readme("npm-style"))


async def test_invalid_name_is_refused_without_a_request(registry: RegistryServer, client: RegistryClient) -> None:
    for name in ("../etc/passwd", "Hello", "@scope/../x", ""):
        await expect("package", client.packument(name), "not a valid npm package name")
    assert registry.requests == 0


# ------------------------------------------------------------------ downloads


async def test_download_verified(registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path) -> None:
    doc = registry.publish_dir(make_app(tmp_path, "hello"))
    seen: list[tuple[int, int | None]] = []
    path = await client.download("hello", "1.0.0", progress=lambda got, total: seen.append((got, total)))
    data = path.read_bytes()
    assert path.parent == cache
    assert cache_files(cache) == ["hello@1.0.0.tgz"]
    assert sri("sha512", data) == doc["dist"]["integrity"]
    assert seen and seen[-1] == (len(data), len(data))
    root = safe_extract(path, tmp_path / "staging")
    assert json.loads((root / "package.json").read_text())["name"] == "hello"


async def test_download_resolves_a_tag(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "hello"), version="2.0.0")
    path = await client.download("hello", "latest")
    assert path.name == "hello@2.0.0.tgz"


async def test_cached_file_reused_only_after_verification(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    registry.publish_dir(make_app(tmp_path, "hello"))
    path = await client.download("hello", "1.0.0")
    good = path.read_bytes()
    assert len(tarball_paths(registry)) == 1
    assert await client.download("hello", "1.0.0") == path
    assert len(tarball_paths(registry)) == 1, "a verified cached file is reused"
    path.write_bytes(b"corrupted")
    assert await client.download("hello", "1.0.0") == path
    assert len(tarball_paths(registry)) == 2, "a corrupted cached file is fetched again"
    assert path.read_bytes() == good


async def test_tampered_tarball(registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "evil"), tamper=True)
    await expect("integrity", client.download("evil", "1.0.0"), "evil@1.0.0", "sha512")
    assert len(tarball_paths(registry)) == 1
    assert cache_files(cache) == []


async def test_no_integrity_is_refused(
    registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path
) -> None:
    registry.publish_dir(make_app(tmp_path, "loose"), extra_manifest={"dist": {"integrity": None, "shasum": None}})
    await expect("integrity", client.download("loose", "1.0.0"), "no integrity data")
    assert tarball_paths(registry) == []
    assert cache_files(cache) == []


async def test_shasum_only(registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path) -> None:
    app = make_app(tmp_path, "old-style")
    registry.publish_dir(app, extra_manifest={"dist": {"integrity": None}})
    assert (await client.download("old-style", "1.0.0")).is_file()
    registry.publish_dir(app, version="1.0.1", extra_manifest={"dist": {"integrity": None, "shasum": "0" * 40}})
    await expect("integrity", client.download("old-style", "1.0.1"), "sha1")
    assert cache_files(cache) == ["old-style@1.0.0.tgz"]


def _tarball_of(app: Path, version: str) -> bytes:
    manifest = json.loads((app / "package.json").read_text())
    assert manifest["version"] == version
    return pack_directory(app, app.parent / f"{app.name}.tgz").read_bytes()


@pytest.mark.parametrize(
    ("integrity", "ok"),
    [
        (lambda d: sri("sha256", d), True),
        (lambda d: sri("sha1", d), True),
        (lambda d: f"sha1-{base64.b64encode(bytes(20)).decode()} {sri('sha512', d)}", True),
        (lambda d: f"{sri('sha1', d)} sha512-{base64.b64encode(bytes(64)).decode()}", False),
        (lambda d: f"sha512-{base64.b64encode(bytes(64)).decode()} {sri('sha512', d)}", True),
        (lambda d: f"{sri('sha256', d)}?opt md5-AAAA", True),
        (lambda d: sri("sha256", d + b"x"), False),
    ],
    ids=["sha256", "sha1", "weak-wrong-strong-right", "weak-right-strong-wrong", "two-sha512", "options", "wrong"],
)
async def test_sri_forms(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path, integrity: Any, ok: bool
) -> None:
    app = make_app(tmp_path, "sri")
    data = _tarball_of(app, "1.0.0")
    registry.publish_tarball("sri", "1.0.0", data, {"dist": {"integrity": integrity(data), "shasum": None}})
    if ok:
        assert (await client.download("sri", "1.0.0")).read_bytes() == data
    else:
        await expect("integrity", client.download("sri", "1.0.0"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_size_cap(
    registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path, chunked: bool
) -> None:
    app = make_app(tmp_path, "big")
    (app / "blob.bin").write_bytes(os.urandom(2 * MAX_BYTES))  # random: gzip cannot shrink it
    registry.set_chunked(chunked)
    registry.publish_dir(app)
    words = ("larger than the limit",) if chunked else ("more than the limit",)
    await expect("download", client.download("big", "1.0.0"), "big@1.0.0", *words)
    assert cache_files(cache) == []


async def test_registry_down(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "hello"))
    registry.set_down(True)
    await expect("package", client.packument("hello"), "503")
    await expect("package", client.search("keywords:bolt-app"), "503")
    registry.set_down(False)
    assert (await client.manifest("hello"))["version"] == "1.0.0"


async def test_unreachable_registry(cache: Path) -> None:
    with RegistryServer() as gone:
        url = gone.url
    async with RegistryClient(url, cache, max_bytes=MAX_BYTES, timeout=5) as c:
        await expect("package", c.packument("hello"), "could not reach the registry")


async def test_bad_json(registry: RegistryServer, client: RegistryClient) -> None:
    registry.set_response("/broken", 200, b"{not json", {"content-type": "application/json"})
    await expect("package", client.packument("broken"), "invalid JSON")
    registry.set_response("/listy", 200, b"[1, 2]")
    await expect("package", client.packument("listy"), "not a package document")


async def test_tarball_download_error(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    doc = registry.publish_dir(make_app(tmp_path, "hello"))
    registry.set_response(doc["dist"]["tarball"].removeprefix(registry.url), 500, b"oops")
    await expect("download", client.download("hello", "1.0.0"), "HTTP 500")


async def test_tarball_url_must_be_http(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "local"), extra_manifest={"dist": {"tarball": "file:///etc/passwd"}})
    await expect("download", client.download("local", "1.0.0"), "http(s)")


async def test_unsafe_version_string(
    registry: RegistryServer, client: RegistryClient, cache: Path, tmp_path: Path
) -> None:
    data = _tarball_of(make_app(tmp_path, "sneaky"), "1.0.0")
    registry.publish_tarball("sneaky", "../../../escaped", data)
    await expect("package", client.download("sneaky", "../../../escaped"), "unsafe version")
    assert not (tmp_path.parent / "escaped.tgz").exists()
    assert list(tmp_path.rglob("*escaped*")) == []
    assert cache_files(cache) == []


async def test_hostile_tarball_downloads_but_does_not_extract(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("../../evil")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    registry.publish_tarball("hostile", "1.0.0", buf.getvalue())
    path = await client.download("hostile", "1.0.0")  # the registry vouches for these bytes
    with pytest.raises(ExtractError, match="evil"):
        safe_extract(path, tmp_path / "staging")
    assert list((tmp_path / "staging").iterdir()) == []


# ------------------------------------------------------------------ search


async def test_search_by_keyword(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    registry.publish_dir(make_app(tmp_path, "one"))
    registry.publish_dir(make_app(tmp_path, "@acme/two", keywords=("Bolt-App", "tools")))
    registry.publish_dir(make_app(tmp_path, "not-an-app", keywords=("library",)))
    found = await client.search("keywords:bolt-app")
    assert sorted(p["name"] for p in found) == ["@acme/two", "one"]
    assert {p["version"] for p in found} == {"1.0.0"}
    assert sorted(p["name"] for p in await client.search_keyword("bolt-app")) == ["@acme/two", "one"]
    assert [p["name"] for p in await client.search("keywords:bolt-app", size=1)] == ["@acme/two"]
    assert await client.search("keywords:nothing") == []


async def test_search_missing_endpoint(registry: RegistryServer, client: RegistryClient) -> None:
    registry.set_response("/-/v1/search", 404, b"{}")
    await expect("package", client.search("keywords:bolt-app"), "not found")


async def test_search_keyword_falls_back_to_listing(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    # A registry (like Verdaccio) whose search ignores "keywords:" and only matches names.
    registry.publish_dir(make_app(tmp_path, "one"))
    registry.publish_dir(make_app(tmp_path, "lib", keywords=("library",)))
    registry.set_keyword_search(False)
    assert await client.search("keywords:bolt-app") == []
    assert [p["name"] for p in await client.search_keyword("bolt-app")] == ["one"]


# ------------------------------------------------------------------ configuration and credentials


async def test_not_configured(cache: Path) -> None:
    for url in ("", "ftp://example.invalid/registry", "not a url"):
        async with RegistryClient(url, cache, max_bytes=MAX_BYTES) as c:
            await expect("not_configured", c.packument("hello"))
            await expect("not_configured", c.search("x"))
            assert c.base_url is None


async def test_token_goes_only_to_the_registry_origin(registry: RegistryServer, cache: Path, tmp_path: Path) -> None:
    with RegistryServer() as other_host:
        elsewhere = other_host.publish_dir(make_app(tmp_path, "hello"))
        registry.publish_dir(make_app(tmp_path, "hello"), extra_manifest={"dist": elsewhere["dist"]})
        async with RegistryClient(registry.url, cache, max_bytes=MAX_BYTES, token=TOKEN) as c:
            assert (await c.download("hello", "1.0.0")).is_file()
        assert registry.authorizations == [f"Bearer {TOKEN}"]
        assert other_host.authorizations == [None]
        assert tarball_paths(other_host) == ["/hello/-/hello-1.0.0.tgz"]


async def test_messages_never_carry_credentials(registry: RegistryServer, cache: Path) -> None:
    url = registry.url.replace("http://", "http://admin:pa55word@")
    async with RegistryClient(url, cache, max_bytes=MAX_BYTES, token=TOKEN) as c:
        assert c.base_url == registry.url
        err = await expect("not_found", c.packument("missing"))
        registry.set_down(True)
        err2 = await expect("package", c.packument("missing"))
    for text in (str(err), str(err2)):
        assert "pa55word" not in text and TOKEN not in text
    assert registry.authorizations[0] == f"Bearer {TOKEN}"  # an explicit token wins over URL user info


async def test_url_user_info_is_sent_as_basic_auth(registry: RegistryServer, cache: Path) -> None:
    url = registry.url.replace("http://", "http://admin:pa55word@")
    async with RegistryClient(url, cache, max_bytes=MAX_BYTES) as c:
        await expect("not_found", c.packument("missing"))
    assert registry.authorizations == ["Basic " + base64.b64encode(b"admin:pa55word").decode()]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("hello", True),
        ("hello-web", True),
        ("a.b_c-d", True),
        ("@acme/tool", True),
        ("x" * 214, True),
        ("x" * 215, False),
        ("Hello", False),
        (".hidden", False),
        ("_private", False),
        ("@acme/.x", False),
        ("@acme/", False),
        ("@/x", False),
        ("a/b", False),
        ("a b", False),
        ("caf\u00e9", False),
        ("a~b", False),
        ("node_modules", False),
        ("../x", False),
        ("", False),
    ],
)
def test_valid_package_name(name: str, ok: bool) -> None:
    assert valid_package_name(name) is ok


def test_partial_downloads_left_by_a_crash_are_removed(tmp_path: Path) -> None:
    from bolt_host.services.registry import remove_partial_downloads

    (tmp_path / ".download-abc.part").write_bytes(b"half")
    (tmp_path / "notes@1.0.0.tgz").write_bytes(b"whole")
    assert remove_partial_downloads(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes@1.0.0.tgz"]
