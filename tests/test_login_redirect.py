"""A logged-out browser opening /x/<app>/ is sent to the dashboard's log-in and back; API clients keep 401."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import ADMIN_PASSWORD
from tests.servers import LiveServer, live_host
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, PageProblems, expect, pytestmark  # noqa: F401

BROWSER_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO / "hello-web", repo / "hello-web")
    with live_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=5.0) as server:
        with httpx.Client(base_url=server.url, auth=server.admin_auth, timeout=60) as admin:
            assert admin.post("/api/apps/local", json={"path": "hello-web"}).status_code == 201
            pid = admin.post("/api/apps/start", json={"name": "hello-web"}).json()["body"]["pid"]
        try:
            yield server
        finally:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_page_load_without_credentials_is_redirected_to_the_login(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as anonymous:
        page = anonymous.get("/x/hello-web/?tab=visits", headers={"Accept": BROWSER_HTML})
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/?next=%2Fx%2Fhello-web%2F%3Ftab%3Dvisits"
        api = anonymous.get("/x/hello-web/api/info", headers={"Accept": "application/json"})
        assert api.status_code == 401 and api.json()["code"] == errors.NOT_LOGGED_IN
        bare = anonymous.get("/x/hello-web/")  # curl's */* is not a browser page load
        assert bare.status_code == 401
        post = anonymous.post("/x/hello-web/", headers={"Accept": BROWSER_HTML})
        assert post.status_code == 401
    with httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30) as admin:
        page = admin.get("/x/hello-web/", headers={"Accept": BROWSER_HTML})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_the_browser_logs_in_and_lands_on_the_app_page(live: LiveServer) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(base_url=live.url)
            page: Any = context.new_page()
            problems = PageProblems(page)
            page.goto("/x/hello-web/")
            expect(page.locator("#login-view")).to_be_visible()
            expect(page.locator("#login-hint")).to_have_text("Log in to open /x/hello-web/.")
            page.fill("#login-name", "admin")
            page.fill("#login-password", ADMIN_PASSWORD)
            page.click("#login-submit")
            page.wait_for_url(f"{live.url}/x/hello-web/")
            expect(page.locator("body")).to_contain_text("Hello")
            # the app's own page may miss a favicon (404); no script of the dashboard may fail
            assert [m for m in problems.messages if not m.endswith("404 (Not Found)")] == []
        finally:
            browser.close()
