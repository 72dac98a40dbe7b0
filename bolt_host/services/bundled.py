"""First-party apps that ship with the host: the repository's ``apps/`` folder.

With ``--install-bundled`` (env ``BOLT_INSTALL_BUNDLED``) the host installs each of them
at start-up when it is missing, and upgrades it when the installed copy came from
here at another version.  An app of the same name installed from elsewhere is left
alone.  A bundled app that fails to install is logged; the host starts without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bolt_host.errors import BoltError
from bolt_host.services.manifest import app_name_for, read_manifest

log = logging.getLogger("bolt_host.bundled")
SOURCE_TYPE = "bundled"


async def install_bundled(apps: Any, folder: Path) -> list[str]:
    """Install or upgrade the bundled apps in ``folder``; the names of those that changed."""
    if not folder.is_dir():
        log.warning("no bundled apps at %s (an installed package without the repository's apps/)", folder)
        return []
    changed = []
    for app_dir in sorted(p for p in folder.iterdir() if (p / "package.json").is_file()):
        try:
            if await _install_one(apps, app_dir):
                changed.append(app_dir.name)
        except BoltError as exc:
            log.error("bundled app %s was not installed: %s", app_dir.name, exc.message)
    return changed


async def _install_one(apps: Any, app_dir: Path) -> bool:
    manifest = read_manifest(app_dir)
    current = apps.get(app_name_for(manifest.get("name")))
    if current is not None:
        if (current.get("source") or {}).get("type") != SOURCE_TYPE:
            log.warning("%s is installed from elsewhere; the bundled copy is left alone", current["name"])
            return False
        if current.get("version") == manifest.get("version"):
            return False
    source = {"type": SOURCE_TYPE, "path": app_dir.name}
    app = await apps.install_folder(app_dir, source, upgrade=current is not None)
    log.info("bundled app %s %s %s", app["name"], app["version"], "upgraded" if current else "installed")
    return True
