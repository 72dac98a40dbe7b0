"""Web security across every route of the running host (core and store backends).

* Request body caps: a declared body over the cap is a 413 on every route, before any
  handler runs; a chunked one never becomes a server error and is a 413 where read.
* CSRF: a forged cross-site write riding the session cookies (the host's and the store's)
  without the CSRF token gets no further than an anonymous caller would, on every route.
* A new session id at every login (session fixation), for the host and the store.
* Constant-time comparison of secrets: exercised through a spy on ``hmac.compare_digest``,
  and a source scan that finds ``==`` on secret-looking values.
* Security headers: on every response, and the HTML ones on every HTML page.
* Path traversal: every path parameter and every name/path body field, with encoded and
  plain ``..`` payloads and absolute paths: no file outside is read, written or installed.
"""

from __future__ import annotations

import ast
import contextlib
import hmac
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.sessions import LoginThrottle
from bolt_host.testing import ADMIN_PASSWORD
from bolt_host.web.meta import iter_endpoints
from tests.servers import LiveServer, live_host
from tests.test_auth_matrix import AUTH_CODES, EXPECTED, PARAMS

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
ROOT = Path(__file__).resolve().parent.parent
BODY_CAP = 1024
UPLOAD_CAP = 4096
SENTINEL = "TRAVERSAL-SENTINEL-5a1c"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

pytestmark = pytest.mark.timeout(180)


@dataclass
class Site:
    live: LiveServer
    base: Path
    routes: list[tuple[str, str]]
    token: str  # admin user token

    def admin(self) -> httpx.Client:
        """An admin client whose user token is renewed when a logout under test has ended it."""
        sessions = self.live.host.sessions
        current = {"token": self.token}

        def fresh_token(request: httpx.Request) -> None:
            if sessions.user_for_token(current["token"]) is None:
                current["token"] = sessions.issue_token(sessions.create("admin"))
            request.headers["X-Bolt-User-Token"] = current["token"]

        return httpx.Client(base_url=self.live.url, timeout=30, event_hooks={"request": [fresh_token]})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("websec")
    repo = base / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    (base / "sentinel.txt").write_text(SENTINEL)
    outside = base / "outside-app"
    outside.mkdir()
    (outside / "package.json").write_text(
        json.dumps({"name": "outside", "version": "6.6.6", "description": SENTINEL, "bolt": {"main": "x.py"}})
    )
    (outside / "README.md").write_text(SENTINEL)
    with live_host(base / "data", local_repo=repo, max_body_bytes=BODY_CAP, max_upload_bytes=UPLOAD_CAP) as live:
        login = httpx.post(live.url + "/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        routes = [(method, path) for path, method, _ in iter_endpoints(live.app.routes)]
        yield Site(live, base, routes, login.json()["body"]["token"])


def _url(template: str, **values: str) -> str:
    merged = {**PARAMS, "name": "echo", **values}

    def fill(part: str) -> str:
        if part.startswith("{") and part.endswith("}"):
            return merged.get(part[1:-1].split(":")[0], "x")
        return part

    return "/".join(fill(part) for part in template.split("/"))


# body caps ------------------------------------------------------------------------------
def test_a_declared_body_over_the_cap_is_413_on_every_route(site: Site) -> None:
    wrong = []
    with httpx.Client(base_url=site.live.url, timeout=30) as client:
        for method, path in site.routes:
            url = _url(path)
            cap = site.live.host.body_limit_for(url)
            response = client.request(method, url, content=b"x" * (cap + 1), headers={"content-type": "text/plain"})
            if response.status_code != 413:
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:100]}")
    assert not wrong, "bodies over the cap got through:\n  " + "\n  ".join(wrong)


def test_a_chunked_body_over_the_cap_is_never_a_server_error(site: Site) -> None:
    read_by_core = {
        ("POST", "/api/users"),
        ("POST", "/api/users/login"),
        ("POST", "/api/roles"),
        ("POST", "/api/apps/local"),
        ("POST", "/api/apps/start"),
        ("PUT", "/api/apps/{name}"),
        ("POST", "/api/app-roles"),
    }
    wrong = []

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 512 + 1):
            yield b"{" * 512

    with site.admin() as admin:
        for method, path in site.routes:
            if method not in BODY_METHODS:
                continue
            url = _url(path)
            site.live.host.login_throttle = LoginThrottle()
            response = admin.request(method, url, content=chunks(site.live.host.body_limit_for(url) + 1))
            if response.status_code >= 500 or ((method, path) in read_by_core and response.status_code != 413):
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
    assert not wrong, "\n  ".join(["chunked bodies over the cap:", *wrong])


