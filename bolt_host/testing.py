"""A real host for tests, in a few lines.

    async with running_host(tmp_path, plugins=[my_plugin]) as bolt:
        response = await bolt.admin.get("/api/users/@current")

``bolt.client`` is anonymous, ``bolt.admin`` logs in as the bootstrap admin
with HTTP Basic.  Both drive the real Starlette app through httpx's ASGI
transport; the host's start-up and shut-down run as they do under uvicorn.
Also usable by plugin authors (see docs/plugins.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from bolt_host.app import create_app
from bolt_host.config import Settings
from bolt_host.host import Host

ADMIN_PASSWORD = "admin-password-for-tests"


@dataclass
class RunningHost:
    host: Host
    app: Starlette
    client: httpx.AsyncClient
    admin: httpx.AsyncClient
    admin_password: str

    def client_as(self, name: str, password: str, **headers: str) -> httpx.AsyncClient:
        """Another client on the same app, with HTTP Basic for ``name``."""
        return _client(self.app, auth=(name, password), headers=headers)

    def client_with(self, **headers: str) -> httpx.AsyncClient:
        return _client(self.app, headers=headers)


def settings_for_tests(data_dir: Path, **overrides: Any) -> Settings:
    # httpx's ASGI transport sends "Host: testserver"
    base = Settings(data_dir=data_dir, admin_password=ADMIN_PASSWORD, autostart=False, allowed_hosts=("testserver",))
    return base.with_overrides(**overrides)


def _client(app: Starlette, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


@contextlib.asynccontextmanager
async def running_host(
    data_dir: Path, *, plugins: Iterable[object] = (), **overrides: Any
) -> AsyncIterator[RunningHost]:
    """Start a host on ``data_dir`` and yield clients for it; always stops it."""
    settings = settings_for_tests(data_dir, **overrides)
    app = create_app(settings, plugins=plugins)
    host: Host = app.state.host
    await host.start()
    password = settings.admin_password or ADMIN_PASSWORD
    try:
        async with _client(app) as client, _client(app, auth=("admin", password)) as admin:
            yield RunningHost(host, app, client, admin, password)
    finally:
        await host.stop()
