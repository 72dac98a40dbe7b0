"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real host.

Skipped (with the reason) when ``/usr/bin/chromium`` or the ``playwright`` package is
missing, and failed instead when ``BOLT_REQUIRE_ALL_TOOLS=1``; `.ci/run` installs both.
Screenshots of the main pages go to ``artifacts/screenshots/`` (git-ignored), kept by CI
as artifacts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import requires_tool
from tests.registry_server import RegistryServer
from tests.servers import LiveServer, live_host

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE_README = """# evil-readme

<script>window.__pwned = "script"</script>
<img src="x" onerror="window.__pwned = 'img'">

[click me](javascript:window.__pwned='link') and [fine](https://example.org/docs)

| a | b |
|---|---|
| <b>bold?</b> | `<i>code</i>` |
"""

try:
    from playwright import sync_api as playwright_sync
except ImportError:  # the marks below skip (or, when every tool is required, fail) the tests
    playwright_sync = None
pytestmark = [
    pytest.mark.timeout(180),
    requires_tool(playwright_sync, "the playwright package is not installed (pip install -e '.[test]')"),
    requires_tool(CHROMIUM.exists(), "/usr/bin/chromium is missing (apt-get install chromium)"),
]
if playwright_sync is not None:
    expect = playwright_sync.expect
    expect.set_options(timeout=20_000)
EXPECTED_HTTP_ERRORS = re.compile(r"Failed to load resource: the server responded with a status of 40[13]")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _kill_leftovers(server: LiveServer) -> None:
    for context in server.host.supervisor.contexts():
        pid = context.get("pid")
        if pid and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        server.publish_tree(BUNDLED_LOCAL_REPO)
        yield server


@pytest.fixture
def live(tmp_path: Path, registry: RegistryServer) -> Iterator[LiveServer]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    evil = repo / "evil-readme"
    evil.mkdir()
    (evil / "package.json").write_text(
        '{"name": "evil-readme", "version": "0.0.1", "keywords": ["bolt-app"], "bolt": {"main": "s.py"}}'
    )
    (evil / "README.md").write_text(HOSTILE_README)
    with live_host(tmp_path / "data", local_repo=repo, registry=registry.url, stop_grace_seconds=5.0) as server:
        try:
            yield server
        finally:
            _kill_leftovers(server)


