"""The dashboard's files, its security headers, and the system route (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.testing import RunningHost
from bolt_host.web.dashboard import STATIC_DIR

pytestmark = pytest.mark.timeout(30)


async def test_front_page_redirects_to_the_dashboard(bolt: RunningHost) -> None:
    response = await bolt.client.get("/")
    assert response.status_code == 307 and response.headers["location"] == "/dashboard/"
    assert (await bolt.client.get("/dashboard")).headers["location"] == "/dashboard/"


async def test_dashboard_page_is_served_with_a_strict_csp(bolt: RunningHost) -> None:
    page = await bolt.client.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-cache"
    html = page.text
    # no inline scripts or handlers, no other origins
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert "http://" not in html and "https://" not in html
    for src in re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', html):
        asset = await bolt.client.get(src)
        assert asset.status_code == 200, src


async def test_every_static_file_is_served_with_its_type(bolt: RunningHost) -> None:
    expected = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    assert {p.suffix for p in files} <= set(expected)
    for path in files:
        response = await bolt.client.get(f"/dashboard/{path.name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(expected[path.suffix]), path.name
        assert response.content == path.read_bytes()


async def test_js_modules_import_only_local_files() -> None:
    for path in STATIC_DIR.glob("*.js"):
        source = path.read_text()
        for target in re.findall(r'from\s+"([^"]+)"', source):
            assert target.startswith("./") and (STATIC_DIR / target[2:]).is_file(), (path.name, target)
        assert "eval(" not in source and "new Function" not in source
        assert "http://" not in source and "https://" not in source.replace('"https://"', "")


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/../app.py",
        "/dashboard/%2e%2e/app.py",
        "/dashboard/.hidden",
        "/dashboard/a//b",
    ],
)
async def test_unknown_or_escaping_paths_are_404(bolt: RunningHost, path: str) -> None:
    response = await bolt.client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == errors.ENDPOINT_NOT_FOUND


async def test_system_facts_for_admins(bolt: RunningHost) -> None:
    response = await bolt.admin.get("/api/system")
    assert response.status_code == 200
    info = response.json()["body"]
    assert info["version"] == bolt.host.version and info["uptime"] >= 0
    assert 0 <= info["cpu"]["percent"] <= 100 and info["cpu"]["count"] >= 1
    assert info["memory"]["total"] > info["memory"]["available"] > 0
    assert info["disk"]["total"] > 0 and Path(info["disk"]["path"]) == bolt.host.settings.data_dir
    assert info["apps"] == {"installed": 0, "running": 0}
    assert (await bolt.client.get("/api/system")).status_code == 401
