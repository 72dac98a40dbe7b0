"""A loose plugin file that takes the name of the built-in robot backend (its entry point)."""

from __future__ import annotations

from bolt_host import hookimpl


@hookimpl
def startup(host):
    return None