class PageProblems:
    """Console errors, uncaught exceptions and CSP violations seen by a page."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("pageerror", lambda exc: self.messages.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not EXPECTED_HTTP_ERRORS.search(message.text):
            self.messages.append(f"console: {message.text}")


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.problems = PageProblems(page)  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


def log_in(page: Any, name: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/")
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#login-submit")


def app_row(page: Any, name: str) -> Any:
    return page.locator(f'#apps-body tr[data-app="{name}"]')


def admin_http(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=60)


def test_install_start_read_log_stop_and_remove_an_app(page: Any, live: LiveServer) -> None:
    log_in(page)
    expect(page.locator("#topbar")).to_be_visible()
    expect(page.locator("#who")).to_have_text("admin")
    expect(page.locator("#live-indicator")).to_have_text("live")
    expect(page.locator("#apps-empty")).to_be_visible()

    # install from the local repository, after a preview
    page.click("#nav a[data-view=install]")
    page.locator('#package-list li[data-package="hello-web"] button').click()
    expect(page.locator("#package-facts")).to_contain_text("Hello Web")
    expect(page.locator("#package-readme h1")).to_have_text("hello-web")
    expect(page.locator("#package-readme table").first).to_be_visible()
    expect(page.locator("#install-system")).not_to_be_checked()
    page.click("#install-button")
    expect(page.locator("#install-done")).to_contain_text("Installed hello-web 1.0.0")

    # start it from the apps table
    page.click("#nav a[data-view=apps]")
    row = app_row(page, "hello-web")
    expect(row.locator("td.status")).to_have_text("stopped")
    row.locator("button[data-action=start]").click()
    expect(row.locator("td.status")).to_have_text("running", timeout=30_000)
    port = live.host.supervisor.context("hello-web")["port"]
    expect(row.locator("td.port")).to_have_text(str(port))
    expect(row.locator("a[data-action=open]")).to_have_attribute("href", "/x/hello-web/")
    expect(row.locator("td.instances")).to_have_text("1/1")  # running/wanted
    with admin_http(live) as client:
        assert client.put("/api/apps/hello-web", json={"instances": 2}).status_code == 200
    expect(row.locator("td.instances")).to_have_text("2/2")

    # its log, followed live
    row.locator("a[data-action=logs]").click()
    expect(page).to_have_url(re.compile(r"#/logs/hello-web$"))
    expect(page.locator("#log-output")).to_contain_text("hello-web ready on")
    with admin_http(live) as client:
        assert client.get("/x/hello-web/api/info?from=browser-test").status_code == 200
    expect(page.locator("#log-output")).to_contain_text("from=browser-test")

    # stop, then remove with the confirmation dialog (cancel once, then confirm)
    page.click("#nav a[data-view=apps]")
    row = app_row(page, "hello-web")
    row.locator("button[data-action=stop]").click()
    expect(row.locator("td.status")).to_have_text("stopped", timeout=30_000)
    expect(row.locator("td.instances")).to_have_text("-")
    assert live.host.supervisor.context("hello-web") is None or not live.host.supervisor.is_active("hello-web")
    row.locator("button[data-action=remove]").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-cancel")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    expect(row).to_be_visible()
    row.locator("button[data-action=remove]").click()
    page.click("#confirm-ok")
    expect(app_row(page, "hello-web")).to_have_count(0)
    expect(page.locator("#apps-empty")).to_be_visible()
    assert live.host.apps.get("hello-web") is None
    assert page.problems.messages == []  # type: ignore[attr-defined]


def test_the_apps_table_follows_the_event_stream(page: Any, live: LiveServer) -> None:
    log_in(page)
    expect(page.locator("#live-indicator")).to_have_text("live")
    with admin_http(live) as client:
        assert client.post("/api/apps/local", json={"path": "ticker"}).status_code == 201
        expect(app_row(page, "ticker")).to_be_visible()  # app-installed reached the page
        started = client.post("/api/apps/start", json={"name": "ticker"})
        assert started.status_code == 200, started.text
        expect(app_row(page, "ticker").locator("td.status")).to_have_text("running")
        assert client.post("/api/apps/stop", json={"name": "ticker"}).status_code == 200
        expect(app_row(page, "ticker").locator("td.status")).to_have_text("stopped")
    expect(page.locator("#system-panel")).to_contain_text("bolt-host")
    assert page.problems.messages == []  # type: ignore[attr-defined]


def test_a_serverless_app_offers_open_instead_of_start_and_stop(page: Any, live: LiveServer) -> None:
    log_in(page)
    with admin_http(live) as client:
        assert client.post("/api/apps/local", json={"path": "static-docs"}).status_code == 201
    row = app_row(page, "static-docs")
    expect(row).to_be_visible()
    expect(row.locator("a[data-action=open]")).to_have_attribute("href", "/public/static-docs/index.html")
    expect(row.locator("button[data-action=start]")).to_have_count(0)
    expect(row.locator("button[data-action=stop]")).to_have_count(0)
    expect(row.locator("button[data-action=remove]")).to_have_count(1)
    assert page.problems.messages == []  # type: ignore[attr-defined]


def test_registry_install_shows_a_progress_bar_and_a_task(page: Any, live: LiveServer) -> None:
    log_in(page)
    expect(page.locator("#topbar")).to_be_visible()
    page.goto("/dashboard/#/install/registry")
    page.locator('#package-list li[data-package="notes"] button').click()
    expect(page.locator("#package-readme")).to_be_visible()
    expect(page.locator("#install-system")).not_to_be_checked()
    page.check("#install-system")  # the "system app" choice goes with the install
    page.click("#install-button")
    expect(page.locator("#install-status .progress")).to_be_visible()
    expect(page.locator("#install-done")).to_contain_text("Installed notes 1.0.0")
    with admin_http(live) as client:
        app = client.get("/api/apps/notes").json()["body"]
    assert app["system"] is True and app["source"]["type"] == "registry"

    page.click("#nav a[data-view=tasks]")
    task_row = page.locator("#tasks-body tr").first
    expect(task_row).to_have_attribute("data-status", "succeeded")
    expect(task_row.locator(".progress .label")).to_have_text("100%")
    task_row.locator("a[data-action=log]").click()
    expect(page.locator("#task-log")).to_contain_text("=== installed notes 1.0.0")
    assert page.problems.messages == []  # type: ignore[attr-defined]


def test_a_hostile_readme_is_rendered_harmless(page: Any) -> None:
    """The host renders READMEs with their HTML and sanitizes it (issue 22): scripts are dropped,
    an image keeps only its alt text (nothing is fetched), harmless formatting stays."""
    log_in(page)
    expect(page.locator("#topbar")).to_be_visible()
    page.goto("/dashboard/#/install/local")
    page.locator('#package-list li[data-package="evil-readme"] button').click()
    readme = page.locator("#package-readme")
    expect(readme.locator("h1")).to_have_text("evil-readme")
    expect(readme.locator("td b")).to_have_text("bold?")  # an HTML block inside a table cell renders
    expect(readme.locator("td code")).to_have_text("<i>code</i>")  # code stays code
    assert readme.locator("script, iframe, i").count() == 0
    assert readme.locator("img[src], img[onerror], [onerror], [onclick]").count() == 0
    assert readme.locator("a[href^=javascript]").count() == 0
    expect(readme.locator('a[href="https://example.org/docs"]')).to_have_attribute("rel", re.compile("noopener"))
    assert page.evaluate("window.__pwned") is None


def test_login_failures_and_non_admins(page: Any, live: LiveServer) -> None:
    log_in(page, password="wrong-password")
    expect(page.locator("#login-error")).to_have_text("Invalid user name or password")
    with admin_http(live) as client:
        created = client.post("/api/users", json={"name": "guest1", "password": "guest-password", "roles": []})
        assert created.status_code == 201
    log_in(page, "guest1", "guest-password")
    expect(page.locator("#login-error")).to_contain_text("for admins")
    expect(page.locator("#topbar")).to_be_hidden()
    log_in(page)
    expect(page.locator("#topbar")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login-error")).to_have_text("You are logged out.")
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()


def test_screenshots_of_the_main_pages(page: Any, live: LiveServer) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto("/")
    expect(page.locator("#login-view")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "login.png"))
    with admin_http(live) as client:
        for path in ("hello-web", "notes"):
            assert client.post("/api/apps/local", json={"path": path}).status_code == 201
        assert client.post("/api/apps/start", json={"name": "hello-web"}).status_code == 200
        task = client.post("/api/apps/install-task", json={"name": "ticker"}).json()["body"]
    log_in(page)
    expect(app_row(page, "hello-web").locator("td.status")).to_have_text("running")
    expect(page.locator("#system-cpu")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "apps.png"), full_page=True)
    page.goto("/dashboard/#/install/local")
    page.locator('#package-list li[data-package="hello-web"] button').click()
    expect(page.locator("#package-readme h1")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "install.png"), full_page=True)
    page.goto("/dashboard/#/logs/hello-web")
    expect(page.locator("#log-output")).to_contain_text("hello-web ready on")
    page.screenshot(path=str(SCREENSHOTS / "logs.png"))
    page.goto(f"/dashboard/#/tasks/{task['id']}")
    expect(page.locator(f'#tasks-body tr[data-task="{task["id"]}"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#task-log")).to_contain_text("succeeded")
    page.screenshot(path=str(SCREENSHOTS / "tasks.png"), full_page=True)
    page.goto("/dashboard/#/system")
    expect(page.locator("#system-version")).to_have_text(live.host.version)
    page.screenshot(path=str(SCREENSHOTS / "system.png"), full_page=True)
    with admin_http(live) as client:
        assert client.post("/api/apps/stop", json={"name": "hello-web"}).status_code == 200
    for name in ("login", "apps", "install", "logs", "tasks", "system"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 1000
    assert page.problems.messages == []  # type: ignore[attr-defined]


MARKDOWN_ATTACKS = [
    "<script>alert(1)</script>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    '[x](https://ok.example/" onmouseover="alert(1))',
    '[x](https://ok.example/a"onclick=alert(1))',
    '![x" onerror="alert(1)](https://img.example/x.png)',
    "`<img src=x onerror=alert(1)>`",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "| <svg onload=alert(1)> | b |\n|---|---|\n| c | d |",
    "> <iframe src=//evil.example></iframe>",
    "- <details open ontoggle=alert(1)>",
]


def test_server_rendered_readmes_stay_inert_in_the_browser(page: Any) -> None:
    """What the host's sanitizer emits, parsed by Chromium itself: no active tag or attribute survives."""
    from bolt_host.services.readme_html import ATTRIBUTES, TAGS, render_readme

    page.goto("/dashboard/")
    expect(page.locator("#login-view")).to_be_visible()
    rendered = page.evaluate(
        """(cases) => cases.map((html) => {
            const box = document.createElement("div");
            box.innerHTML = html;
            const tags = [...box.querySelectorAll("*")].map((el) => el.tagName.toLowerCase());
            const attrs = [...box.querySelectorAll("*")].flatMap((el) => [...el.attributes].map((a) => a.name));
            const hrefs = [...box.querySelectorAll("a[href]")].map((a) => a.getAttribute("href"));
            return { tags, attrs, hrefs, text: box.textContent };
        })""",
        [render_readme(source) for source in MARKDOWN_ATTACKS],
    )
    allowed_attrs = set().union(*ATTRIBUTES.values()) | {"rel", "target"}
    for source, result in zip(MARKDOWN_ATTACKS, rendered, strict=True):
        assert set(result["tags"]) <= TAGS, (source, result)
        assert not {"script", "iframe", "svg"} & set(result["tags"]), (source, result)
        assert set(result["attrs"]) <= allowed_attrs, (source, result)
        assert not any(name.startswith("on") for name in result["attrs"]), (source, result)
        for href in result["hrefs"]:
            assert href.startswith("https://") and '"' not in href and " " not in href, (source, href)
    assert "alert(1)" not in rendered[0]["text"]  # a script is dropped with its content
    assert "</code></pre><script>" in rendered[9]["text"]  # inside a code block it is text
    assert page.evaluate("typeof window.alert") == "function"
