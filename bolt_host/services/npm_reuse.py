"""A reinstall or upgrade whose npm dependencies did not change reuses the installed tree.

npm spends seconds even when its cache holds everything (it still reads every packument,
checks every tarball and writes every file); when the staged version asks for exactly
what the installed one got, its ``node_modules`` is copied instead (a verified copy:
:mod:`tree_copies`).

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
from bolt_host.services.tree_copies import ReusableTree, executable_identity, file_sha256

INPUTS_FORMAT = 1
NODE_MODULES = ReusableTree(record="npmTree", folder="node_modules", tool="npm")
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
        "files": {name: file_sha256(root / name) for name in (*LOCKFILES, ".npmrc")},
        "registry": (registry or "").rstrip("/"),
        "node": _node_identity(os.path.realpath(node)),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def reusable_tree(previous: Mapping[str, Any] | None, key: str | None) -> Path | None:
    """The installed version's ``node_modules`` when its record says it came from ``key``
    (and no install script wrote into it)."""
    if previous and previous.get("installScriptsRun"):
        return None
    return NODE_MODULES.installed(previous, key)


def _has_local_specs(manifest: Mapping[str, Any]) -> bool:
    for field in ("dependencies", "optionalDependencies", "peerDependencies", "overrides"):
        specs = manifest.get(field)
        if isinstance(specs, dict) and any(
            isinstance(spec, str) and spec.strip().startswith(LOCAL_SPECS) for spec in specs.values()
        ):
            return True
    return False


def _node_identity(node: str) -> str:
    """Which node runs the app (its modules' ABI): the executable, and the version it reports
    (asked once per executable)."""
    identity = executable_identity(node)
    return f"{identity}:{_node_version(node, identity)}"


@functools.lru_cache(maxsize=4)
def _node_version(node: str, _identity: str) -> str:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip()
