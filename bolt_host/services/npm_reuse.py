"""A reinstall or upgrade whose npm dependencies did not change reuses the installed tree.

npm spends seconds even when its cache holds everything (it still reads every packument,
checks every tarball and writes every file); when the staged version asks for exactly
what the installed one got, its ``node_modules`` is copied instead.  Copied, not
hard-linked: the new version running, or a rollback to the old one, never shares a file.

What decides "exactly what the installed one got" is the *inputs key* recorded with the app
(``npmTree.inputs``): the lockfile's bytes, the manifest fields npm resolves from, the
package's ``.npmrc``, the registry, and the node executable.  The tree npm wrote is recorded
too (``npmTree.digest``: every path, file content, executable bit and link target), and
the copy is verified against it while it is made: a tree changed since its install (by
hand, or by an app that could write its code folder) is never carried over; npm runs.

Never reused: installs that run install scripts (now or for the installed version; a
script may write anywhere in the package, which a copy of ``node_modules`` cannot
reproduce), workspaces and ``file:``/``link:``/path dependencies (they install the
package's own, changing, folders), a staged package that ships a ``node_modules``, and
links in the tree that leave it.  Without a lockfile npm would re-resolve ranges against
the registry; the reused tree still satisfies the same ranges, as npm's own ``install``
keeps a satisfying ``node_modules``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bolt_host.services.npm_dependencies import LOCKFILES

INPUTS_FORMAT = 1
MANIFEST_INPUTS = (
    "dependencies",
    "optionalDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "bundleDependencies",
    "bundledDependencies",
    "overrides",
    "os",
    "cpu",
    "engines",
)
LOCAL_SPECS = ("file:", "link:", "./", "../", "/", "~/")  # not "~1.2": a semver range
CHUNK = 1 << 16


class TreeChanged(Exception):
    """The installed tree is not the one recorded (or cannot be copied as it is)."""


def inputs_key(root: Path, manifest: Mapping[str, Any], *, registry: str | None, run_scripts: bool) -> str | None:
    """What npm's result in ``root`` depends on, hashed; None when it must never be reused."""
    if run_scripts or manifest.get("workspaces") or _has_local_specs(manifest):
        return None
    node = shutil.which("node")
    if node is None:
        return None
    inputs = {
        "format": INPUTS_FORMAT,
        "manifest": {field: manifest.get(field) for field in MANIFEST_INPUTS},
        "files": {name: _file_sha256(root / name) for name in (*LOCKFILES, ".npmrc")},
        "registry": (registry or "").rstrip("/"),
        "node": _node_identity(os.path.realpath(node)),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def reusable_tree(previous: Mapping[str, Any] | None, key: str | None) -> Path | None:
    """The installed version's ``node_modules`` when its record says it came from ``key``."""
    if key is None or not previous or previous.get("installScriptsRun"):
        return None
    recorded = previous.get("npmTree")
    if not isinstance(recorded, dict) or recorded.get("inputs") != key or not recorded.get("digest"):
        return None
    tree = Path(str(previous.get("folder") or "")) / "node_modules"
    return tree if tree.is_dir() and not tree.is_symlink() else None


def copy_verified(source: Path, dest: Path, expected_digest: str) -> None:
    """Copy the tree ``source`` to ``dest`` (which must not exist), hashing it as it is read;
    :class:`TreeChanged` (and nothing left at ``dest``) unless it hashes to ``expected_digest``."""
    try:
        digest = _walk(source, dest)
    except (OSError, TreeChanged) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise TreeChanged(str(exc)) from exc
    if digest != expected_digest:
        shutil.rmtree(dest, ignore_errors=True)
        raise TreeChanged("its files differ from what npm installed")


def tree_digest(tree: Path) -> str:
    """The digest :func:`copy_verified` checks, of the tree npm just wrote."""
    return _walk(tree, None)


def _walk(source: Path, dest: Path | None) -> str:
    """Hash the tree at ``source`` (copying it to ``dest`` when given) without following links.

    Entries are taken in sorted order, so the digest depends only on the tree's contents."""
    outer = hashlib.sha256()
    if dest is not None:
        dest.mkdir()
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        relative = os.path.relpath(folder, source)
        for name in sorted([*dirs, *files]):
            path = os.path.join(folder, name)
            entry = os.path.normpath(os.path.join(relative, name))
            target = None if dest is None else os.path.join(dest, entry)
            outer.update(_entry_record(source, path, entry, target))
    return outer.hexdigest()


def _entry_record(root: Path, path: str, entry: str, target: str | None) -> bytes:
    info = os.lstat(path)
    if os.path.islink(path):
        link = os.readlink(path)
        landing = os.path.normpath(os.path.join(os.path.dirname(entry), link))
        if os.path.isabs(link) or landing.startswith(".."):
            raise TreeChanged(f"{entry} links outside node_modules")
        if target is not None:
            os.symlink(link, target)
        return f"l\0{entry}\0{link}\n".encode()
    if os.path.isdir(path):
        if target is not None:
            os.mkdir(target)
        return f"d\0{entry}\n".encode()
    if not os.path.isfile(path):
        raise TreeChanged(f"{entry} is neither a file, a folder nor a link")
    executable = bool(info.st_mode & 0o100)
    return f"f\0{entry}\0{int(executable)}\0{_copy_file(path, target, executable)}\n".encode()


def _copy_file(path: str, target: str | None, executable: bool) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as reader:
        writer = None
        if target is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            writer = os.fdopen(os.open(target, flags, 0o755 if executable else 0o644), "wb")
        try:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                if writer is not None:
                    writer.write(chunk)
        finally:
            if writer is not None:
                writer.close()
    return digest.hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return "unreadable"


def _has_local_specs(manifest: Mapping[str, Any]) -> bool:
    for field in ("dependencies", "optionalDependencies", "peerDependencies", "overrides"):
        specs = manifest.get(field)
        if isinstance(specs, dict) and any(
            isinstance(spec, str) and spec.strip().startswith(LOCAL_SPECS) for spec in specs.values()
        ):
            return True
    return False


def _node_identity(node: str) -> str:
    """Which node runs the app (its modules' ABI): path, size and time of the executable, and
    the version it reports (asked once per executable)."""
    try:
        info = os.stat(node)
    except OSError:
        return node
    return f"{node}:{info.st_size}:{info.st_mtime_ns}:{_node_version(node, info.st_mtime_ns)}"


@functools.lru_cache(maxsize=4)
def _node_version(node: str, _mtime_ns: int) -> str:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip()
