"""The exec helper: how an app (or its install step) is confined in ``uid`` mode in one exec.

``bolt-exec`` (``bolt_host/launchers/bolt-exec.c``, built static by ``./scripts/setup`` where a
C compiler is) joins the app's cgroups, sets its rlimits, drops to its uid and gid with no
supplementary groups and no new privileges, checks the drop held, and execs the app: what the
chain ``sh`` -> ``prlimit`` -> ``setpriv`` does in three execs (util-linux's ``setpriv`` loads
NSS and the locale even for numeric ids), for about a third of the chain's CPU per spawn.

The host runs it as root, so it is used only when it is safe to: a regular executable file that
nobody but root (or the host's own uid) can change or swap (:func:`problem`), checked once at
start-up.  Otherwise (not built, no compiler, a copy anyone could swap, or
``BOLT_EXEC_HELPER=off``) the host spawns through the chain, which does the same.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("bolt_host.exec_helper")

BUILT = Path(__file__).resolve().parent.parent / "launchers" / "bolt-exec"
AUTO, OFF = "auto", "off"


def problem(path: str | Path) -> str | None:
    """Why the host must not run ``path`` as root, or None when it may: it must be an executable
    file that only root (or the host's uid) can change or swap, so it and every folder above it
    are theirs and not writable by group or others (a sticky folder such as ``/tmp`` may be:
    nobody else can rename what is in it)."""
    real = os.path.realpath(path)
    try:
        helper = os.stat(real)
        chain = [("file", real, helper)]
        for folder in [*Path(real).parents]:
            chain.append(("folder", str(folder), os.stat(folder)))
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(helper.st_mode) or not helper.st_mode & stat.S_IXUSR:
        return f"{real} is not an executable file"
    owners = {0, os.geteuid()}
    for what, where, info in chain:
        if info.st_uid not in owners:
            return f"the {what} {where} is owned by uid {info.st_uid}, not root"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (what == "folder" and info.st_mode & stat.S_ISVTX):
            return f"the {what} {where} is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def choose(setting: str) -> str | None:
    """The helper's path for the ``exec_helper`` setting (``auto``, ``off`` or a path), or None for
    the chain; says why in the log when a helper is there but refused."""
    if setting == OFF:
        return None
    path = BUILT if setting == AUTO else Path(setting)
    if setting == AUTO and not path.exists():
        log.info("no exec helper at %s (./scripts/setup builds it where a C compiler is): "
                 "apps start through sh, prlimit and setpriv", path)
        return None
    why = problem(path)
    if why is not None:
        log.warning("exec helper %s not used (%s): apps start through sh, prlimit and setpriv; see SECURITY.md",
                    path, why)
        return None
    return os.path.realpath(path)


def helper_argv(helper: str, join_files: list[str], rlimits: Mapping[str, int], uid: int) -> list[str]:
    """``helper``'s argv before an app's argv: join ``join_files``, set ``rlimits`` (soft and
    hard; ``nofile``, ``nproc``, ``as``), run as ``uid`` (also the gid)."""
    return [
        helper,
        *(f"--join={path}" for path in join_files),
        *(f"--{key}={value}:{value}" for key, value in rlimits.items()),
        f"--uid={uid}",
        f"--gid={uid}",
        "--",
    ]
