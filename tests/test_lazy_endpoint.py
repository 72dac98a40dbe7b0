"""``lazy_endpoint``: a route handler named by ``"module:function"``, imported at its first request.

A real Starlette app over httpx's ASGI transport; the handlers live in a module this test
writes, so "not imported yet" is checked on ``sys.modules`` itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from bolt_host.lazy import resolved_endpoint
from bolt_host.plugin import lazy_endpoint

HANDLERS = '''
from starlette.responses import JSONResponse

async def hello(request):
    """Say hello to the caller."""
    return JSONResponse({"hello": request.path_params["name"]})

def blocking(request):
    return JSONResponse({})
'''


@pytest.fixture
def handlers(tmp_path: Path) -> Iterator[str]:
    name = f"lazy_handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(HANDLERS)
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


async def test_the_handlers_module_is_imported_at_the_first_request(handlers: str) -> None:
    endpoint = lazy_endpoint(f"{handlers}:hello")
    app = Starlette(routes=[Route("/hello/{name}", endpoint, methods=["GET"])])
    assert handlers not in sys.modules
    assert endpoint.__name__ == "hello" and endpoint.__module__ == handlers

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        first = await client.get("/hello/ada")
        assert handlers in sys.modules
        second = await client.get("/hello/bob")
    assert (first.status_code, first.json()) == (200, {"hello": "ada"})
    assert (second.status_code, second.json()) == (200, {"hello": "bob"})
    # the OpenAPI document's view: the real handler, with its docstring
    assert resolved_endpoint(endpoint).__doc__ == "Say hello to the caller."


async def test_a_target_that_is_not_an_async_function_fails_its_first_request(handlers: str) -> None:
    with pytest.raises(ValueError, match="module:function"):
        lazy_endpoint(handlers)
    endpoint = lazy_endpoint(f"{handlers}:blocking")
    with pytest.raises(TypeError, match="not an async function"):
        await endpoint(None)
