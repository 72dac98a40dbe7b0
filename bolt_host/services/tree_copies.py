"""Verified copies of installed trees (``node_modules``, a Python venv) for reinstalls.

A tree's digest covers every path (sorted), each file's content and executable bit, and
each link's target, without following links.  :func:`copy_verified` copies a tree while
hashing what it reads, so what lands in the new version is exactly what was recorded at its
install, or nothing (:class:`TreeChanged`).  Copied, not hard-linked: the new version
running, or a rollback to the old one, never shares a file with the other.

Links that leave the tree are refused unless ``absolute_links`` (a venv's ``bin/python``
names the base interpreter); names in ``skip`` (caches a runtime writes, such as
``__pycache__``) are neither hashed nor copied.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1 << 16


class TreeChanged(Exception):
    """The installed tree is not the one recorded (or cannot be copied as it is)."""


@dataclass(frozen=True)
class ReusableTree:
    """One package manager's tree in an app folder, and how a later install may reuse it:
    the app record's field (``{"inputs": key, "digest": digest}``) and the copy's rules."""

    record: str  # the app record's field
    folder: str  # the tree, relative to the app's folder
    tool: str  # what runs when it is not reused (for the log)
    skip: tuple[str, ...] = ()
    absolute_links: bool = False

    def installed(self, previous: Mapping[str, Any] | None, key: str | None) -> Path | None:
        """The installed app ``previous``'s tree when its record says it came from the same
        inputs ``key`` (and has a digest to verify a copy against)."""
        if key is None or not previous:
            return None
        recorded = previous.get(self.record)
        if not isinstance(recorded, dict) or recorded.get("inputs") != key or not recorded.get("digest"):
            return None
        tree = Path(str(previous.get("folder") or "")) / self.folder
        return tree if tree.is_dir() and not tree.is_symlink() else None

    def copy_into(self, tree: Path, root: Path, expected_digest: str) -> None:
        """Copy ``tree`` to its place in the app folder ``root``, verified (:func:`copy_verified`)."""
        copy_verified(tree, root / self.folder, expected_digest, skip=self.skip, absolute_links=self.absolute_links)

    def digest_in(self, root: Path) -> str:
        """The digest of the tree in the app folder ``root``, as a later copy will check it."""
        return tree_digest(root / self.folder, skip=self.skip, absolute_links=self.absolute_links)


def file_sha256(path: Path) -> str | None:
    """A file's SHA-256 (None when there is none), for an inputs key."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return "unreadable"


def executable_identity(path: str | Path) -> str:
    """An executable, for an inputs key: its real path, size and modification time."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return real
    return f"{real}:{info.st_size}:{info.st_mtime_ns}"


def copy_verified(
    source: Path,
    dest: Path,
    expected_digest: str,
    *,
    skip: Collection[str] = (),
    absolute_links: bool = False,
) -> None:
    """Copy the tree ``source`` to ``dest`` (which must not exist), hashing it as it is read;
    :class:`TreeChanged` (and nothing left at ``dest``) unless it hashes to ``expected_digest``."""
    try:
        digest = _walk(source, dest, frozenset(skip), absolute_links)
    except (OSError, TreeChanged) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise TreeChanged(str(exc)) from exc
    if not hmac.compare_digest(digest, expected_digest):
        shutil.rmtree(dest, ignore_errors=True)
        raise TreeChanged("its files differ from what was installed")


def tree_digest(tree: Path, *, skip: Collection[str] = (), absolute_links: bool = False) -> str:
    """The digest :func:`copy_verified` checks, of a tree a package manager just wrote."""
    return _walk(tree, None, frozenset(skip), absolute_links)


def _walk(source: Path, dest: Path | None, skip: frozenset[str], absolute_links: bool) -> str:
    """Hash the tree at ``source`` (copying it to ``dest`` when given) without following links.

    Entries are taken in sorted order, so the digest depends only on the tree's contents."""
    outer = hashlib.sha256()
    if dest is not None:
        dest.mkdir()
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(name for name in dirs if name not in skip)  # os.walk descends into these only
        relative = os.path.relpath(folder, source)
        for name in sorted([*dirs, *(name for name in files if name not in skip)]):
            path = os.path.join(folder, name)
            entry = os.path.normpath(os.path.join(relative, name))
            target = None if dest is None else os.path.join(dest, entry)
            outer.update(_entry_record(path, entry, target, absolute_links))
    return outer.hexdigest()


def _entry_record(path: str, entry: str, target: str | None, absolute_links: bool) -> bytes:
    info = os.lstat(path)
    if os.path.islink(path):
        link = os.readlink(path)
        landing = os.path.normpath(os.path.join(os.path.dirname(entry), link))
        if (os.path.isabs(link) and not absolute_links) or (not os.path.isabs(link) and landing.startswith("..")):
            raise TreeChanged(f"{entry} links outside the tree")
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
