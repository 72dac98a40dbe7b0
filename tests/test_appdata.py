from __future__ import annotations

from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.services.app_hooks import hook_route
from bolt_host.services.events import Event
from bolt_host.testing import RunningHost
from tests.helpers import settled_snapshot


async def _app_client(bolt: RunningHost, path: str):
    await bolt.admin.post("/api/apps/local", json={"path": path})
    token = bolt.host.tokens.issue(path)
    return bolt.client_with(**{"X-Bolt-App-Token": token})


async def test_app_database_crud_with_app_token(bolt: RunningHost) -> None:
    async with await _app_client(bolt, "notes") as notes:
        inserted = await notes.post(
            "/api/db/notes/insert", json={"object": [{"text": "a", "n": 1}, {"text": "b", "n": 2}]}
        )
        assert inserted.status_code == 201
        assert all(doc["_id"] for doc in inserted.json()["body"])
        found = await notes.post("/api/db/notes/find", json={"query": {"n": {"$gte": 2}}})
        assert [d["text"] for d in found.json()["body"]] == ["b"]
        one = await notes.post("/api/db/notes/findone", json={"query": {"text": "a"}, "map": {"text": 1}})
        assert set(one.json()["body"]) == {"text", "_id"}
        updated = await notes.post("/api/db/notes/update", json={"query": {"text": "a"}, "values": {"n": 10}})
        assert updated.json()["body"] == {"matched": 1}
        upserted = await notes.post(
            "/api/db/notes/update", json={"query": {"text": "c"}, "values": {"n": 3}, "upsert": "true"}
        )
        assert upserted.json()["body"] == {"matched": 1}
        removed = await notes.post("/api/db/notes/remove", json={"query": {"n": {"$lt": 5}}})
        assert removed.json()["body"] == {"removed": 2}
        left = await notes.post("/api/db/notes/find", json={})
        assert [d["n"] for d in left.json()["body"]] == [10]
    assert (bolt.host.settings.data_dir / "databases" / "notes.json").is_file()


async def test_apps_cannot_see_each_others_data(bolt: RunningHost) -> None:
    async with await _app_client(bolt, "notes") as notes, await _app_client(bolt, "hello-web") as hello:
        await notes.post("/api/db/shared/insert", json={"object": {"secret": 1}})
        theirs = await hello.post("/api/db/shared/find", json={})
        assert theirs.json()["body"] == []


async def test_db_requires_a_valid_app_token(bolt: RunningHost) -> None:
    missing = await bolt.admin.post("/api/db/notes/find", json={})
    assert missing.status_code == 401 and missing.json()["code"] == errors.APP_TOKEN_MISSING
    async with bolt.client_with(**{"X-Bolt-App-Token": "forged"}) as forged:
        response = await forged.post("/api/db/notes/find", json={})
        assert response.json()["code"] == errors.APP_TOKEN_UNKNOWN


async def test_db_bad_input(bolt: RunningHost) -> None:
    async with await _app_client(bolt, "notes") as notes:
        bad_name = await notes.post("/api/db/$bad/find", json={})
        assert bad_name.json()["code"] == errors.COLLECTION_NAME_INVALID
        bad_op = await notes.post("/api/db/notes/explode", json={})
        assert bad_op.json()["code"] == errors.ENDPOINT_NOT_FOUND
        bad_query = await notes.post("/api/db/notes/find", json={"query": {"n": {"$where": "1"}}})
        assert bad_query.status_code == 400
        no_doc = await notes.post("/api/db/notes/insert", json={"object": "text"})
        assert no_doc.json()["code"] == errors.DB_QUERY_MISSING
        no_query = await notes.post("/api/db/notes/remove", json={})
        assert no_query.json()["code"] == errors.DB_QUERY_MISSING


async def test_drop_collection_and_all(bolt: RunningHost) -> None:
    async with await _app_client(bolt, "notes") as notes:
        await notes.post("/api/db/a/insert", json={"object": {"x": 1}})
        await notes.post("/api/db/b/insert", json={"object": {"x": 2}})
        await notes.delete("/api/db/a")
        assert (await notes.post("/api/db/a/find", json={})).json()["body"] == []
        assert len((await notes.post("/api/db/b/find", json={})).json()["body"]) == 1
        await notes.delete("/api/db")
        assert (await notes.post("/api/db/b/find", json={})).json()["body"] == []


