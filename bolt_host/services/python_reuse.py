"""A reinstall or upgrade whose Python requirements did not change reuses the installed venv.

Even with a warm cache, uv creates the environment, resolves against the index's cached
pages and links every package.  When the staged version asks for exactly what the installed
one got, its ``.venv`` is copied instead (a verified copy: :mod:`tree_copies`;
``__pycache__`` folders, which the app's interpreter writes at run time, are left out of
both the copy and its check, and are written again on first import).

The *inputs key* (``venvTree.inputs``) covers ``requirements.txt``'s bytes, the
``pyproject.toml`` dependencies, the servers a ``module:attr`` app gets, the base
interpreter and uv executables, and the machine's index configuration (pip's and uv's
settings, with the contents of constraint files and ``uv.toml`` files).  Only plain
requirements are reused: a name with extras, version specifiers and markers.  A line that
is an option (``-r``, ``-e``, ``--index-url``...), a URL or a path is left to uv: it names
the package's own (changing) files, or settings the key does not read.  Unpinned
requirements keep the versions the installed environment has, as ``uv pip install`` into
an existing environment would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bolt_host.services.pip_settings import uv_environment
from bolt_host.services.python_env import VENV_DIR, find_uv, install_arguments, pyproject_dependencies
from bolt_host.services.tree_copies import ReusableTree, executable_identity, file_sha256

INPUTS_FORMAT = 1
VENV = ReusableTree(record="venvTree", folder=VENV_DIR, tool="uv", skip=("__pycache__",), absolute_links=True)
PLAIN_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,\s-]*\])?\s*([<>=!~][^;@]*)?(;[^@]*)?$")


def venv_inputs_key(folder: Path, manifest: dict[str, Any], *, base: Path, environ: Mapping[str, str]) -> str | None:
    """What uv's result in ``folder`` depends on, hashed; None when it must never be reused."""
    requirements = _requirement_lines(folder / "requirements.txt")
    declared = pyproject_dependencies(folder)
    if requirements is None or not all(PLAIN_REQUIREMENT.match(line) for line in [*requirements, *declared]):
        return None
    index = uv_environment(environ)
    constraints = (index.get("UV_CONSTRAINT") or "").split()
    inputs = {
        "format": INPUTS_FORMAT,
        "requirements": file_sha256(folder / "requirements.txt"),
        "pyproject": declared,
        "arguments": install_arguments(folder, manifest),
        "base": executable_identity(base),
        "uv": executable_identity(find_uv()),
        "index": index,
        "constraints": {name: file_sha256(Path(name)) for name in constraints},
        "uvConfig": {str(path): file_sha256(path) for path in _uv_config_files(environ)},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _uv_config_files(environ: Mapping[str, str]) -> list[Path]:
    """Where uv reads a ``uv.toml`` of the machine or the host's user (an app's own HOME has none)."""
    dirs = (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    user = Path(environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME") or "/") / ".config")
    files = [Path(folder) / "uv" / "uv.toml" for folder in dirs if folder]
    files += [Path("/etc/uv/uv.toml"), user / "uv" / "uv.toml"]
    if environ.get("UV_CONFIG_FILE"):
        files.append(Path(environ["UV_CONFIG_FILE"]))
    return files


def _requirement_lines(path: Path) -> list[str] | None:
    """The requirements in ``path`` without comments and blank lines ([] without the file);
    None when it cannot be read or continues lines (``\\``), which this reading would get wrong."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = [line.split(" #", 1)[0].strip() for line in text.splitlines()]
    if any(line.endswith("\\") for line in lines):
        return None
    return [line for line in lines if line and not line.startswith("#")]
