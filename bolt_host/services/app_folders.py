"""The folders of installed apps: staging, swaps that keep what they replaced aside, and
boot's recovery from swaps a crash cut off.

A replaced folder is renamed to ``.old-<name>-XXXXXXXX`` beside its place, so a failed
upgrade can put it back and boot can tell a half-done swap from a finished one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bolt_host.services.trees import remove_tree


def staging_dir(apps_dir: Path) -> Path:
    """A fresh private folder under ``apps_dir`` to build an install in (boot removes leftovers)."""
    apps_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=apps_dir))


def recover_leftovers(apps_dir: Path, public_dir: Path, recorded: set[str | None]) -> None:
    """Staging dirs go.  A folder moved aside for a swap is put back when the swap never
    completed (its place is empty) and the app is still ``recorded``, else removed: an
    unrecorded folder never comes back as ``apps/<name>``."""
    for leftover in apps_dir.glob(".staging-*"):
        remove_tree(leftover, ignore_errors=True)
    for leftover in [*apps_dir.glob(".old-*"), *public_dir.glob(".old-*")]:
        original = leftover.parent / leftover.name[len(".old-") : -len("-XXXXXXXX")]
        if original.name in recorded and not original.exists():
            leftover.rename(original)
        else:
            remove_tree(leftover, ignore_errors=True)


def replace_dir(new: Path, final: Path) -> Path | None:
    """Move ``new`` to ``final``; an existing ``final`` is moved aside (``.old-<name>-XXXXXXXX``,
    which boot's recovery understands) and returned, for the caller to remove or put back."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = move_aside(final)
    try:
        new.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    return old


def move_aside(folder: Path) -> Path | None:
    """Rename ``folder`` (if there) to ``.old-<name>-XXXXXXXX`` beside it; return the new path."""
    if not folder.exists():
        return None
    old = Path(tempfile.mkdtemp(prefix=f".old-{folder.name}-", dir=folder.parent))
    old.rmdir()
    folder.rename(old)
    return old


def swap_back(swapped: list[tuple[Path, Path | None]]) -> None:
    """Undo a swap: each folder it replaced goes back; one it created goes."""
    for final, old in swapped:
        replaced = replace_dir(old, final) if old is not None else final
        if replaced is not None:
            remove_tree(replaced, ignore_errors=True)


def remove_all(folders: list[Path]) -> None:
    for folder in folders:
        remove_tree(folder, ignore_errors=True)


def copy_tree(src: Path, dest: Path, merge: bool = False) -> None:
    """Copy a folder without following links that leave it and without VCS/cache folders."""
    base = src.resolve()

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = []
        for entry in names:
            path = Path(folder) / entry
            if entry in {".git", "__pycache__", "node_modules"} or (
                path.is_symlink() and not path.resolve().is_relative_to(base)
            ):
                skipped.append(entry)
        return skipped

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=merge, symlinks=False)
