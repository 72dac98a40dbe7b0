"""Enterprise store users and sessions through a real server: login, logout, register,
exists, and the CSRF rules for cookie-authenticated writes."""

from __future__ import annotations

from pathlib import Path

from tests.test_enterprise_support import PASSWORD, ServedHost, add_user, install, served_host, store_login

LOGIN = "/store/apis/user/login"
USER_INSTALL = "/store/apps/user/install"


async def _hello_web_id(served: ServedHost) -> str:
    async with served.admin() as admin:
        await install(admin, "hello-web")
        await add_user(admin, "bob")
        assets = (await admin.get("/store/apis/v1/assets/webapp")).json()
    return assets[0]["id"]


async def test_session_login_sets_a_scoped_cookie_and_logout_ends_it(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served:
        asset = await _hello_web_id(served)
        async with served.client() as bob:
            assert (await bob.post(USER_INSTALL, data={"asset": asset})).status_code == 401
            login = await bob.post(LOGIN, json={"username": "bob", "password": PASSWORD})
            assert login.status_code == 200
            assert login.json()["error"] is False and login.json()["message"] == "User bob logged in successfully"
            cookie = login.headers["set-cookie"]
            assert cookie.startswith("JSESSIONID=")
            assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and "Path=/store" in cookie
            installed = await bob.post(USER_INSTALL, data={"asset": asset})
            assert installed.status_code == 200 and installed.json()["error"] is False
            session_id = bob.cookies["JSESSIONID"]
            out = await bob.get("/store/apis/user/logout")
            assert out.json() == {"error": False, "message": "User bob logged out successfully"}
            assert served.host.sessions.get(session_id) is None
        async with served.client(headers={"Cookie": f"JSESSIONID={session_id}"}) as replayed:
            after = await replayed.post(USER_INSTALL, data={"asset": asset})
        assert after.status_code == 401 and after.json()["error"] is True


async def test_login_accepts_a_form_body_and_issues_a_new_session_each_time(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served, served.client() as client:
        first = await client.post(LOGIN, data={"username": "admin", "password": served.admin_password})
        assert first.status_code == 200 and first.json()["isAdmin"] is True
        old = client.cookies["JSESSIONID"]
        await store_login(client, "admin", served.admin_password)
        assert client.cookies["JSESSIONID"] != old
        assert served.host.sessions.get(old) is None


async def test_wrong_password_is_a_failure_that_does_not_reveal_names(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served, served.client() as client:
        wrong = await client.post(LOGIN, json={"username": "admin", "password": "not-the-password"})
        ghost = await client.post(LOGIN, json={"username": "ghost", "password": "not-the-password"})
        assert wrong.status_code == ghost.status_code == 401
        assert wrong.json() == ghost.json() == {"error": True, "message": "Invalid user name or password"}
        assert "JSESSIONID" not in client.cookies
        missing = await client.post(LOGIN, json={"username": "admin"})
        assert missing.status_code == 401 and missing.json()["error"] is True


async def test_repeated_failed_logins_are_throttled(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served, served.client() as client:
        for _ in range(5):
            await client.post(LOGIN, json={"username": "admin", "password": "bad-password"})
        locked = await client.post(LOGIN, json={"username": "admin", "password": served.admin_password})
        assert locked.status_code == 429 and locked.json()["error"] is True
        assert int(locked.headers["retry-after"]) > 0


async def test_exists_answers_and_is_rate_limited_like_login(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served, served.client() as client:
        taken = await client.post("/store/apis/user/exists", json={"username": "admin"})
        assert taken.status_code == 200 and taken.json()["exists"] is True and taken.json()["error"] is False
        free = await client.post("/store/apis/user/exists", data={"username": "nobody"})
        assert free.json()["exists"] is False
        for _ in range(3):
            await client.post("/store/apis/user/exists", json={"username": "someone"})
        limited = await client.post("/store/apis/user/exists", json={"username": "admin"})
        assert limited.status_code == 429
        assert limited.json()["error"] is True and "exists" not in limited.json()
        assert int(limited.headers["retry-after"]) > 0


async def test_register_is_for_admins_and_creates_a_host_user(tmp_path: Path) -> None:
    body = {"username": "carol", "password": PASSWORD}
    async with served_host(tmp_path) as served:
        async with served.client() as anonymous:
            refused = await anonymous.post("/store/apis/user/register", json=body)
            assert refused.status_code == 401 and refused.json()["error"] is True
        async with served.admin() as admin:
            await add_user(admin, "bob")
        async with served.user("bob") as bob:
            refused = await bob.post("/store/apis/user/register", json=body)
            assert refused.status_code == 403 and refused.json()["error"] is True
        assert served.host.users.get("carol") is None
        async with served.client() as admin:
            await store_login(admin, "admin", served.admin_password)
            created = await admin.post("/store/apis/user/register", json=body)
            assert created.status_code == 201
            assert created.json() == {"error": False, "message": "User carol registered", "showWorkflowMsg": False}
            again = await admin.post("/store/apis/user/register", json=body)
            assert again.status_code == 409 and again.json()["error"] is True
            short = await admin.post("/store/apis/user/register", json={"username": "dave", "password": "x"})
            assert short.status_code == 400
        assert served.host.users.get("carol")["roles"] == ["guest"]
        async with served.client() as carol:
            await store_login(carol, "carol")


async def test_browser_cookie_writes_follow_the_cross_origin_rule(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served:
        asset = await _hello_web_id(served)
        async with served.client() as bob:
            token = (await store_login(bob, "bob"))["csrfToken"]
            same_origin = {"Origin": served.url}
            wrong = await bob.post(USER_INSTALL, data={"asset": asset}, headers={**same_origin, "X-CSRF-Token": "no"})
            assert wrong.status_code == 403 and "X-CSRF-Token" in wrong.json()["message"]
            assert served.host.state["enterprise"].subscriptions.all() == []
            page = await bob.post(USER_INSTALL, data={"asset": asset}, headers=same_origin)
            assert page.status_code == 200  # a page of this origin needs no token
            allowed = await bob.post(
                USER_INSTALL, data={"asset": asset}, headers={**same_origin, "X-CSRF-Token": token}
            )
            assert allowed.status_code == 200
            fetch = {"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": token}
            assert (await bob.post(USER_INSTALL, data={"asset": asset}, headers=fetch)).status_code == 200
            # a client that is not a browser (curl, the seed's examples) sends neither header
            assert (await bob.post(USER_INSTALL, data={"asset": asset})).status_code == 200


async def test_cross_origin_writes_are_refused_even_with_credentials(tmp_path: Path) -> None:
    async with served_host(tmp_path) as served:
        asset = await _hello_web_id(served)
        async with served.client() as bob:
            token = (await store_login(bob, "bob"))["csrfToken"]
            for headers in (
                {"Origin": "http://evil.example"},
                {"Sec-Fetch-Site": "cross-site"},
                {"Sec-Fetch-Site": "same-site"},
                {"Sec-Fetch-Site": "same-site", "X-CSRF-Token": token[::-1]},
            ):
                refused = await bob.post(USER_INSTALL, data={"asset": asset}, headers=headers)
                assert refused.status_code == 403, headers
        async with served.user("bob") as basic:
            refused = await basic.post(USER_INSTALL, data={"asset": asset}, headers={"Origin": "http://evil.example"})
            assert refused.status_code == 403
        async with served.client() as client:
            login = await client.post(
                LOGIN, json={"username": "bob", "password": PASSWORD}, headers={"Origin": "http://evil.example"}
            )
            assert login.status_code == 403 and "JSESSIONID" not in client.cookies
        assert served.host.state["enterprise"].subscriptions.all() == []
