"""Enterprise store assets, tags and the JAX-RS app list through a real server:
admin HTTP Basic, types, providers, paging edges."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bolt_enterprise.assets import provider_of

from bolt_host.config import BUNDLED_LOCAL_REPO
from tests.test_enterprise_support import ServedHost, add_user, install, served_host, store_login

ASSETS = "/store/apis/v1/assets"
PROVIDER = "bolt-host contributors"  # the sample apps' author
MOBILE_LIST = "/api/v1/apps/mobile/list/tenant/carbon.super"


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[ServedHost]:
    """A served host with three web apps, a site, a firmware package and user bob."""
    async with served_host(tmp_path) as served:
        async with served.admin() as admin:
            for path in ("hello-web", "notes", "app-admin", "static-docs", "demo-firmware"):
                await install(admin, path)
            await install(admin, "hello-node", controlled=True)
            await add_user(admin, "bob")
        yield served


async def test_assets_need_admin_basic_credentials(catalog: ServedHost) -> None:
    async with catalog.client() as anonymous:
        refused = await anonymous.get(f"{ASSETS}/webapp")
        assert refused.status_code == 401 and refused.json()["error"] is True
    async with catalog.user("bob") as bob:
        assert (await bob.get(f"{ASSETS}/webapp")).status_code == 403
    async with catalog.client(auth=("admin", "wrong-password")) as wrong:
        assert (await wrong.get(f"{ASSETS}/webapp")).status_code == 401
    async with catalog.admin() as admin:
        listed = await admin.get(f"{ASSETS}/webapp")
        assert listed.status_code == 200
        assert [a["name"] for a in listed.json()] == ["app-admin", "hello-node", "hello-web", "notes"]
    async with catalog.client() as session:
        await store_login(session, "admin", catalog.admin_password)
        assert (await session.get(f"{ASSETS}/site")).status_code == 200


async def test_asset_types_providers_names_and_versions(catalog: ServedHost) -> None:
    async with catalog.admin() as admin:
        site = (await admin.get(f"{ASSETS}/site/")).json()
        assert [a["name"] for a in site] == ["static-docs"]
        mobile = (await admin.get(f"{ASSETS}/mobileapp")).json()
        assert [a["name"] for a in mobile] == ["demo-firmware"]
        by_provider = (await admin.get(f"{ASSETS}/webapp/{PROVIDER}")).json()
        assert len(by_provider) == 4
        assert (await admin.get(f"{ASSETS}/webapp/someone-else")).json() == []
        versions = (await admin.get(f"{ASSETS}/webapp/{PROVIDER}/hello-web")).json()
        assert [(a["name"], a["version"]) for a in versions] == [("hello-web", "1.0.0")]
        one = await admin.get(f"{ASSETS}/webapp/{PROVIDER}/hello-web/1.0.0")
        asset = one.json()
        assert asset["type"] == "webapp" and asset["provider"] == PROVIDER
        assert asset["attributes"]["overview_name"] == "hello-web"
        assert asset["attributes"]["overview_url"] == f"{catalog.url}/x/hello-web/"
        missing = await admin.get(f"{ASSETS}/webapp/{PROVIDER}/hello-web/9.9.9")
        assert missing.status_code == 404 and missing.json() == {"error": True, "message": "no matching asset found"}
        wrong_type = await admin.get(f"{ASSETS}/mobileapp/{PROVIDER}/hello-web/1.0.0")
        assert wrong_type.status_code == 404
        unknown = await admin.get(f"{ASSETS}/gadget")
        assert unknown.status_code == 404 and unknown.json()["error"] is True


PAGES = {
    "": ["app-admin", "hello-node", "hello-web", "notes"],
    "?start=0&count=2": ["app-admin", "hello-node"],
    "?start=1&count=2": ["hello-node", "hello-web"],
    "?start=3": ["notes"],
    "?start=4": [],
    "?start=99&count=5": [],
    "?count=0": [],
    "?start=0&count=1000": ["app-admin", "hello-node", "hello-web", "notes"],
}
BAD_PAGES = ["?start=-1", "?count=-5", "?start=abc", "?count=1.5", "?start=0&count=-1", "?count=1_0", "?start=%2B1"]


async def test_asset_paging_edges(catalog: ServedHost) -> None:
    async with catalog.admin() as admin:
        for query, expected in PAGES.items():
            response = await admin.get(f"{ASSETS}/webapp{query}")
            assert response.status_code == 200, query
            assert [a["name"] for a in response.json()] == expected, query
        for query in BAD_PAGES:
            for path in (f"{ASSETS}/webapp", f"{ASSETS}/webapp/{PROVIDER}", f"{ASSETS}/webapp/{PROVIDER}/notes"):
                response = await admin.get(path + query)
                assert response.status_code == 400, path + query
                assert response.json()["error"] is True


async def test_tags_count_the_apps_the_caller_can_see(catalog: ServedHost) -> None:
    async with catalog.client() as anonymous:
        public = (await anonymous.get("/store/apis/tag/webapp")).json()
    assert public == [
        {"name": "data", "count": 1},
        {"name": "demo", "count": 2},
        {"name": "settings", "count": 1},
        {"name": "system", "count": 1},
        {"name": "web", "count": 1},
    ]
    async with catalog.admin() as admin:
        every = {t["name"]: t["count"] for t in (await admin.get("/store/apis/tag/webapp")).json()}
        assert every["demo"] == 3 and every["node"] == 1  # the controlled hello-node counts for an admin
        assert (await admin.get("/store/apis/tag/site")).json() == [{"name": "docs", "count": 1}]
        assert (await admin.get("/store/apis/tag/nothing")).status_code == 404


async def test_jaxrs_app_list_filters_and_pages(catalog: ServedHost) -> None:
    async with catalog.admin() as admin:
        everything = (await admin.get(MOBILE_LIST)).json()
        assert everything["query"] == {"found": 6, "limit": 0, "total": 6, "offset": 0}
        firmware = next(a for a in everything["apps"] if a["appName"] == "demo-firmware")
        assert firmware["platform"] == "bolt" and firmware["type"] == "enterprise"
        assert firmware["packageName"] == "demo-firmware"
        hello = (await admin.get(MOBILE_LIST, params={"search": "HELLO"})).json()
        assert [a["appName"] for a in hello["apps"]] == ["hello-node", "hello-web"]
        assert hello["query"]["found"] == 2 and hello["query"]["total"] == 6
        bolt = (await admin.get(MOBILE_LIST, params={"platform": "bolt"})).json()
        assert [a["appName"] for a in bolt["apps"]] == ["demo-firmware"]
        paged = (await admin.get(MOBILE_LIST, params={"search": "e", "limit": 2, "offset": 1})).json()
        assert len(paged["apps"]) == 2
        assert paged["query"]["limit"] == 2 and paged["query"]["offset"] == 1
        assert (await admin.get(MOBILE_LIST, params={"offset": 50})).json()["apps"] == []
        assert (await admin.get(MOBILE_LIST, params={"limit": -1})).status_code == 400
        other = await admin.get("/api/v1/apps/mobile/list/tenant/example.com")
        assert other.status_code == 404 and other.json()["error"] is True


async def test_jaxrs_takes_only_admin_basic_credentials(catalog: ServedHost) -> None:
    async with catalog.client() as session:
        await store_login(session, "admin", catalog.admin_password)
        assert (await session.get(MOBILE_LIST)).status_code == 401
    async with catalog.user("bob") as bob:
        assert (await bob.get(MOBILE_LIST)).status_code == 403


def test_the_provider_is_the_authors_or_publishers_name_never_an_email() -> None:
    assert provider_of({"author": "Jane Doe <jane@example.org> (https://jane.example)"}) == "Jane Doe"
    assert provider_of({"author": "Jane Doe (https://jane.example)"}) == "Jane Doe"
    assert provider_of({"author": {"name": "Jo Bloggs", "email": "jo@example.org"}}) == "Jo Bloggs"
    assert provider_of({"author": "<jane@example.org>", "_npmUser": {"name": "jdoe", "email": "j@x.org"}}) == "jdoe"
    assert provider_of({"author": "", "publisher": "Pub Lisher <pub@example.org>"}) == "Pub Lisher"
    assert provider_of({"maintainers": [{"name": "first", "email": "f@x.org"}, {"name": "second"}]}) == "first"
    assert provider_of({"author": None, "maintainers": []}) == "admin"
    assert provider_of({}) == "admin"


def _site(repo: Path, name: str, **fields: object) -> None:
    """A copy of the static-docs sample named ``name``, with other package.json fields."""
    folder = repo / name
    shutil.copytree(BUNDLED_LOCAL_REPO / "static-docs", folder)
    manifest = json.loads((folder / "package.json").read_text())
    manifest.pop("author")
    manifest.update(name=name, **fields)
    (folder / "package.json").write_text(json.dumps(manifest))


async def test_asset_providers_come_from_authors_and_publishers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _site(repo, "by-string", author="Jane Doe <jane@example.org> (https://jane.example)")
    _site(repo, "by-object", author={"name": "Jo Bloggs", "email": "jo@example.org"})
    _site(repo, "by-publisher", _npmUser={"name": "npm-publisher", "email": "pub@example.org"})
    _site(repo, "by-nobody")
    async with served_host(tmp_path / "data", local_repo=repo) as served, served.admin() as admin:
        for name in ("by-string", "by-object", "by-publisher", "by-nobody"):
            await install(admin, name)
        listed = await admin.get(f"{ASSETS}/site")
        providers = {a["name"]: a["provider"] for a in listed.json()}
        assert providers == {"by-string": "Jane Doe", "by-object": "Jo Bloggs", "by-publisher": "npm-publisher",
                             "by-nobody": "admin"}
        assert "example.org" not in listed.text
        by_jane = (await admin.get(f"{ASSETS}/site/Jane Doe")).json()
        assert [a["name"] for a in by_jane] == ["by-string"]
        one = await admin.get(f"{ASSETS}/site/npm-publisher/by-publisher/1.0.0")
        assert one.status_code == 200 and one.json()["attributes"]["overview_provider"] == "npm-publisher"
        jaxrs = await admin.get(MOBILE_LIST)
        assert "example.org" not in jaxrs.text
