"""``register_error_formats``: a plugin renders the errors the host answers before routing, on its own paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bolt_host import errors, hookimpl
from bolt_host.app import create_app
from bolt_host.errors import BoltError
from bolt_host.plugins import PluginLoadError
from bolt_host.testing import running_host, settings_for_tests

LIMIT = 4096


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "bytes": len(await request.body())})


async def _explode(request: Request) -> JSONResponse:
    raise RuntimeError("a bug no handler caught")


class Fmt:
    """Claims /fmt/ and answers host-level errors as ``{"ok": false, "status", "why"}``."""

    __name__ = "fmt"

    @hookimpl
    def register_routes(self, host: Any) -> list[Route]:
        return [Route("/fmt/echo", _echo, methods=["POST"]), Route("/fmt/boom", _explode, methods=["GET"]),
                Route("/other/echo", _echo, methods=["POST"])]

    @hookimpl
    def register_error_formats(self, host: Any) -> list[tuple[str, Any]]:
        return [("/fmt/", self.render)]

    @staticmethod
    def render(status: int, err: BoltError) -> dict[str, Any]:
        return {"ok": False, "status": status, "why": err.message}


class Clash:
    __name__ = "clash"

    @hookimpl
    def register_error_formats(self, host: Any) -> list[tuple[str, Any]]:
        return [("/fmt/", Fmt.render)]


class Broken:
    __name__ = "broken"

    @hookimpl
    def register_error_formats(self, host: Any) -> list[tuple[str, Any]]:
        def render(status: int, err: BoltError) -> dict[str, Any]:
            raise ValueError("renderer bug")

        return [("/fmt/", render)]


async def test_a_claimed_prefix_gets_the_plugins_format_for_host_level_errors(tmp_path: Path) -> None:
    async with running_host(tmp_path, plugins=[Fmt()], max_body_bytes=LIMIT) as bolt:
        fine = await bolt.client.post("/fmt/echo", content=b"x" * LIMIT)
        assert fine.json() == {"ok": True, "bytes": LIMIT}

        declared = await bolt.client.post("/fmt/echo", content=b"x" * (LIMIT + 1))
        assert declared.status_code == 413
        assert declared.json() == {"ok": False, "status": 413,
                                   "why": f"Request body is over the limit of {LIMIT} bytes"}

        crashed = await bolt.client.get("/fmt/boom")
        assert crashed.status_code == 500
        assert crashed.json() == {"ok": False, "status": 500, "why": "Internal error"}

        elsewhere = await bolt.client.post("/other/echo", content=b"x" * (LIMIT + 1))
        assert elsewhere.status_code == 413
        assert elsewhere.json()["code"] == errors.PAYLOAD_TOO_LARGE and "errorTraceId" in elsewhere.json()


async def test_a_failing_renderer_falls_back_to_the_bolt_envelope(tmp_path: Path) -> None:
    class Routes:
        __name__ = "routes"

        @hookimpl
        def register_routes(self, host: Any) -> list[Route]:
            return [Route("/fmt/echo", _echo, methods=["POST"])]

    async with running_host(tmp_path, plugins=[Routes(), Broken()], max_body_bytes=LIMIT) as bolt:
        answer = await bolt.client.post("/fmt/echo", content=b"x" * (LIMIT + 1))
        assert answer.status_code == 413
        assert answer.json()["code"] == errors.PAYLOAD_TOO_LARGE


def test_a_prefix_claimed_twice_fails_start_up_naming_both(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError) as failure:
        create_app(settings_for_tests(tmp_path), plugins=[Fmt(), Clash()])
    message = str(failure.value)
    assert "/fmt/" in message and "'fmt'" in message and "'clash'" in message
