"""uvicorn's package without its command line until something asks for it.

``import uvicorn`` runs ``uvicorn/__init__.py``, which imports ``uvicorn.main``: uvicorn's own
command line and its process supervisors (``multiprocessing``), about 23 modules and 0.9 MB of
objects that ``bolt-host serve`` never uses (it serves through ``uvicorn.config`` and
``uvicorn.server``). :func:`defer_uvicorn_init` registers the package without running its
``__init__``: submodules import as usual, ``uvicorn.Config`` is bound (uvicorn's lifespan
modules import it from the package), and the first read of any other top-level name
(``uvicorn.run``, ``uvicorn.Server``, ``uvicorn.__version__``, ...) runs the ``__init__`` then,
so any other ``import uvicorn`` in the process still gets the package it expects.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

# Attributes the import machinery and introspection probe for: they must not run the __init__.
_PROBED = frozenset({"__path__", "__file__", "__spec__", "__loader__", "__package__", "__wrapped__", "__getstate__"})


def defer_uvicorn_init() -> bool:
    """Register uvicorn's package with its ``__init__`` deferred to the first top-level name read;
    False when uvicorn is imported already (or not installed)."""
    if "uvicorn" in sys.modules:
        return False
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def run_init_on_first_use(name: str) -> Any:
        if name in _PROBED or "__getattr__" not in vars(package):
            raise AttributeError(f"module 'uvicorn' has no attribute {name!r}")
        del package.__getattr__  # uvicorn's own names from here on
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = run_init_on_first_use  # type: ignore[method-assign]
    sys.modules["uvicorn"] = package
    from uvicorn.config import Config

    package.Config = Config  # type: ignore[attr-defined]  # uvicorn's lifespan modules take it from the package
    return True
