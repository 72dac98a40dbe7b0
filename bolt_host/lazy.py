"""A module imported on first attribute use, so a heavy dependency costs nothing until it is needed.

    if TYPE_CHECKING:
        import httpx
    else:
        httpx = lazy_module("httpx")

Unlike ``importlib.util.LazyLoader`` it puts nothing in ``sys.modules`` before the
real import, so ``"httpx" in sys.modules`` still tells whether httpx was loaded.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name``; the first attribute read imports it (once, then cached)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy, pickle and inspect probing must not trigger the import
            raise AttributeError(attr)
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    return LazyModule(name)


def lazy_endpoint(target: str) -> Callable[[Any], Awaitable[Any]]:
    """A request handler ``"package.module:function"`` whose module is imported at its first request.

    A route table can name every path and method up front (the host's route checks and the
    auth matrix see them all) while the handlers' modules, and what they import, cost nothing
    until a request for one of them arrives.  The handler must be a coroutine function; the
    OpenAPI document reads its docstring through :func:`resolved_endpoint`.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"lazy_endpoint wants 'module:function', got {target!r}")
    found: list[Callable[[Any], Awaitable[Any]]] = []

    def resolve() -> Callable[[Any], Awaitable[Any]]:
        if not found:
            handler = getattr(importlib.import_module(module_name), attr)
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"{target} is not an async function")
            found.append(handler)
        return found[0]

    async def endpoint(request: Any) -> Any:
        return await resolve()(request)

    endpoint.__module__ = module_name
    endpoint.__name__ = endpoint.__qualname__ = attr
    endpoint.__doc__ = None
    endpoint.resolve = resolve  # type: ignore[attr-defined]
    return endpoint


def resolved_endpoint(endpoint: Any) -> Any:
    """The handler a :func:`lazy_endpoint` stands for (imported now if need be); any other endpoint as it is."""
    resolve = getattr(endpoint, "resolve", None)
    return resolve() if callable(resolve) and inspect.isfunction(endpoint) else endpoint
