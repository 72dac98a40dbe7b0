"""Hostile input on every route of a running host: deep JSON, over-long names.

Each answer must be the API's own error (an envelope or the backend's format) with a 4xx
status, never a 500 or a traceback.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bolt_host import errors
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.testing import ADMIN_PASSWORD
from bolt_host.web.meta import iter_endpoints
from tests.servers import LiveServer, live_host
from tests.test_web_security import _url

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DEEP_JSON = b"[" * 100_000
JSON_TYPE = {"content-type": "application/json"}
LONG_NAME = "a" * 300
LONG_PATH = "b" * 5_000

pytestmark = pytest.mark.timeout(180)


@dataclass
class Site:
    live: LiveServer
    routes: list[tuple[str, str]]
    repo: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.live.url, auth=("admin", ADMIN_PASSWORD), timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("hostile")
    repo = base / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    with live_host(base / "data", local_repo=repo) as live:
        routes = [(method, path) for path, method, _ in iter_endpoints(live.app.routes)]
        public = live.host.settings.data_dir / "public" / "echo"
        public.mkdir(parents=True)
        (public / "index.html").write_text("<p>echo</p>")
        yield Site(live, routes, repo)


def _server_errors(responses: list[tuple[str, httpx.Response]]) -> list[str]:
    return [
        f"{what}: {response.status_code} {response.text[:160]}"
        for what, response in responses
        if response.status_code >= 500 or "Traceback" in response.text
    ]


# deep JSON --------------------------------------------------------------------------------
def test_deeply_nested_json_is_never_a_server_error_on_any_route(site: Site) -> None:
    answers = []
    with site.admin() as admin:
        for method, path in site.routes:
            if method not in BODY_METHODS or path.startswith("/x/"):
                continue
            response = admin.request(method, _url(path), content=DEEP_JSON, headers=JSON_TYPE)
            answers.append((f"{method} {path}", response))
    wrong = _server_errors(answers)
    assert not wrong, "deep JSON became a server error:\n  " + "\n  ".join(wrong)


def test_deeply_nested_json_is_the_apis_bad_request(site: Site) -> None:
    with site.admin() as admin:
        response = admin.post("/api/roles", content=DEEP_JSON, headers=JSON_TYPE)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == errors.BAD_REQUEST and "errorTraceId" in body
    assert "JSON" in body["error"]["message"]


# over-long names ----------------------------------------------------------------------------
def test_over_long_names_in_paths_are_never_a_server_error(site: Site) -> None:
    answers = []
    with site.admin() as admin:
        for method, path in site.routes:
            if "{" not in path:
                continue
            url = _url(path, **{key: LONG_NAME for key in ("name", "app", "path", "collection", "id", "user")})
            answers.append((f"{method} {path}", admin.request(method, url, json={})))
    wrong = _server_errors(answers)
    assert not wrong, "over-long names became server errors:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("url", [f"/dashboard/{LONG_NAME}", f"/public/echo/{LONG_NAME}", f"/public/{LONG_NAME}/x"])
def test_over_long_static_paths_are_404(site: Site, url: str) -> None:
    assert httpx.get(site.live.url + "/public/echo/index.html", timeout=30).status_code == 200
    response = httpx.get(site.live.url + url, timeout=30)
    assert response.status_code == 404, response.text[:200]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", [LONG_PATH, f"echo/{LONG_NAME}", "/".join([LONG_NAME[:200]] * 25)])
@pytest.mark.parametrize("endpoint", ["/api/apps/local", "/api/apps/local-package", "/api/apps/local-readme"])
def test_an_over_long_local_path_is_the_apis_own_error(site: Site, endpoint: str, path: str) -> None:
    with site.admin() as admin:
        response = admin.post(endpoint, json={"path": path})
    assert 400 <= response.status_code < 500, response.text[:200]
    body = response.json()
    assert "errorTraceId" in body and body["code"] not in (errors.UNKNOWN, 0)
    assert len(response.text) < 1000, "the answer does not echo the whole path"


@pytest.mark.parametrize("filename", [LONG_NAME, "/tmp/" + LONG_PATH])
def test_robot_install_local_file_with_an_over_long_name_is_its_400(site: Site, filename: str) -> None:
    if ("POST", "/app_store/services/install_local_file") not in site.routes:
        pytest.skip("the robot backend is not loaded")
    with site.admin() as admin:
        response = admin.post("/app_store/services/install_local_file", json={"filename": filename})
    assert response.status_code == 400, response.text[:200]
    assert "filename must name a regular file" in response.text
