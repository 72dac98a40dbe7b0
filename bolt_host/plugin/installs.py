"""Install as a task, for plugins: the host's task queue and app service, one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bolt_host.host import Host
from bolt_host.services import installs
from bolt_host.services.installs import Before


def install_as_task(
    host: Host,
    package: Path,
    source: dict[str, Any],
    *,
    name: str,
    version: str | None,
    kind: str = "install",
    upgrade: bool = True,
    expect_name: str | None = None,
    dedupe_key: str | None = None,
    meta: dict[str, Any] | None = None,
    before: Before | None = None,
) -> dict[str, Any]:
    """Queue the install of ``package`` (a tarball or an app folder the caller has checked) as a
    task; returns its record.  The task extracts safely, checks the manifest, swaps the app in
    atomically (an upgrade that fails leaves the old version), reports progress and logs;
    follow it with ``await host.tasks.wait(record["id"], timeout)`` or ``GET /api/tasks/<id>``.
    ``before(task)`` runs first inside the task (a checksum, a log line)."""
    return installs.submit_install(
        host.tasks, host.apps, package, source, name=name, version=version, kind=kind, upgrade=upgrade,
        expect_name=expect_name, dedupe_key=dedupe_key, meta=meta, before=before,
    )
