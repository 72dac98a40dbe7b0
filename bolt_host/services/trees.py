"""Removing folder trees of any depth.

``shutil.rmtree`` recurses once per level (RecursionError past ~1,000, which its
``ignore_errors`` does not catch) and builds paths that can pass PATH_MAX.  Here the walk
is a loop over paths relative to the tree's parent folder, and a subtree that gets too
deep is moved up into the tree's top folder first, so neither the stack nor any path
grows with the depth.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_RELATIVE_BYTES = 2048  # deeper subtrees are moved up before being walked


def remove_tree(path: str | Path, ignore_errors: bool = False) -> None:
    """Remove ``path`` and everything below it, never following a symlink; a missing path is fine."""
    try:
        _remove(Path(path))
    except OSError:
        if not ignore_errors:
            raise


def _remove(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    parent_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        _remove_below(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def _remove_below(parent_fd: int, top: str) -> None:
    """Empty and remove the folder ``top`` of ``parent_fd``: depth-first with an explicit stack."""
    moved = itertools.count()
    stack = [top]
    while stack:
        folder = stack[-1]
        if len(folder.encode("utf-8", "surrogateescape")) > _MAX_RELATIVE_BYTES:
            stack[-1] = folder = _move_up(parent_fd, folder, top, moved)
        subfolders = []
        try:
            fd = os.open(folder, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            stack.pop()
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(f"{folder}/{entry.name}")
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)
        if subfolders:
            stack.extend(subfolders)  # this folder is looked at again once they are gone
            continue
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(folder, dir_fd=parent_fd)
        stack.pop()


def _move_up(parent_fd: int, folder: str, top: str, counter: itertools.count[int]) -> str:
    """Move ``folder`` to a free name in ``top``; its new path relative to ``parent_fd``."""
    while True:
        flat = f"{top}/.deep-{next(counter)}"
        try:
            os.mkdir(flat, 0o700, dir_fd=parent_fd)  # claims the name; the rename replaces the empty folder
        except FileExistsError:
            continue
        os.rename(folder, flat, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        return flat