# CSRF -----------------------------------------------------------------------------------
def test_forged_cross_site_writes_with_session_cookies_get_nowhere(site: Site) -> None:
    """A browser page elsewhere posting with the user's cookies, without the CSRF token."""
    url = site.live.url
    host_login = httpx.post(url + "/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
    store_login = httpx.post(url + "/store/apis/user/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    cookies = {"bolt_session": host_login.cookies["bolt_session"]}
    if store_login.status_code == 200 and "JSESSIONID" in store_login.cookies:
        cookies["JSESSIONID"] = store_login.cookies["JSESSIONID"]
    forged = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors",
              "X-Forwarded-Host": "market.example"}  # the market's proxy header, checked before the user
    wrong = []
    with httpx.Client(base_url=url, cookies=cookies, headers=forged, timeout=30) as browser:
        for method, path in site.routes:
            if method not in BODY_METHODS or path.startswith("/x/"):
                continue  # the proxy: documented in SECURITY.md (SameSite=Strict cookie, no host credentials)
            rule = EXPECTED.get((method, path))
            if rule is None or rule[0] == "+":
                continue  # open to anonymous callers anyway (login, logout, ...)
            response = browser.request(method, _url(path), json={"name": "ghost", "id": "ghost"})
            if response.status_code not in (401, 403):
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
            elif "errorTraceId" in response.text and response.json().get("code") not in AUTH_CODES:
                wrong.append(f"{method} {path}: refused for another reason: {response.text[:120]}")
    assert not wrong, "forged writes that got past the session check:\n  " + "\n  ".join(wrong)


def test_the_same_write_with_the_csrf_token_goes_through(site: Site) -> None:
    login = httpx.post(site.live.url + "/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
    csrf = login.json()["body"]["csrfToken"]
    with httpx.Client(base_url=site.live.url, cookies=login.cookies, timeout=30) as browser:
        refused = browser.post("/api/roles", json={"name": "csrf-a"}, headers={"Sec-Fetch-Site": "same-site"})
        assert refused.status_code == 403
        assert browser.post("/api/roles", json={"name": "csrf-a"}, headers={"X-CSRF-Token": csrf}).status_code == 201
        forged = csrf[:-1] + ("y" if csrf.endswith("x") else "x")  # one character off, never the token itself
        wrong = browser.post("/api/roles", json={"name": "csrf-b"}, headers={"X-CSRF-Token": forged})
        assert wrong.status_code == 403


# sessions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "cookie", "body"),
    [
        ("/api/users/login", "bolt_session", {"name": "admin", "password": ADMIN_PASSWORD}),
        ("/store/apis/user/login", "JSESSIONID", {"username": "admin", "password": ADMIN_PASSWORD}),
    ],
)
def test_every_login_gets_a_new_session_id(site: Site, path: str, cookie: str, body: dict[str, str]) -> None:
    url = site.live.url
    if ("POST", path) not in site.routes:
        pytest.skip(f"{path} is not served (its backend is not loaded)")
    planted = "attacker-chosen-session-id-0123456789abcdef"
    first = httpx.post(url + path, json=body, cookies={cookie: planted})
    assert first.status_code == 200, first.text
    issued = first.cookies[cookie]
    assert issued != planted and len(issued) >= 32
    second = httpx.post(url + path, json=body, cookies={cookie: issued})
    assert second.cookies[cookie] not in (issued, planted)
    # the session the first login made ended with the second login
    assert site.live.host.sessions.get(issued) is None
    assert site.live.host.sessions.get(second.cookies[cookie]) is not None
    assert "httponly" in second.headers["set-cookie"].lower() and "samesite=strict" in second.headers[
        "set-cookie"
    ].lower()


# constant-time comparison ------------------------------------------------------------------
def test_secrets_are_compared_in_constant_time(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    url = site.live.url
    login = httpx.post(url + "/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
    body = login.json()["body"]
    assert calls, "the password check goes through hmac.compare_digest"

    def checked(action: Any) -> bool:
        calls.clear()
        action()
        return bool(calls)

    token = body["token"]
    assert checked(lambda: httpx.get(url + "/api/apps", headers={"X-Bolt-User-Token": token})), "user token"
    cookies = {"bolt_session": login.cookies["bolt_session"]}
    assert checked(
        lambda: httpx.post(url + "/api/roles", json={"name": "ct"}, cookies=cookies, headers={"X-CSRF-Token": "x"})
    ), "csrf token"
    app_token = site.live.host.tokens.issue("echo")
    assert checked(lambda: httpx.get(url + "/api/apps", headers={"X-Bolt-App-Token": app_token})), "app token"
    site.live.host.tokens.revoke("echo")


# ``==`` on values named like secrets, in the host and every backend; each allowed one says why.
ALLOWED_EQUALITIES = {
    "Query().digest ==": "a lookup by the SHA-256 of the secret: timing says nothing about the secret",
    "self.app_for(token) != app_name": "compares app names, not tokens",
    "self._tokens.app_for(": "compares app names, not tokens",
    "len(digest) ==": "a length check",
    "digest != download['sha512']": "a package checksum, public, not a secret",
    "Query().id == token_id": "token ids (jti) are not secrets: the token's signature is checked in constant time",
    "row.get('jws') == token": "the caller's own signed receipt, checked again in full by verify(); reported",
}
SECRET_WORDS = re.compile(r"(token|csrf|password|secret|digest|signature|hmac|api_?key)", re.I)


def _identifiers(node: ast.AST) -> Iterator[str]:
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            yield child.id
        elif isinstance(child, ast.Attribute):
            yield child.attr


def test_no_plain_equality_on_secrets_in_the_source() -> None:
    found = []
    for folder in ("bolt_host", "plugins"):
        for source in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if not isinstance(node, ast.Compare) or not any(isinstance(o, ast.Eq | ast.NotEq) for o in node.ops):
                    continue
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) for o in operands):
                    continue
                if not any(SECRET_WORDS.search(name) for o in operands for name in _identifiers(o)):
                    continue
                text = ast.unparse(node)
                if not any(allowed in text for allowed in ALLOWED_EQUALITIES):
                    found.append(f"{source.relative_to(ROOT)}:{node.lineno}: {text}")
    assert not found, "compare secrets with hmac.compare_digest:\n  " + "\n  ".join(found)


# headers ---------------------------------------------------------------------------------
def test_security_headers_on_every_response_and_html_page(site: Site) -> None:
    wrong = []
    with site.admin() as admin:
        for method, path in site.routes:
            if method != "GET" or path == "/api/events/stream":
                continue
            with admin.stream("GET", _url(path, path="index.html")) as response:
                headers = response.headers
                if headers.get("x-content-type-options") != "nosniff" or "referrer-policy" not in headers:
                    wrong.append(f"GET {path}: no nosniff/referrer-policy")
                if path.startswith("/public/"):  # an app's files: sandboxed, never the host's origin
                    served = response.status_code == 200
                    if served and "sandbox" not in headers.get("content-security-policy", "").split(";")[0]:
                        wrong.append(f"GET {path}: a public file without the sandbox")
                elif path.startswith("/x/"):
                    continue  # the app's own page, its own policy
                elif headers.get("content-type", "").startswith("text/html"):
                    csp = headers.get("content-security-policy", "")
                    if headers.get("x-frame-options") != "DENY" or "frame-ancestors 'none'" not in csp:
                        wrong.append(f"GET {path}: HTML without frame protection ({headers})")
                    if "script-src 'self'" not in csp:
                        wrong.append(f"GET {path}: HTML without a script-src policy")
        page = admin.get("/dashboard/")
        assert page.headers["content-type"].startswith("text/html")
    assert not wrong, "\n  ".join(wrong)


def test_a_forged_logout_ends_nothing(site: Site) -> None:
    with httpx.Client(base_url=site.live.url, timeout=30) as browser:
        login = browser.post("/api/users/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        csrf = login.json()["body"]["csrfToken"]
        forged = browser.post("/api/users/logout", headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403 and forged.json()["code"] == errors.CSRF_FAILED
        assert browser.get("/api/users/@current").status_code == 200  # still logged in
        assert browser.post("/api/users/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert browser.get("/api/users/@current").status_code == 401


def test_a_public_page_runs_sandboxed_and_a_proxied_page_keeps_its_own_scripts(site: Site) -> None:
    """A public file is served from the host's origin: without the sandbox, a page (or an SVG)
    there would run with the admin's session.  An app's page through /x/ gets no dashboard
    policy that would block its inline scripts."""
    with site.admin() as admin:
        assert admin.post("/api/apps/local", json={"path": "static-docs"}).status_code in (201, 401)
        page = admin.get("/public/static-docs/index.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("sandbox allow-scripts")
        assert "allow-same-origin" not in page.headers["content-security-policy"]
        assert page.headers["access-control-allow-origin"] == "*"
        assert admin.post("/api/apps/local", json={"path": "notes"}).status_code in (201, 401)
        started = admin.post("/api/apps/start", json={"name": "notes"})
        assert started.status_code == 200, started.text
        try:
            notes = admin.get("/x/notes/")
            assert notes.headers["content-type"].startswith("text/html") and "<script>" in notes.text
            assert "script-src 'self'" not in notes.headers.get("content-security-policy", "")
        finally:
            admin.post("/api/apps/stop", json={"name": "notes"})


@pytest.mark.parametrize("host", ["evil.example", "evil.example:4000", "127.0.0.1.nip.io", "[::2]:80"])
def test_a_host_header_the_server_does_not_answer_for_is_refused(site: Site, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends Host: evil.example."""
    for path in ("/-/health", "/api/users/login", "/app-store/api/v2/market/hash", "/public/static-docs/index.html"):
        answer = httpx.get(site.live.url + path, headers={"Host": host})
        assert answer.status_code == 421, (path, answer.text)
        body = answer.json()
        assert body.get("code") == errors.HOST_NOT_ALLOWED or body.get("success") is False, (path, body)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:4000", "LOCALHOST", "[::1]:4000"])
def test_loopback_host_names_are_served_on_any_port(site: Site, host: str) -> None:
    assert httpx.get(site.live.url + "/-/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_names_more_hosts_or_any() -> None:
    from bolt_host.config import Settings, settings_from_env

    assert "bolt.example" in Settings(public_url="https://bolt.example/").host_names
    assert "apps.lan" in settings_from_env({"BOLT_ALLOWED_HOSTS": "apps.lan, other.lan"}).host_names
    assert Settings(allowed_hosts=("*",)).host_names is None
    assert "evil.example" not in Settings(host="0.0.0.0").host_names


# path traversal -----------------------------------------------------------------------------
TRAVERSALS = [
    "%2e%2e",
    "..%2f..%2f..%2fsentinel.txt",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsentinel.txt",
    "..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2fetc%2fpasswd",
    "..%5c..%5csentinel.txt",
    "x%00.json",
]
BODY_TRAVERSALS = ["../../sentinel.txt", "../outside-app", "/etc/passwd", "../../../../../../etc", "..", "a/../../b"]
BODY_FIELDS = ("name", "path", "filename", "file", "id", "app", "appName", "collection", "package", "source", "type")


def _leak(text: str) -> str | None:
    if SENTINEL in text:
        return "the sentinel outside the data dir"
    if "root:x:0:0" in text:
        return "/etc/passwd"
    return None


def _outside_files(base: Path) -> set[str]:
    return {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.relative_to(base).parts[0] not in ("data", "repo")
    }


def test_path_traversal_on_every_path_parameter_and_name_field(site: Site) -> None:
    before = _outside_files(site.base)
    problems = []
    with site.admin() as admin:
        for method, path in site.routes:
            params = re.findall(r"{([^}:]+)(?::[^}]+)?}", path)
            urls = [_url(path, **{param: payload}) for param in params for payload in TRAVERSALS]
            urls += [_url(path) + "/" + payload for payload in TRAVERSALS[:3] if path.endswith(":path}")]
            for url in urls:
                site.live.host.login_throttle = LoginThrottle()
                with contextlib.suppress(httpx.TimeoutException):
                    response = admin.request(method, url, json={"name": "ghost"} if method in BODY_METHODS else None)
                    leak = _leak(response.text)
                    if leak or response.status_code >= 500:
                        problems.append(f"{method} {url}: {response.status_code} {leak or response.text[:100]}")
            if method not in BODY_METHODS or path.startswith("/x/"):
                continue
            for payload in BODY_TRAVERSALS:
                body = dict.fromkeys(BODY_FIELDS, payload)
                response = admin.request(method, _url(path), json=body)
                leak = _leak(response.text)
                if leak or response.status_code >= 500:
                    problems.append(f"{method} {path} body {payload!r}: {response.status_code} {leak or response.text}")
        installed = [a["name"] for a in admin.get("/api/apps").json()["body"]]
    assert "outside" not in installed, "an app outside the local repository was installed"
    assert (site.base / "sentinel.txt").read_text() == SENTINEL
    assert _outside_files(site.base) == before, "files outside the data dir changed"
    assert not problems, "\n  ".join(["path traversal:", *problems[:40]])
