"""Run a real uvicorn server on 127.0.0.1 (ephemeral port) in a background thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from bolt_host.app import create_app, server_options
from bolt_host.host import Host
from bolt_host.testing import ADMIN_PASSWORD, settings_for_tests
from tests.helpers import free_port, wait_until


@dataclass
class LiveServer:
    app: Starlette
    url: str
    server: uvicorn.Server

    @property
    def host(self) -> Host:
        return self.app.state.host

    @property
    def admin_auth(self) -> tuple[str, str]:
        return ("admin", ADMIN_PASSWORD)


@contextlib.contextmanager
def serve(app: Starlette, port: int = 0, timeout: float = 30.0, **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` until the block ends; the lifespan (host start/stop) runs as in production.
    ``config``: more uvicorn settings (``timeout_keep_alive``, say)."""
    host = getattr(app.state, "host", None)  # a bolt host, or any other Starlette app (a test's peer)
    options = server_options(host.settings) if host is not None else {"proxy_headers": False}
    options.update(config)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=timeout, what="uvicorn start")
        if not server.started:
            raise RuntimeError("uvicorn did not start (see the log above)")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield LiveServer(app=app, url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=10)


@contextlib.contextmanager
def live_host(data_dir: Path, plugins: Any = (), **overrides: Any) -> Iterator[LiveServer]:
    """A full host (test settings) behind a real uvicorn server."""
    port = overrides.pop("port", None) or free_port()
    settings = settings_for_tests(data_dir, port=port, **overrides)
    app = create_app(settings, plugins=plugins)
    with serve(app, port=port) as live:
        yield live


def private_ports() -> tuple[int, int]:
    """App ports away from the default pool, which other hosts on this machine draw from too: an app
    that cannot bind its port while another server answers there would pass a TCP readiness check."""
    first = free_port()
    return first, first + 20


@contextlib.contextmanager
def live_host_with_app(base: Path, app_folder: Path, **overrides: Any) -> Iterator[LiveServer]:
    """A live host whose local repository holds ``app_folder``, installed and started; on the way
    out the host stops it, and anything left is killed by pid."""
    import os
    import shutil

    import httpx
    import psutil

    name = app_folder.name
    shutil.copytree(app_folder, base / "repo" / name)
    pids: list[int] = []
    try:
        with live_host(base / "data", local_repo=base / "repo", port_range=private_ports(), **overrides) as server:
            with httpx.Client(base_url=server.url, auth=server.admin_auth, timeout=60) as admin:
                assert admin.post("/api/apps/local", json={"path": name}).status_code == 201
                started = admin.post("/api/apps/start", json={"name": name})
                assert started.status_code == 200, started.text
            pids.append(started.json()["body"]["pid"])
            yield server
    finally:
        for pid in pids:
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                os.kill(pid, 9)
