"""How an app is started: resolved once at install from its package, turned into argv at spawn.

The order (docs/manifest.md is the reference for app authors):

1. ``bolt.start``: a command (argv list, or a string split like a shell would, not run by one).
2. ``bolt.main``: ``*.js``/``*.cjs``/``*.mjs`` through the host's Node launcher (it listens on
   ``$PORT`` for a module that exports an app and leaves a module that listens by itself
   alone); ``*.py`` and ``module:attribute`` with the app's Python.
3. npm's and Heroku's conventions: ``scripts.start`` (``sh -c`` as npm runs it, with
   ``node_modules/.bin`` on PATH), a single ``bin`` entry, the top-level ``main`` (launcher),
   a ``Procfile``'s ``web:`` line.
4. Nothing: a server-less app (no process; its public files are what it offers).

The stored form (``app["command"]``) names *what* to run, never where the host's own files
are, so an app installed by one host version starts under the next one.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError

LAUNCHER = Path(__file__).resolve().parent.parent / "launchers" / "app_host.js"
NODE_SUFFIXES = (".js", ".cjs", ".mjs")
PYTHON_ATTRIBUTE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
PROCFILE_WEB = re.compile(r"^web:\s*(.+?)\s*$", re.MULTILINE)


def resolve_command(manifest: Mapping[str, Any], bolt: Mapping[str, Any], root: Path | None) -> dict[str, Any] | None:
    """How the app in ``root`` starts, or None for a server-less app.

    ``root`` None (a registry preview, no files yet) skips what needs the files: a Procfile.
    """
    start = bolt.get("start")
    if start:
        argv = shlex.split(start) if isinstance(start, str) else [str(part) for part in start]
        return {"from": "bolt.start", "argv": argv}
    main = bolt.get("main")
    if main:
        return _from_main(str(main))
    scripts = manifest.get("scripts")
    script = scripts.get("start") if isinstance(scripts, dict) else None
    if isinstance(script, str) and script.strip():
        return {"from": "scripts.start", "shell": script}
    bins = manifest.get("bin")
    if isinstance(bins, str) and bins:
        return {"from": "bin", "executable": bins}
    if isinstance(bins, dict) and len(bins) == 1:
        (target,) = bins.values()
        if isinstance(target, str) and target:
            return {"from": "bin", "executable": target}
    top_main = manifest.get("main")
    if isinstance(top_main, str) and top_main:
        return {"from": "main", "node": top_main}
    if root is not None:
        web = _procfile_web(root)
        if web:
            return {"from": "Procfile", "shell": web}
    return None


def _from_main(main: str) -> dict[str, Any]:
    if main.lower().endswith(NODE_SUFFIXES):
        return {"from": "bolt.main", "node": main}
    if main.lower().endswith(".py") or PYTHON_ATTRIBUTE.match(main):
        return {"from": "bolt.main", "python": main}
    raise BoltError(
        errors.LOCAL_PACKAGE_FAILED,
        f"bolt.main {main!r}: no known way to run it (a .js/.cjs/.mjs or .py file, or a Python module:attribute); "
        "set bolt.start instead",
    )


def _procfile_web(root: Path) -> str | None:
    procfile = root / "Procfile"
    if not procfile.is_file() or procfile.is_symlink():
        return None
    found = PROCFILE_WEB.search(procfile.read_text(encoding="utf-8", errors="replace")[:65536])
    return found.group(1) if found else None


def command_of(app: Mapping[str, Any]) -> dict[str, Any] | None:
    """The app's stored command; records from before it was stored derive it from start/main."""
    if "command" in app:
        stored: dict[str, Any] | None = app["command"]
        return stored
    return resolve_command({}, {key: app.get(key) for key in ("start", "main")}, None)


def is_serverless(app: Mapping[str, Any]) -> bool:
    """Nothing to run: start answers Bolt's bare context and no process is spawned."""
    return command_of(app) is None


def describe(command: Mapping[str, Any] | None) -> str:
    """One line for previews and the dashboard: what will run."""
    if command is None:
        return "nothing (a server-less app: its public files are served)"
    if "argv" in command:
        return shlex.join(command["argv"])
    if "shell" in command:
        return f"sh -c {shlex.quote(command['shell'])}"
    if "node" in command:
        return f"node {command['node']} (through the host's launcher, which listens on $PORT if it exports an app)"
    if "python" in command:
        return f"python {command['python']}"
    return str(command.get("executable"))


def command_argv(app: Mapping[str, Any]) -> list[str]:
    """The argv that starts ``app`` (run in its folder)."""
    command = command_of(app)
    name = app.get("name")
    if command is None:
        raise BoltError(errors.APP_START_FAILED, f"{name}: a server-less app has no process to start")
    if "argv" in command:
        return list(command["argv"])
    if "shell" in command:
        return ["sh", "-c", command["shell"]]
    if "node" in command:
        return ["node", str(LAUNCHER), command["node"]]
    if "python" in command:
        return _python_argv(app, command["python"])
    executable = str(command["executable"])
    return _executable_argv(Path(str(app.get("folder") or ".")), executable)


def _python_argv(app: Mapping[str, Any], main: str) -> list[str]:
    python = app.get("python")
    if python:
        from bolt_host.services.python_env import python_start_argv  # python_env imports processes, which imports us

        return python_start_argv(Path(python), main)
    if main.lower().endswith(".py"):
        return [sys.executable, main]
    raise BoltError(
        errors.APP_START_FAILED,
        f"{app.get('name')}: bolt.main {main!r} names a Python application, which needs the app's own "
        "environment with a server in it; reinstall the app",
    )


def _executable_argv(folder: Path, executable: str) -> list[str]:
    """A ``bin`` entry: a Node script (most are) runs with node, anything else as itself."""
    target = folder / executable
    head = b""
    try:
        with open(target, "rb") as handle:
            head = handle.readline(200)
    except OSError:
        pass
    if executable.endswith(NODE_SUFFIXES) or not head.startswith(b"#!") or b"node" in head:
        return ["node", executable]
    return [str(target)]


def command_environment(app: Mapping[str, Any], base_path: str) -> dict[str, str]:
    """Variables the command needs: npm's ``node_modules/.bin`` on PATH, Bolt's child marker."""
    folder = Path(str(app.get("folder") or "."))
    env = {"BOLT_CHILD_PROC": "true"}
    command = command_of(app) or {}
    if "shell" in command or "executable" in command:
        env["PATH"] = os.pathsep.join([str(folder / "node_modules" / ".bin"), base_path])
    return env
