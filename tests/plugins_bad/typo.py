from __future__ import annotations

from bolt_host import hookimpl


@hookimpl
def register_route(host):  # misspelled on purpose: the host must refuse to start
    return []
