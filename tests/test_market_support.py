"""Shared helpers for the market tests (no tests here): a live host with the market's fixture apps."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bolt_host.services.extract import pack_directory
from tests.helpers import wait_until
from tests.servers import LiveServer, live_host

PREFIX = "/app-store/api/v2"
REPO = Path(__file__).parent / "fixtures" / "market" / "repo"
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Market:
    live: LiveServer
    admin: httpx.Client

    @property
    def url(self) -> str:
        return self.live.url + PREFIX

    def client(self, auth: tuple[str, str] | None = None, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth, headers=headers, timeout=60)

    def add_user(self, name: str, password: str = "password-for-tests", admin: bool = False) -> httpx.Client:
        self.live.host.users.create(name, password, roles=["admin"] if admin else None)
        return self.client((name, password))

    def state(self, client: httpx.Client, name: str) -> dict[str, Any] | None:
        body = client.get("/market/state").json()
        for source in body["data"]["user_data"]["sources"].values():
            for row in source["app_state_latest"]:
                if row["status"]["name"] == name:
                    return row["status"]
        return None

    def wait_state(self, client: httpx.Client, name: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            found = self.state(client, name)
            return found if found and found["state"] in states else None

        return wait_until(reached, timeout=timeout, what=f"{name} in {states}")

    def task(self, task_id: str) -> dict[str, Any]:
        return self.live.host.tasks.get(int(task_id))

    def wait_task(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: (t := self.task(task_id)) and t["status"] in TERMINAL and t,
                          timeout=timeout, what=f"task {task_id}")


def copy_repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(REPO, target, dirs_exist_ok=True)
    return target


@contextlib.contextmanager
def market_host(tmp_path: Path, **overrides: Any) -> Iterator[Market]:
    overrides.setdefault("local_repo", copy_repo(tmp_path))
    # A window of its own below the default pool and the ephemeral range, so hosts that other
    # suites run at the same time on this machine do not hand out the same app ports.
    base = random.randrange(10000, 19800, 200)
    overrides.setdefault("port_range", (base, base + 199))
    with live_host(tmp_path / "data", **overrides) as live:
        admin = httpx.Client(base_url=live.url + PREFIX, auth=live.admin_auth, timeout=60)
        try:
            yield Market(live, admin)
        finally:
            admin.close()


def with_version(folder: Path, version: str, target: Path) -> Path:
    """A copy of the app in ``folder`` whose package.json says ``version``."""
    shutil.copytree(folder, target)
    manifest = json.loads((target / "package.json").read_text())
    manifest["version"] = version
    (target / "package.json").write_text(json.dumps(manifest))
    return target


def chart_tarball(tmp_path: Path, name: str = "uploaded-echo", version: str = "2.0.0") -> bytes:
    """An uploadable chart: env-echo renamed, with no required envs."""
    folder = tmp_path / f"src-{name}-{version}"
    shutil.copytree(REPO / "env-echo", folder)
    manifest = json.loads((folder / "package.json").read_text())
    manifest.update(name=name, version=version)
    manifest["bolt"]["envs"] = []
    (folder / "package.json").write_text(json.dumps(manifest))
    return pack_directory(folder, tmp_path / f"{name}-{version}.tgz").read_bytes()


def app_get(market: Market, name: str, path: str = "/env") -> dict[str, Any]:
    """GET an app's page through the host's /x proxy."""
    response = httpx.get(f"{market.live.url}/x/{name}{path}", auth=market.live.admin_auth, timeout=30)
    response.raise_for_status()
    return response.json()
