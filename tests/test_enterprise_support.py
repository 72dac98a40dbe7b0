"""Shared by the enterprise tests (no tests here): a real host served by uvicorn on
127.0.0.1, and small HTTP helpers that set it up through the core API."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bolt_host.app import create_app, server_options
from bolt_host.host import Host
from bolt_host.testing import settings_for_tests
from tests.helpers import async_wait_until

HERE = Path(__file__).parent
FAKE_DEVICES_DIR = HERE / "plugins_enterprise"
PASSWORD = "password-for-tests-1"


@dataclass
class ServedHost:
    url: str
    host: Host
    admin_password: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client of its own (its own cookie jar)."""
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)

    def admin(self) -> httpx.AsyncClient:
        return self.client(auth=("admin", self.admin_password))

    def user(self, name: str, password: str = PASSWORD) -> httpx.AsyncClient:
        return self.client(auth=(name, password))


@contextlib.asynccontextmanager
async def served_host(data_dir: Path, **overrides: Any) -> AsyncIterator[ServedHost]:
    """Serve a fresh host with uvicorn on an ephemeral loopback port; always stopped at the end."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = settings_for_tests(data_dir, port=port, **overrides)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **server_options(settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        await async_wait_until(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn start")
        if not server.started:
            raise RuntimeError("the host did not start; see the log above")
        yield ServedHost(settings.url, app.state.host, settings.admin_password or "")
    finally:
        server.should_exit = True
        await async_wait_until(lambda: not thread.is_alive(), timeout=30, what="uvicorn stop")
        sock.close()


# set-up through the core API -------------------------------------------------------
async def add_user(admin: httpx.AsyncClient, name: str, roles: tuple[str, ...] = ("guest",)) -> None:
    response = await admin.post("/api/users", json={"name": name, "password": PASSWORD, "roles": list(roles)})
    assert response.status_code == 201, response.text


async def add_role(admin: httpx.AsyncClient, name: str) -> None:
    response = await admin.post("/api/roles", json={"name": name})
    assert response.status_code == 201, response.text


async def set_roles(admin: httpx.AsyncClient, name: str, roles: list[str]) -> None:
    response = await admin.put(f"/api/users/{name}/roles", json={"roles": roles})
    assert response.status_code == 200, response.text


async def install(admin: httpx.AsyncClient, path: str, controlled: bool = False) -> dict[str, Any]:
    """Install a sample app; ``controlled`` makes it visible only to admins and grantees."""
    response = await admin.post("/api/apps/local", json={"path": path})
    assert response.status_code == 201, response.text
    if controlled:
        changed = await admin.put(f"/api/apps/{path}", json={"controlledVisibility": True})
        assert changed.status_code == 200, changed.text
    return response.json()["body"]


async def visible_apps(admin: httpx.AsyncClient, user: str) -> set[str]:
    """Bolt's check: the apps ``user`` may see."""
    response = await admin.get(f"/api/checks/visible-apps/{user}")
    assert response.status_code == 200, response.text
    return {app["name"] for app in response.json()["body"]}


async def store_login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/store/apis/user/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def asset_id_of(assets: list[dict[str, Any]], name: str) -> str:
    return next(a["id"] for a in assets if a["name"] == name or a.get("appName") == name)
