from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from bolt_host import errors
from bolt_host.services.sessions import CLIENT_MAX_FAILURES, FAILURE_WINDOW, MAX_LOCK_SECONDS, LoginThrottle
from bolt_host.testing import RunningHost, running_host


async def _make_user(bolt: RunningHost, name: str = "bob", password: str = "bob-password-1", roles=None) -> None:
    response = await bolt.admin.post(
        "/api/users", json={"name": name, "password": password, "roles": roles or ["guest"]}
    )
    assert response.status_code == 201, response.text


async def test_anonymous_is_refused_on_reads(bolt: RunningHost) -> None:
    response = await bolt.client.get("/api/users")
    assert response.status_code == 401
    assert response.json()["code"] == errors.NOT_LOGGED_IN


async def test_basic_auth_admin_can_create_and_list_users(bolt: RunningHost) -> None:
    await _make_user(bolt)
    names = [u["name"] for u in (await bolt.admin.get("/api/users")).json()["body"]]
    assert names == ["admin", "bob"]
    assert all("passwordHash" not in u for u in (await bolt.admin.get("/api/users")).json()["body"])


async def test_bad_basic_password_fails_closed(bolt: RunningHost) -> None:
    async with bolt.client_as("admin", "wrong-password") as wrong:
        response = await wrong.get("/api/users/@current")
    assert response.status_code == 401
    assert response.json()["code"] == errors.LOGIN_FAILED


async def test_no_admin_right_is_337_and_changes_nothing(bolt: RunningHost) -> None:
    await _make_user(bolt)
    async with bolt.client_as("bob", "bob-password-1") as bob:
        response = await bob.post("/api/users", json={"name": "eve", "password": "eve-password-1"})
        assert response.status_code == 403
        assert response.json()["code"] == errors.NO_ADMIN_RIGHT
        assert (await bob.delete("/api/users/admin")).json()["code"] == errors.NO_ADMIN_RIGHT
    assert bolt.host.users.get("eve") is None
    assert bolt.host.users.get("admin") is not None


