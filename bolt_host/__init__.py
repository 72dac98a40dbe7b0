"""bolt-host: install, supervise and serve apps; app-store APIs as plugins."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("bolt_host")
hookspec = pluggy.HookspecMarker("bolt_host")

__all__ = ["__version__", "hookimpl", "hookspec"]
