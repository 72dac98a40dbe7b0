"""The dashboard in Chromium: errored apps with their reason, the live "N of M running" summary,
the Install button once installed, and a 420 px screen where nothing overflows."""

# ruff: noqa: F811  (the browser tests' fixtures are imported by name and then asked for by name)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.servers import LiveServer
from tests.test_dashboard_browser import (  # noqa: F401  (fixtures)
    SCREENSHOTS,
    admin_http,
    app_row,
    browser,
    expect,
    live,
    log_in,
    page,
    pytestmark,
    registry,
)

FAILER = "import sys\nprint('config file missing: /etc/failer.conf', flush=True)\nsys.exit(3)\n"


def _add_failer(live: LiveServer) -> None:
    folder = Path(live.host.settings.local_repo) / "failer"
    folder.mkdir()
    (folder / "main.py").write_text(FAILER)
    package = {"name": "failer", "version": "1.0.0", "keywords": ["bolt-app"], "bolt": {"main": "main.py"}}
    (folder / "package.json").write_text(json.dumps(package))


def _one_running_one_errored(live: LiveServer) -> None:
    """hello-web installed and running, failer installed and errored (it exits 3 during its start)."""
    _add_failer(live)
    with admin_http(live) as client:
        for path in ("hello-web", "failer"):
            assert client.post("/api/apps/local", json={"path": path}).status_code == 201
        assert client.post("/api/apps/start", json={"name": "hello-web"}).status_code == 200
        assert client.post("/api/apps/start", json={"name": "failer"}).json()["code"] != 0


def test_an_errored_app_shows_its_reason_and_the_summary_follows_the_table(page: Any, live: LiveServer) -> None:
    _one_running_one_errored(live)
    log_in(page)
    row = app_row(page, "failer")
    expect(row.locator("td.status .status-pill")).to_have_text("errored")
    expect(row.locator("td.status .reason")).to_have_text("exited with code 3 during start")
    expect(page.locator("#apps-summary")).to_have_text("1 of 2 running, 1 errored")
    with admin_http(live) as client:
        assert client.post("/api/apps/stop", json={"name": "hello-web"}).status_code == 200
    expect(page.locator("#apps-summary")).to_have_text("0 of 2 running, 1 errored")  # with the table, live
    expect(app_row(page, "hello-web").locator("td.status")).to_have_text("stopped")
    row.locator("button[data-action=start]").click()  # fails again: the error is shown, still errored
    expect(page.locator(".toast.error")).to_contain_text("exited with code 3 during start")
    expect(row.locator("td.status .status-pill")).to_have_text("errored")
    assert [m for m in page.problems.messages if "500" not in m] == []  # type: ignore[attr-defined]


def test_the_install_button_is_disabled_once_installed(page: Any, live: LiveServer) -> None:
    log_in(page)
    expect(page.locator("#topbar")).to_be_visible()
    page.goto("/dashboard/#/install/local")
    page.locator('#package-list li[data-package="notes"] button').click()
    button = page.locator("#install-button")
    expect(button).to_have_text("Install")
    button.click()
    expect(page.locator("#install-done")).to_contain_text("Installed notes 1.0.0")
    expect(button).to_be_disabled()
    expect(button).to_have_text("Installed")
    assert live.host.apps.get("notes") is not None


OVERFLOW_CHECK = """() => {
    const width = window.innerWidth;
    const outside = [...document.querySelectorAll("button, a, input, select, h1, h2, td, th, nav, header, pre")]
        .filter((el) => el.offsetParent !== null && !el.closest("table.data:not(#apps-table)"))
        .map((el) => [el, el.getBoundingClientRect()])
        .filter(([, r]) => r.width > 0 && (r.left < -1 || r.right > width + 1))
        .map(([el, r]) => `${el.tagName}#${el.id}.${el.className} ${Math.round(r.left)}..${Math.round(r.right)}`);
    return {scroll: document.documentElement.scrollWidth, width, outside};
}"""


def _fits(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"narrow-{name}.png"), full_page=True)
    found = page.evaluate(OVERFLOW_CHECK)
    assert found["scroll"] <= found["width"], (name, found)
    assert found["outside"] == [], (name, found)


def test_every_page_fits_a_420_px_screen(browser: Any, live: LiveServer) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _one_running_one_errored(live)
    with admin_http(live) as client:
        task = client.post("/api/apps/install-task", json={"name": "ticker"}).json()["body"]
    context = browser.new_context(base_url=live.url, viewport={"width": 420, "height": 860})
    try:
        page = context.new_page()
        page.goto("/")
        expect(page.locator("#login-view")).to_be_visible()
        _fits(page, "login")
        log_in(page)
        expect(app_row(page, "hello-web").locator("td.status")).to_have_text("running")
        expect(app_row(page, "failer").locator(".status-pill")).to_have_text("errored")
        expect(page.locator("#system-cpu")).to_be_visible()
        _fits(page, "apps")
        for button in app_row(page, "hello-web").locator("td.actions > *").all():
            expect(button).to_be_visible()  # wrapped onto the screen, none cut off
        page.goto("/dashboard/#/install/local")
        page.locator('#package-list li[data-package="hello-web"] button').click()
        expect(page.locator("#package-readme h1")).to_be_visible()
        _fits(page, "install")
        page.goto("/dashboard/#/logs/hello-web")
        expect(page.locator("#log-output")).to_contain_text("hello-web ready on")
        _fits(page, "logs")
        page.goto(f"/dashboard/#/tasks/{task['id']}")
        expect(page.locator(f'#tasks-body tr[data-task="{task["id"]}"]')).to_have_attribute("data-status", "succeeded")
        _fits(page, "tasks")
        page.goto("/dashboard/#/system")
        expect(page.locator("#system-version")).to_have_text(live.host.version)
        _fits(page, "system")
    finally:
        context.close()
        with admin_http(live) as client:
            client.post("/api/apps/stop", json={"name": "hello-web"})