async def test_visibility_and_permissions(bolt: RunningHost, tmp_path: Path) -> None:
    await bolt.admin.post("/api/apps/local", json={"path": "notes"})
    await bolt.admin.post("/api/apps/local", json={"path": "hello-web"})
    await bolt.admin.put("/api/apps/notes", json={"controlledVisibility": True})
    await bolt.admin.post("/api/roles", json={"name": "writers"})
    await bolt.admin.post("/api/users", json={"name": "wes", "password": "wes-password", "roles": ["guest"]})
    visible = lambda r: sorted(a["name"] for a in r.json()["body"])  # noqa: E731
    assert visible(await bolt.admin.get("/api/checks/visible-apps/wes")) == ["hello-web"]
    assert visible(await bolt.admin.get("/api/checks/visible-apps/admin")) == ["hello-web", "notes"]
    ask = {"app": "notes", "permission": "write-notes", "user": "wes"}
    assert (await bolt.admin.post("/api/checks/has-permission", json=ask)).json()["body"]["result"] is False
    granted = await bolt.admin.post(
        "/api/app-roles", json={"app": "notes", "role": "writers", "permissions": ["write-notes"]}
    )
    assert granted.status_code == 201
    await bolt.admin.put("/api/users/wes/roles", json={"roles": ["guest", "writers"]})
    assert visible(await bolt.admin.get("/api/checks/visible-apps/wes")) == ["hello-web", "notes"]
    assert (await bolt.admin.post("/api/checks/has-permission", json=ask)).json()["body"]["result"] is True
    undeclared = {**ask, "permission": "launch-missiles"}
    assert (await bolt.admin.post("/api/checks/has-permission", json=undeclared)).json()["body"]["result"] is False
    async with bolt.client_as("wes", "wes-password") as wes:
        mine = await wes.post("/api/checks/has-permission", json={"app": "notes", "permission": "write-notes"})
        assert mine.json()["body"]["user"] == "wes" and mine.json()["body"]["result"] is True
        others = await wes.get("/api/checks/visible-apps/admin")
        assert others.json()["code"] == errors.NO_ADMIN_RIGHT
        refused = await wes.post("/api/app-roles", json={"app": "notes", "role": "guest"})
        assert refused.json()["code"] == errors.NO_ADMIN_RIGHT
    bad_role = await bolt.admin.post("/api/app-roles", json={"app": "notes", "role": "nope"})
    assert bad_role.json()["code"] == errors.ROLE_NOT_FOUND
    await bolt.admin.delete("/api/apps/notes")
    assert bolt.host.visibility.app_roles("notes") == []


async def test_apps_publish_their_own_events(bolt: RunningHost) -> None:
    seen = []
    bolt.host.events.subscribe(lambda event: seen.append((event.name, event.publisher, event.body)))
    async with await _app_client(bolt, "notes") as notes:
        published = await notes.post("/api/events/note-added", json={"body": {"id": 1}})
        assert published.json()["body"]["publisher"] == "notes"
        bad = await notes.post("/api/events/BAD NAME", json={})
        assert bad.status_code == 400
    await bolt.host.events.drain()
    assert ("note-added", "notes", {"id": 1}) in seen
    anonymous = await bolt.client.post("/api/events/x", json={})
    assert anonymous.json()["code"] == errors.APP_TOKEN_MISSING


@pytest.mark.parametrize("name", ["user-deleted", "app-uninstalled", "app-started", "task-failed", "bolt/app-started"])
async def test_apps_may_not_publish_the_hosts_event_names(bolt: RunningHost, name: str) -> None:
    seen = []
    bolt.host.events.subscribe(lambda event: seen.append(event.name))
    async with await _app_client(bolt, "notes") as notes:
        refused = await notes.post(f"/api/events/{name}", json={"body": {"name": "admin"}})
    assert refused.status_code == 403 and refused.json()["code"] == errors.EVENT_NAME_RESERVED, refused.text
    await bolt.host.events.drain()
    assert name not in seen


def test_a_bare_hook_key_means_the_hosts_event_only() -> None:
    hooks = {"app-installed": "/on-install", "note-added": "/bare", "notes/note-added": "/from-notes"}
    assert hook_route(hooks, Event("app-installed", publisher="bolt")) == "/on-install"
    assert hook_route(hooks, Event("app-installed", publisher="evil")) is None
    assert hook_route(hooks, Event("note-added", publisher="notes")) == "/from-notes"
    assert hook_route(hooks, Event("note-added", publisher="evil")) is None
    assert hook_route({"bolt/app-installed": {"route": "x"}}, Event("app-installed")) == "/x"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/db/$bad/insert", {"object": {"a": 1}}, errors.COLLECTION_NAME_INVALID),
        ("/api/db/_hidden/insert", {"object": {"a": 1}}, errors.COLLECTION_NAME_INVALID),
        ("/api/db/notes/insert", {"object": "text"}, errors.DB_QUERY_MISSING),
        ("/api/db/notes/insert", {"object": [{"a": 1}, 2]}, None),
        ("/api/db/notes/update", {"query": {"n": 1}, "values": "x"}, None),
        ("/api/db/notes/update", {"query": {"n": 1}, "values": {"a": 2}, "upsert": "maybe"}, errors.BAD_REQUEST),
        ("/api/db/notes/update", {"query": {"n": {"$where": "1"}}, "values": {"a": 2}}, None),
        ("/api/db/notes/replace", {"query": {"n": 1}, "object": 5}, None),
        ("/api/db/notes/remove", {}, errors.DB_QUERY_MISSING),
        ("/api/db/notes/remove", {"query": {"n": {"$regex": ".*"}}}, None),
        ("/api/db/notes/explode", {}, errors.ENDPOINT_NOT_FOUND),
    ],
)
async def test_bad_db_input_changes_nothing(bolt: RunningHost, path: str, body: dict, code: int | None) -> None:
    async with await _app_client(bolt, "notes") as notes:
        await notes.post("/api/db/notes/insert", json={"object": {"n": 1}})
        before = await settled_snapshot(bolt.host)
        response = await notes.post(path, json=body)
        assert response.status_code >= 400, response.text
        if code is not None:
            assert response.json()["code"] == code, response.text
        assert await settled_snapshot(bolt.host) == before
        assert [d["n"] for d in (await notes.post("/api/db/notes/find", json={})).json()["body"]] == [1]
