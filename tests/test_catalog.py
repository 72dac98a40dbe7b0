"""The catalog: local, registry and upload sources, merging, failures, plugin sources."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host import hookimpl
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.plugins import PluginLoadError
from bolt_host.services.catalog import (
    Catalog,
    CatalogError,
    LocalSource,
    RegistrySource,
    UploadSource,
    is_firmware,
    read_tarball_manifest,
)
from bolt_host.services.extract import pack_directory, safe_extract
from bolt_host.services.registry import RegistryClient
from bolt_host.storage import Database
from bolt_host.testing import running_host
from tests.helpers import async_wait_until
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.timeout(60)
SAMPLES = BUNDLED_LOCAL_REPO


class FakeSource:
    """A plugin-style source with fixed entries."""

    def __init__(self, name: str, entries: list[dict[str, Any]], fail: bool = False) -> None:
        self.name = name
        self.entries = entries
        self.fail = fail
        self.fetched: list[tuple[str, str]] = []

    async def list_packages(self) -> list[dict[str, Any]]:
        if self.fail:
            raise RuntimeError(f"{self.name} is down")
        return self.entries

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        return {"name": name, "version": version or "0"}

    async def readme(self, name: str, version: str | None = None) -> str:
        return f"# {name}"

    async def fetch(self, name: str, version: str, progress: Any = None) -> Path:
        self.fetched.append((name, version))
        return Path(f"/nonexistent/{name}-{version}.tgz")


def entry(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "versions": [version], "bolt": {}, **extra}


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def make_app(folder: Path, name: str, version: str = "1.0.0", keywords: tuple[str, ...] = ("bolt-app",)) -> Path:
    app = folder / name
    app.mkdir(parents=True)
    manifest = {"name": name, "version": version, "keywords": list(keywords), "bolt": {"main": "server.py"}}
    (app / "package.json").write_text(json.dumps(manifest))
    (app / "server.py").write_text("print('hi')\n")
    (app / "README.md").write_text(f"# {name}\n")
    return app


async def test_local_source_lists_packs_and_reads(tmp_path: Path) -> None:
    source = LocalSource(SAMPLES, tmp_path / "cache")
    listed = {e["name"]: e for e in await source.list_packages()}
    assert {"hello-web", "notes", "demo-firmware"} <= set(listed)
    assert listed["notes"]["version"] == "1.0.0" and listed["notes"]["versions"] == ["1.0.0"]
    assert listed["notes"]["source"] == "local" and "bolt-app" in listed["notes"]["keywords"]
    assert is_firmware(listed["demo-firmware"]) and not is_firmware(listed["notes"])
    assert (await source.manifest("notes"))["name"] == "notes"
    assert (await source.readme("notes")).startswith("#")
    seen: list[tuple[int, Any]] = []
    tarball = await source.fetch("hello-web", "1.0.0", lambda got, total: seen.append((got, total)))
    assert tarball.parent == tmp_path / "cache" / "local" and seen and seen[-1][0] == seen[-1][1]
    root = safe_extract(tarball, tmp_path / "out")
    assert json.loads((root / "package.json").read_text())["name"] == "hello-web"
    assert source.app_source("hello-web", "1.0.0") == {"type": "local", "path": "hello-web"}
    with pytest.raises(CatalogError):
        await source.fetch("hello-web", "9.9.9")
    with pytest.raises(CatalogError):
        await source.manifest("nope")


async def test_registry_source_lists_search_pinned_and_installed_names(tmp_path: Path, registry) -> None:
    repo = tmp_path / "repo"
    registry.publish_dir(make_app(repo, "searchable", "1.0.0"))
    registry.publish_dir(make_app(repo, "pinned-one", "2.0.0", keywords=()))
    registry.publish_dir(make_app(repo, "installed-one", "3.0.0", keywords=()))
    registry.publish_dir(make_app(repo, "hidden", "1.0.0", keywords=()))
    registry.publish_dir(repo / "searchable", version="1.1.0")
    async with RegistryClient(registry.url, tmp_path / "cache", max_bytes=10 * 2**20) as client:
        source = RegistrySource(client, pinned=["pinned-one"], installed=lambda: ["installed-one", "only-local"])
        listed = {e["name"]: e for e in await source.list_packages()}
        assert set(listed) == {"searchable", "pinned-one", "installed-one"}
        assert listed["searchable"]["version"] == "1.1.0"
        assert listed["searchable"]["versions"] == ["1.0.0", "1.1.0"]
        assert source.problems == []
        tarball = await source.fetch("searchable", "1.0.0")
        assert tarball.is_file() and tarball.parent == tmp_path / "cache"
        assert source.app_source("searchable", "1.0.0")["type"] == "registry"
        assert (await source.manifest("pinned-one"))["version"] == "2.0.0"


async def test_a_registry_that_goes_down_keeps_its_entries_and_reports_the_error(tmp_path: Path, registry) -> None:
    registry.publish_dir(make_app(tmp_path / "repo", "searchable"))
    db = Database(tmp_path / "db.json")
    async with RegistryClient(registry.url, tmp_path / "cache", max_bytes=10 * 2**20) as client:
        catalog = Catalog(db)
        catalog.add_source(RegistrySource(client))
        await catalog.refresh()
        assert [e["name"] for e in catalog.entries()] == ["searchable"] and catalog.errors() == {}
        registry.set_down()
        await catalog.refresh()
        assert [e["name"] for e in catalog.entries()] == ["searchable"]
        assert "503" in catalog.errors()["registry"]

        # a host restarted while the registry is down still knows the last entries
        again = Catalog(db)
        again.add_source(RegistrySource(client))
        await again.refresh()
        assert [e["name"] for e in again.entries()] == ["searchable"] and "registry" in again.errors()

        registry.set_down(False)
        await catalog.refresh()
        assert catalog.errors() == {}
    db.close()


async def test_upload_source_reads_manifests_from_tarballs(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    pack_directory(make_app(tmp_path / "src", "uploaded", "1.2.0"), uploads / "a.tgz")
    shutil.copytree(tmp_path / "src" / "uploaded", tmp_path / "src2")
    manifest = json.loads((tmp_path / "src2" / "package.json").read_text())
    (tmp_path / "src2" / "package.json").write_text(json.dumps({**manifest, "version": "1.3.0"}))
    pack_directory(tmp_path / "src2", uploads / "b.tar.gz")
    (uploads / "junk.tgz").write_bytes(b"not a tarball")
    (uploads / "notes.txt").write_text("ignored")

    source = UploadSource(uploads, tmp_path / "cache")
    listed = await source.list_packages()
    assert [(e["name"], e["version"], e["versions"]) for e in listed] == [("uploaded", "1.3.0", ["1.2.0", "1.3.0"])]
    fetched = await source.fetch("uploaded", "1.2.0")
    assert fetched.parent == tmp_path / "cache" / "uploads" and fetched.read_bytes() == (uploads / "a.tgz").read_bytes()
    assert source.app_source("uploaded", "1.2.0") == {"type": "upload", "filename": "a.tgz", "version": "1.2.0"}
    assert read_tarball_manifest(uploads / "b.tar.gz")["version"] == "1.3.0"
    with pytest.raises(CatalogError):
        read_tarball_manifest(uploads / "junk.tgz")
    with pytest.raises(CatalogError, match=r"no package\.json"):
        read_tarball_manifest(uploads / "a.tgz", scan_bytes=10)  # the manifest lies beyond the scan budget
    with pytest.raises(CatalogError):
        await source.fetch("uploaded", "9.0.0")


async def test_merging_the_highest_version_wins_and_ties_go_to_the_first_source() -> None:
    first = FakeSource("first", [entry("a", "1.0.0"), entry("b", "2.0.0"), entry("c", "master")])
    second = FakeSource("second", [entry("a", "1.1.0"), entry("b", "2.0.0"), entry("c", "9.0.0")])
    catalog = Catalog()
    catalog.add_source(first)
    catalog.add_source(second)
    await catalog.refresh()
    by_name = {e["name"]: e for e in catalog.entries()}
    assert [e["name"] for e in catalog.entries()] == ["a", "b", "c"]
    assert by_name["a"]["source"] == "second" and by_name["a"]["sources"] == ["first", "second"]
    assert by_name["b"]["source"] == "first"
    assert by_name["c"]["version"] == "master"  # a branch build ranks above every release
    found = catalog.find("a")
    assert found is not None and found[1] is second
    assert catalog.find("zzz") is None
    _, app_source = await catalog.fetch("a", "1.0.0")
    assert first.fetched == [("a", "1.0.0")] and app_source == {"type": "first", "package": "a", "version": "1.0.0"}
    await catalog.fetch("a")
    assert second.fetched == [("a", "1.1.0")]
    with pytest.raises(CatalogError):
        await catalog.fetch("a", "7.0.0")
    assert (await catalog.readme("a")) == "# a"


async def test_a_failing_source_keeps_its_entries_while_others_refresh() -> None:
    flaky = FakeSource("flaky", [entry("a", "1.0.0")])
    steady = FakeSource("steady", [entry("b", "1.0.0")])
    catalog = Catalog()
    catalog.add_source(flaky)
    catalog.add_source(steady)
    await catalog.refresh()
    flaky.fail = True
    steady.entries = [entry("b", "2.0.0")]
    await catalog.refresh()
    assert {(e["name"], e["version"]) for e in catalog.entries()} == {("a", "1.0.0"), ("b", "2.0.0")}
    assert catalog.errors() == {"flaky": "flaky is down"}


async def test_duplicate_source_names_are_refused() -> None:
    catalog = Catalog()
    catalog.add_source(FakeSource("x", []), owner="one")
    with pytest.raises(ValueError, match="'one' and 'two'"):
        catalog.add_source(FakeSource("x", []), owner="two")


async def test_refresh_soon_and_ready() -> None:
    catalog = Catalog()
    catalog.add_source(FakeSource("x", [entry("a", "1")]))
    assert catalog.entries() == []
    task = catalog.refresh_soon()
    assert catalog.refresh_soon() is task  # joined, not started twice
    assert await catalog.ready(timeout=5)
    assert [e["name"] for e in catalog.entries()] == ["a"] and catalog.last_refresh is not None


async def test_a_refresh_asked_for_during_a_refresh_runs_one_more_round() -> None:
    gate = asyncio.Event()

    class Slow(FakeSource):
        calls = 0

        async def list_packages(self) -> list[dict[str, Any]]:
            self.calls += 1
            await gate.wait()
            return self.entries

    source = Slow("slow", [entry("old", "1")])
    catalog = Catalog()
    catalog.add_source(source)
    first = catalog.refresh_soon()
    await async_wait_until(lambda: source.calls == 1)
    source.entries = [entry("new", "1")]  # changed after the running round listed it
    assert catalog.refresh_soon() is first
    gate.set()
    await first
    assert source.calls == 2 and [e["name"] for e in catalog.entries()] == ["new"]


class SourcePlugin:
    """A plugin adding a source through register_sources."""

    __name__ = "source_plugin"

    def __init__(self, name: str = "extra") -> None:
        self.source = FakeSource(name, [entry("plugin-pkg", "1.0.0")])

    @hookimpl
    def register_sources(self, host: Any) -> list[Any]:
        return [self.source]


class DuplicatePlugin(SourcePlugin):
    __name__ = "duplicate_plugin"


async def test_the_host_catalog_has_builtin_and_plugin_sources(tmp_path: Path, registry) -> None:
    registry.publish_dir(make_app(tmp_path / "repo", "from-registry"))
    plugin = SourcePlugin()
    async with running_host(tmp_path / "data", plugins=[plugin], registry=registry.url) as bolt:
        catalog = bolt.host.catalog
        assert [s.name for s in catalog.sources()] == ["local", "registry", "uploads", "extra"]
        await catalog.ready(timeout=20)
        names = {e["name"] for e in catalog.entries()}
        assert {"hello-web", "from-registry", "plugin-pkg"} <= names


async def test_two_plugins_with_the_same_source_name_fail_start_up(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"both '(source|duplicate)_plugin' and '(source|duplicate)_plugin'"):
        async with running_host(tmp_path / "data", plugins=[SourcePlugin(), DuplicatePlugin()]):
            pass
