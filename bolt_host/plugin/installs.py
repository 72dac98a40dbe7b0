"""Install as a task, for plugins: the host's task queue and app service, one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bolt_host.host import Host
from bolt_host.services import installs
from bolt_host.services.installs import After, Before


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
    after: After | None = None,
    discard_package: bool = False,
) -> dict[str, Any]:
    """Queue the install of ``package`` (a tarball or an app folder the caller has checked) as a
    task; returns its record.  The task extracts safely, checks the manifest, swaps the app in
    atomically (an upgrade that fails leaves the old version), reports progress and logs;
    follow it with ``await host.tasks.wait(record["id"], timeout)`` or ``GET /api/tasks/<id>``.
    ``before(task)`` runs first inside the task (a checksum, a log line); ``after(task, app)``
    runs once the app is installed (the backend's own bookkeeping).  ``discard_package``:
    ``package`` is a copy made for this install, deleted when the task ends, whatever the outcome."""
    return installs.submit_install(
        host.tasks, host.apps, package, source, name=name, version=version, kind=kind, upgrade=upgrade,
        expect_name=expect_name, dedupe_key=dedupe_key, meta=meta, before=before,
        after=after, discard_package=discard_package,
    )
