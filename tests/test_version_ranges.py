"""npm version ranges: resolved as npm resolves them, on every install path and preview."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.versions import resolve_version
from bolt_host.testing import RunningHost, running_host
from tests.registry_server import RegistryServer

PUBLISHED = ["5.0.0", "6.0.0", "6.0.3", "6.1.0", "6.2.0-beta.1", "7.0.0"]
TAGS = {"latest": "7.0.0", "beta": "6.2.0-beta.1"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "7.0.0"),  # the latest tag
        ("^6", "6.1.0"),  # highest in range, prerelease skipped
        ("6", "6.1.0"),
        ("6.x", "6.1.0"),
        ("~6.0", "6.0.3"),
        (">=5 <7", "6.1.0"),
        (">= 5.0.0 < 6", "5.0.0"),  # loose spacing, as npm accepts it
        ("6.0.1 - 6.0.9", "6.0.3"),
        ("^5 || ^7", "7.0.0"),  # the latest tag wins when it is in the range
        ("*", "7.0.0"),
        ("v6.0.0", "6.0.0"),  # loose exact version
        ("=6.0.3", "6.0.3"),
        ("^6.2.0-beta.0", "6.2.0-beta.1"),  # prereleases only when the range asks for them
        ("6.2.0-beta.1", "6.2.0-beta.1"),
        ("beta", "6.2.0-beta.1"),  # a dist-tag
        ("^9", None),
        ("<5", None),
        ("nope", None),
    ],
)
def test_resolve_like_npm(spec: str | None, expected: str | None) -> None:
    assert resolve_version(spec, PUBLISHED, TAGS) == expected


def test_non_releases_are_taken_only_by_name() -> None:
    versions = ["1.0.0", "1.1.0", "master"]
    assert resolve_version(None, versions) == "master"  # ranks above every release (the robot seed)
    assert resolve_version("master", versions) == "master"
    assert resolve_version("*", versions) == "1.1.0"
    assert resolve_version("^1", versions, {"latest": "master"}) == "1.1.0"


def test_latest_is_preferred_inside_a_range_even_when_higher_ones_exist() -> None:
    # npm installs dist-tags.latest when the range allows it, not a newer version published later.
    assert resolve_version("^1", ["1.0.0", "1.5.0", "1.9.0"], {"latest": "1.5.0"}) == "1.5.0"
    assert resolve_version("^1", ["1.0.0", "1.5.0", "1.9.0"], {"latest": "2.0.0"}) == "1.9.0"  # tag to nowhere


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        for version in PUBLISHED:
            tag = "beta" if "beta" in version else "latest"
            server.publish_dir(BUNDLED_LOCAL_REPO / "notes", version=version, tag=tag)
        server.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="7.0.0")  # latest again after the beta
        yield server


@pytest.fixture
async def bolt_r(tmp_path: Path, registry: RegistryServer) -> AsyncIterator[RunningHost]:
    async with running_host(tmp_path / "data", registry=registry.url) as bolt:
        yield bolt


async def test_install_with_a_range_installs_what_npm_would(bolt_r: RunningHost) -> None:
    installed = await bolt_r.admin.post("/api/apps", json={"name": "notes", "version": "^6"})
    assert installed.status_code == 201, installed.text
    app = installed.json()["body"]
    assert app["version"] == "6.1.0"
    assert app["source"]["version"] == "6.1.0"  # the record names the exact version, not the range
    upgraded = await bolt_r.admin.post("/api/apps", json={"name": "notes", "version": "~6.0", "upgrade": True})
    assert upgraded.json()["body"]["version"] == "6.0.3"


async def test_previews_resolve_ranges(bolt_r: RunningHost) -> None:
    for spec, expected in (("6", "6.1.0"), (">=5 <7", "6.1.0"), ("beta", "6.2.0-beta.1")):
        preview = await bolt_r.admin.post("/api/apps/package", json={"name": "notes", "version": spec})
        assert preview.json()["body"]["version"] == expected, spec
    readme = await bolt_r.admin.post("/api/apps/readme", json={"name": "notes", "version": "^6"})
    assert readme.status_code == 200 and readme.json()["body"].startswith("#")


async def test_a_range_nothing_satisfies_is_a_clear_error_and_installs_nothing(bolt_r: RunningHost) -> None:
    refused = await bolt_r.admin.post("/api/apps", json={"name": "notes", "version": "^9"})
    assert refused.json()["code"] == errors.REGISTRY_PACKAGE_FAILED
    message = refused.json()["error"]["message"]
    assert "version '^9' of notes does not exist" in message and "7.0.0" in message
    assert bolt_r.host.apps.get("notes") is None


async def test_the_catalog_resolves_ranges_for_the_store_backends(bolt_r: RunningHost) -> None:
    """Robot and market install through ``host.catalog``; the catalog preview shows the same."""
    catalog = bolt_r.host.catalog
    await catalog.refresh()
    path, source = await catalog.fetch("notes", "^6")
    assert source["version"] == "6.1.0" and path.is_file()
    assert (await catalog.manifest("notes", "~6.0"))["version"] == "6.0.3"
    preview = await bolt_r.admin.get("/api/catalog/package", params={"name": "notes", "version": "6.x"})
    assert preview.json()["body"]["manifest"]["version"] == "6.1.0"
    missing = await bolt_r.admin.get("/api/catalog/package", params={"name": "notes", "version": "^9"})
    assert missing.json()["code"] == errors.REGISTRY_PACKAGE_FAILED


@pytest.mark.timeout(180)
def test_market_installs_and_previews_resolve_ranges(tmp_path: Path) -> None:
    from tests.test_market_support import REPO, market_host, with_version

    with RegistryServer() as server:
        server.publish_dir(REPO / "env-echo")
        server.publish_dir(with_version(REPO / "env-echo", "1.1.0", tmp_path / "env-echo-1.1.0"))
        with market_host(tmp_path) as market:
            admin = market.admin
            added = admin.post("/settings/market-source", json={"id": "reg", "name": "R", "type": "remote",
                                                                 "base_url": server.url})
            assert added.status_code == 200, added.text
            preview = admin.get("/apps/env-echo/package", params={"source": "reg", "version": "^1"})
            assert preview.json()["data"]["version"] == "1.1.0"
            assert admin.get("/apps/env-echo/package", params={"source": "reg", "version": "^2"}).status_code == 404
            body = {"source": "reg", "app_name": "env-echo", "version": "~1.0", "sync": True,
                    "envs": [{"envName": "GREETING", "value": "hi"}]}
            installed = admin.post("/apps/env-echo/install", json=body)
            assert installed.status_code == 200, installed.text
            market.wait_state(admin, "env-echo", "running")
            assert market.live.host.apps.get("env-echo")["version"] == "1.0.0"
            admin.post("/apps/stop", json={"appName": "env-echo"})
