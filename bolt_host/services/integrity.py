"""``bolt.checks``: the files whose contents must not change between install and start.

At install the listed files are hashed into the app's ``appHash``; each start hashes
them again and refuses (Bolt's code 404, "Could not start app due to security
concerns") when anything differs, is missing, or has become a link.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError

CHUNK = 1 << 16


def checks_hash(folder: Path, checks: list[str]) -> str:
    """SHA-512 over each listed file's name and SHA-256, in the order listed."""
    outer = hashlib.sha512()
    for relative in checks:
        outer.update(relative.encode() + b"\0" + _file_digest(folder, relative).encode() + b"\n")
    return outer.hexdigest()


def _file_digest(folder: Path, relative: str) -> str:
    """The file's SHA-256, read without following a link at its last component; a link
    or a missing file hashes as a marker that never matches a real file's digest."""
    try:
        fd = os.open(folder / relative, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return "missing"
    with os.fdopen(fd, "rb") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def with_app_hash(app: dict[str, Any], root: Path) -> dict[str, Any]:
    """``app`` with ``appHash`` over its ``checks`` as found under ``root`` (none without checks)."""
    app.pop("appHash", None)
    if app.get("checks"):
        app["appHash"] = checks_hash(root, app["checks"])
    return app


def verify_app_hash(app: dict[str, Any]) -> None:
    """Refuse to start ``app`` when a file listed in its ``checks`` changed since install."""
    expected = app.get("appHash")
    if not expected:
        return
    if checks_hash(Path(str(app.get("folder") or "")), list(app.get("checks") or [])) != expected:
        raise BoltError(
            errors.APP_INTEGRITY_FAILED,
            f"A file listed in bolt.checks of {app.get('name')!r} changed since install",
        )


async def verify_app(app: dict[str, Any]) -> None:
    """:func:`verify_app_hash` with the files hashed in a worker thread; an app with nothing
    to check costs no thread hop (every crash restart passes through here)."""
    if app.get("appHash"):
        await asyncio.to_thread(verify_app_hash, app)
