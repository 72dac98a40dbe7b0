"""The `device` store backend (a bolt-host plugin).

Registered through the `bolt_host` entry-point group like any third-party
plugin.  Its routes arrive with the issue that implements the store API.
"""

from __future__ import annotations

__version__ = "0.1.0"