async def test_cookie_session_writes_follow_the_cross_origin_rule(bolt: RunningHost) -> None:
    """Go's CrossOriginProtection model: a browser page of another origin (another site, or another
    port of this machine: same-site) is refused; a client that is no browser, a page of this origin
    and the X-CSRF-Token from login pass."""
    login = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    assert login.status_code == 200
    body = login.json()["body"]
    assert "bolt_session" in login.cookies
    me = await bolt.client.get("/api/users/@current")
    assert me.json()["body"]["name"] == "admin"
    own = str(bolt.client.base_url).rstrip("/")
    refused_headers = (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": own},  # the fetch metadata is what counts
        {"Origin": "http://evil.example"},
        {"Origin": own + ":8081"},  # another port of this machine: an older browser's same-site page
        {"Origin": "null"},
        {"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": "not-the-token"},  # a wrong token never falls back
    )
    for headers in refused_headers:
        refused = await bolt.client.post("/api/users", json={"name": "carl", "password": "carl-password"},
                                         headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == errors.CSRF_FAILED, headers
    assert bolt.host.users.get("carl") is None
    passing_headers = (
        {},  # curl with a cookie jar: not a browser
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": own},
        {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": body["csrfToken"]},
    )
    for number, headers in enumerate(passing_headers):
        name = f"carl{number}"
        allowed = await bolt.client.post("/api/users", json={"name": name, "password": "carl-password"},
                                         headers=headers)
        assert allowed.status_code == 201, headers
        assert bolt.host.users.get(name) is not None


async def test_login_issues_a_new_session_id_each_time(bolt: RunningHost) -> None:
    first = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    old_cookie = first.cookies["bolt_session"]
    second = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    assert second.cookies["bolt_session"] != old_cookie
    assert bolt.host.sessions.get(old_cookie) is None


async def test_user_token_works_and_logout_revokes_it(bolt: RunningHost) -> None:
    login = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    token = login.json()["body"]["token"]
    async with bolt.client_with(**{"X-Bolt-User-Token": token}) as tokened:
        assert (await tokened.get("/api/users/@current")).json()["body"]["name"] == "admin"
        assert (await tokened.post("/api/users/logout")).json()["code"] == 0
        after = await tokened.get("/api/users/@current")
    assert after.status_code == 401


async def test_forged_user_token_is_refused(bolt: RunningHost) -> None:
    login = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    token = login.json()["body"]["token"]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    async with bolt.client_with(**{"X-Bolt-User-Token": forged}) as client:
        response = await client.get("/api/users/@current")
    assert response.status_code == 401


async def test_bare_user_name_header_is_not_trusted(bolt: RunningHost) -> None:
    async with bolt.client_with(**{"X-Bolt-User-Name": "admin"}) as client:
        response = await client.get("/api/users")
    assert response.status_code == 401


async def test_unknown_app_token_is_113(bolt: RunningHost) -> None:
    async with bolt.client_with(**{"X-Bolt-App-Token": "nope"}) as client:
        response = await client.get("/api/users")
    assert response.json()["code"] == errors.APP_TOKEN_UNKNOWN


async def test_login_errors_do_not_reveal_which_names_exist(bolt: RunningHost) -> None:
    unknown = await bolt.client.post("/api/users/login", json={"name": "ghost", "password": "whatever-1"})
    wrong = await bolt.client.post("/api/users/login", json={"name": "admin", "password": "whatever-1"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["error"] == wrong.json()["error"]
    assert unknown.json()["errorUserMessage"] == wrong.json()["errorUserMessage"]


async def test_repeated_failed_logins_lock_the_name_out(bolt: RunningHost) -> None:
    for _ in range(5):
        await bolt.client.post("/api/users/login", json={"name": "admin", "password": "bad-password"})
    locked = await bolt.client.post("/api/users/login", json={"name": "admin", "password": bolt.admin_password})
    assert locked.status_code == 429
    assert locked.json()["code"] == errors.RATE_LIMITED
    assert int(locked.headers["retry-after"]) > 0


async def test_change_password_ends_old_sessions(bolt: RunningHost) -> None:
    await _make_user(bolt)
    async with bolt.client_as("bob", "bob-password-1") as bob:
        bad = await bob.post("/api/users/change-password", json={"password": "bob-password-1", "newPassword": "short"})
        assert bad.status_code == 400
        done = await bob.post(
            "/api/users/change-password", json={"password": "bob-password-1", "newPassword": "bob-password-2"}
        )
        assert done.json()["code"] == 0
        assert (await bob.get("/api/users/@current")).status_code == 401
    async with bolt.client_as("bob", "bob-password-2") as bob:
        assert (await bob.get("/api/users/@current")).json()["body"]["name"] == "bob"


async def test_roles_and_last_admin_protection(bolt: RunningHost) -> None:
    roles = (await bolt.admin.get("/api/roles")).json()["body"]
    assert {r["name"]: r["isAdmin"] for r in roles} == {"admin": True, "guest": False}
    refused = await bolt.admin.delete("/api/users/admin")
    assert refused.status_code == 400
    missing = await bolt.admin.delete("/api/users/nobody")
    assert missing.json()["code"] == errors.USER_NOT_FOUND


async def test_generated_admin_password_is_private_and_works(tmp_path: Path) -> None:
    async with running_host(tmp_path, admin_password="") as bolt:
        secret_file = tmp_path / "initial-admin-password"
        password = secret_file.read_text().strip()
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
        assert password == bolt.host.generated_admin_password
        async with bolt.client_as("admin", password) as admin:
            assert (await admin.get("/api/users/@current")).json()["body"]["isAdmin"] is True
        stored = bolt.host.users.get("admin")["passwordHash"]
        assert password not in stored and stored.startswith("scrypt$")


def test_password_checks_give_scrypt_memory_back() -> None:
    """Each scrypt run takes 16 MiB; without malloc_trim glibc kept it after the second run.

    Measured in a fresh interpreter: in this one earlier tests already ran scrypt."""
    import ctypes.util
    import subprocess
    import sys

    libc = ctypes.util.find_library("c")
    if not libc or not hasattr(ctypes.CDLL(libc), "malloc_trim"):
        pytest.skip("not glibc: nothing to trim")
    script = (
        "import psutil\n"
        "from bolt_host.services.passwords import hash_password, verify_password\n"
        "before = psutil.Process().memory_info().rss\n"
        "stored = hash_password('correct horse')\n"
        "for attempt in range(3):\n"
        "    verify_password(f'wrong {attempt}', stored)\n"
        "print(psutil.Process().memory_info().rss - before)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    grown = int(run.stdout)
    assert grown < 8 * 1024 * 1024, f"{grown / 2**20:.1f} MiB kept after four scrypt runs"


async def test_role_isadmin_takes_booleans_and_their_strings_only(bolt: RunningHost) -> None:
    cases = (("r1", "false", False), ("r2", "true", True), ("r3", True, True), ("r4", None, False))
    for name, given, expected in cases:
        response = await bolt.admin.post("/api/roles", json={"name": name, "isAdmin": given})
        assert response.status_code == 201, response.text
        assert response.json()["body"]["isAdmin"] is expected
        assert bolt.host.users.role(name)["isAdmin"] is expected
    for name, body in (("b1", {"isAdmin": "yes"}), ("b2", {"isAdmin": 1}), ("b3", {"description": {"x": 1}})):
        refused = await bolt.admin.post("/api/roles", json={"name": name, **body})
        assert refused.status_code == 400 and refused.json()["code"] == errors.BAD_REQUEST, refused.text
        assert bolt.host.users.role(name) is None


async def test_a_user_made_with_role_false_string_is_no_admin(bolt: RunningHost) -> None:
    await bolt.admin.post("/api/roles", json={"name": "helpers", "isAdmin": "false"})
    await _make_user(bolt, "hal", roles=["helpers"])
    async with bolt.client_as("hal", "bob-password-1") as hal:
        assert (await hal.get("/api/users/@current")).json()["body"]["isAdmin"] is False
        refused = await hal.post("/api/users", json={"name": "eve", "password": "eve-password-1"})
        assert refused.json()["code"] == errors.NO_ADMIN_RIGHT


async def test_create_user_checks_the_types_of_display_name_and_email(bolt: RunningHost) -> None:
    for extra in ({"displayName": {"a": 1}}, {"email": ["a@b.c"]}, {"email": "not-an-address"}, {"displayName": 7}):
        refused = await bolt.admin.post("/api/users", json={"name": "tess", "password": "tess-password", **extra})
        assert refused.status_code == 400 and refused.json()["code"] == errors.BAD_REQUEST, extra
        assert bolt.host.users.get("tess") is None
    made = await bolt.admin.post(
        "/api/users", json={"name": "tess", "password": "tess-password", "displayName": "Tess", "email": "t@ex.org"}
    )
    assert made.json()["body"]["displayName"] == "Tess" and made.json()["body"]["email"] == "t@ex.org"


def _client_at(bolt: RunningHost, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=bolt.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _login(client: httpx.AsyncClient, password: str) -> httpx.Response:
    return await client.post("/api/users/login", json={"name": "admin", "password": password})


async def test_a_guesser_cannot_lock_the_admin_out_from_another_address(bolt: RunningHost) -> None:
    async with _client_at(bolt, "10.0.0.66") as attacker, _client_at(bolt, "10.0.0.7") as office:
        for _ in range(5):
            assert (await _login(attacker, "guess-password")).status_code == 401
        locked = await _login(attacker, bolt.admin_password)
        assert locked.status_code == 429 and locked.json()["code"] == errors.RATE_LIMITED
        assert (await _login(office, bolt.admin_password)).status_code == 200


async def test_one_address_trying_many_names_is_locked_out(bolt: RunningHost) -> None:
    async with _client_at(bolt, "10.0.0.99") as sprayer, _client_at(bolt, "10.0.0.7") as office:
        answers = [(await sprayer.post("/api/users/login", json={"name": f"u{i}", "password": "pw-123456"}))
                   for i in range(CLIENT_MAX_FAILURES)]  # fmt: skip
        assert {a.status_code for a in answers} == {401}, "no name was tried five times, yet the client is locked"
        assert (await _login(sprayer, bolt.admin_password)).status_code == 429
        assert (await _login(office, bolt.admin_password)).status_code == 200


def test_lock_outs_grow_but_stay_capped() -> None:
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    waits = []
    for _ in range(12):
        for _ in range(5):
            throttle.failed("k")
        waits.append(throttle.retry_after("k"))
        now[0] += waits[-1] + 1
    assert waits[:3] == [30.0, 60.0, 120.0]
    assert max(waits) == MAX_LOCK_SECONDS and waits[-1] == MAX_LOCK_SECONDS


def test_throttle_memory_stays_bounded() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_keys=500, clock=lambda: now[0])
    for i in range(5000):
        throttle.failed(f"client:10.1.{i}|user:random-{i}", f"client:10.1.{i}")
    assert len(throttle) <= 500
    throttle.failed("client:10.9.9.9|user:admin", limit=1)
    assert throttle.retry_after("client:10.9.9.9|user:admin") > 0, "the newest lock was dropped"
    now[0] += MAX_LOCK_SECONDS + FAILURE_WINDOW
    throttle.failed("one-more")
    assert len(throttle) == 1, "idle keys outlived their window"


def test_a_forwarded_for_header_does_not_change_who_the_throttle_sees(tmp_path: Path) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told not to: a local guesser could
    name a new client address with every guess and never be locked out."""
    from tests.servers import live_host

    with live_host(tmp_path / "data") as live:
        answers = [
            httpx.post(
                f"{live.url}/api/users/login",
                json={"name": "admin", "password": f"guess-{attempt}"},
                headers={"X-Forwarded-For": f"198.51.100.{attempt}"},
                timeout=30,
            ).status_code
            for attempt in range(7)
        ]
    assert answers[:5] == [401] * 5 and answers[5:] == [429, 429], answers
