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
