"""A user token's user is remembered between requests, and forgotten as soon as it may differ.

Each test uses its token for several requests first (so the later ones are answered from
what :class:`TokenUsers` remembers), then changes what the token stands for through the API:
the next request must see the change.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bolt_host import errors
from bolt_host.services.sessions import Sessions
from bolt_host.services.token_users import MAX_TOKENS, TokenUsers
from bolt_host.services.users import Users
from bolt_host.storage import Database
from bolt_host.testing import RunningHost


async def _token(bolt: RunningHost, name: str, password: str) -> str:
    login = await bolt.client.post("/api/users/login", json={"name": name, "password": password})
    assert login.status_code == 200, login.text
    return str(login.json()["body"]["token"])


async def _second_admin(bolt: RunningHost) -> httpx.AsyncClient:
    made = await bolt.admin.post("/api/users", json={"name": "bob", "password": "bob-password-1", "roles": ["admin"]})
    assert made.status_code == 201, made.text
    return bolt.client_with(**{"X-Bolt-User-Token": await _token(bolt, "bob", "bob-password-1")})


async def test_a_role_taken_away_takes_the_admin_right_at_once(bolt: RunningHost) -> None:
    async with await _second_admin(bolt) as bob:
        for _ in range(3):
            assert (await bob.get("/api/apps/local")).status_code == 200  # an admin's read
        demoted = await bolt.admin.put("/api/users/bob/roles", json={"roles": ["guest"]})
        assert demoted.status_code == 200, demoted.text
        refused = await bob.get("/api/apps/local")
        assert refused.json()["code"] == errors.NO_ADMIN_RIGHT
        assert (await bob.get("/api/users/@current")).json()["body"]["roles"] == ["guest"]


async def test_a_deleted_user_s_token_stops_working(bolt: RunningHost) -> None:
    async with await _second_admin(bolt) as bob:
        for _ in range(3):
            assert (await bob.get("/api/users/@current")).status_code == 200
        assert (await bolt.admin.delete("/api/users/bob")).status_code == 200
        assert (await bob.get("/api/users/@current")).status_code == 401


async def test_logout_ends_a_token_used_many_times(bolt: RunningHost) -> None:
    token = await _token(bolt, "admin", bolt.admin_password)
    async with bolt.client_with(**{"X-Bolt-User-Token": token}) as tokened:
        for _ in range(3):
            assert (await tokened.get("/api/users/@current")).json()["body"]["name"] == "admin"
        assert (await tokened.post("/api/users/logout")).json()["code"] == 0
        assert (await tokened.get("/api/users/@current")).status_code == 401


def _services(tmp_path: Path) -> tuple[Database, Sessions, Users]:
    db = Database(tmp_path / "db.json")
    users = Users(db)
    users.ensure_default_roles()
    users.create("carol", "carol-password-1", roles=["admin"])
    return db, Sessions(db, b"k" * 32), users


def test_a_remembered_token_ends_when_its_session_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, sessions, users = _services(tmp_path)
    session = sessions.create("carol")
    token = sessions.issue_token(session)
    known = TokenUsers(db, sessions, users)
    found = known.user_for(token)
    assert found is not None and found[0]["name"] == "carol" and found[1] is True
    writes = db.revision
    monkeypatch.setattr(time, "time", lambda: session.expires + 1)  # the clock alone says it ended
    assert known.user_for(token) is None
    assert db.revision == writes
    db.close()


def test_callers_get_copies_and_the_remembered_tokens_stay_bounded(tmp_path: Path) -> None:
    db, sessions, users = _services(tmp_path)
    known = TokenUsers(db, sessions, users)
    token = sessions.issue_token(sessions.create("carol"))
    first = known.user_for(token)
    assert first is not None
    first[0]["roles"] = ["changed by a handler"]
    again = known.user_for(token)
    assert again is not None and again[0]["roles"] == ["admin"]
    assert known.user_for("not.a-token") is None
    tokens = [sessions.issue_token(sessions.create("carol")) for _ in range(MAX_TOKENS + 5)]
    for each in tokens:
        assert known.user_for(each) is not None
    assert len(known._known) <= MAX_TOKENS
    db.close()
