"""Python apps' own environments: a virtual environment per app, made and filled by ``uv``.

An app gets one when it declares dependencies (``requirements.txt``, or a ``pyproject.toml``
with ``[project] dependencies``) or names a WSGI/ASGI object as ``bolt.main = "module:attr"``
(it then needs a server).  Apps without either keep running on the host's interpreter.

The environment is ``.venv`` inside the staged app folder, so it is swapped in, swapped back
on a failed upgrade and removed together with the app.  It is created ``--relocatable`` and
installed into with the venv's interpreter path only; the staged folder is renamed into place
after the install, and ``bin/python`` (a link to the host's base interpreter, found through
``pyvenv.cfg`` next to it) works from any folder.

uv runs as the app (its uid or sandbox, as npm does), with a cache in the app's own data
folder: a requirement's build step gets the app's rights, never the host's.

Both small servers (uvicorn for ASGI, waitress for WSGI) go into a ``module:attr`` app's
environment in the same resolution as its requirements, so whether the object is ASGI or WSGI
is decided when it starts (by :mod:`bolt_host.launchers.pyserve`), never by importing the
app's code during the install.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.egress import Egress
from bolt_host.services.pip_settings import NO_INDEX, uv_environment
from bolt_host.services.processes import base_environment
from bolt_host.services.tool_runs import LogSink, run_logged

VENV_DIR = ".venv"
DEPENDENCIES_FAILED = errors.DOWNLOAD_FAILED  # the dependencies could not be fetched or installed
SERVERS = ("uvicorn", "waitress")  # ASGI, WSGI
LAUNCHER = Path(__file__).resolve().parent.parent / "launchers" / "pyserve.py"
OBJECT_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Host variables uv needs to reach the index the way the host does; nothing else is passed on.
NETWORK_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
)


def is_object_reference(main: Any) -> bool:
    """Is ``main`` of the form ``package.module:attribute`` (a WSGI/ASGI application)?"""
    return isinstance(main, str) and bool(OBJECT_REFERENCE.match(main))


def needs_python_env(folder: Path, manifest: dict[str, Any]) -> bool:
    """Does the app at ``folder`` need an environment of its own (see the module's docstring)?"""
    return bool(install_arguments(folder, manifest))


def pyproject_dependencies(folder: Path) -> list[str]:
    """The ``[project] dependencies`` of ``folder/pyproject.toml`` ([] when none or unreadable)."""
    path = folder / "pyproject.toml"
    if not path.is_file():
        return []
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    dependencies = project.get("dependencies") if isinstance(project, dict) else None
    return [str(entry) for entry in dependencies] if isinstance(dependencies, list) else []


def venv_python(folder: Path) -> Path:
    """The interpreter of the app environment inside ``folder`` (wherever the folder now is)."""
    return folder / VENV_DIR / "bin" / "python"


def find_uv() -> Path:
    """The ``uv`` executable: beside this interpreter (bolt-host's own dependency), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("uv")
    if found:
        return Path(found)
    raise BoltError(
        DEPENDENCIES_FAILED,
        "This app needs Python packages, but uv is not installed: install bolt-host's dependencies "
        "(pip install uv) into the host's environment",
    )


def reachable_by_others(path: Path) -> bool:
    """Can any user run ``path`` (every folder on the way passable, the file executable)?"""
    try:
        real = path.resolve(strict=True)
        return all(folder.stat().st_mode & 0o001 for folder in real.parents) and bool(real.stat().st_mode & 0o001)
    except OSError:
        return False


def base_interpreter(*, for_other_user: bool) -> Path:
    """The interpreter an app's venv is built on: the host's own, unless the app runs as another
    user who cannot reach it (a pyenv under ``/root``), then the system's of the same version."""
    host = Path(sys.executable)
    if not for_other_user or reachable_by_others(host):
        return host
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for folder in ("/usr/local/bin", "/usr/bin"):
        for name in (version, "python3"):
            candidate = Path(folder) / name
            if reachable_by_others(candidate):
                return candidate
    return host


def uv_run_environment(cache_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment uv runs in: the host's safe basics and network settings, the machine's
    pip/uv index configuration, ``cache_dir``, and never a downloaded interpreter."""
    environ = os.environ if environ is None else environ
    env = base_environment(environ)
    env.update({key: environ[key] for key in NETWORK_VARIABLES if key in environ})
    env.update(uv_environment(environ))
    env.update({"UV_CACHE_DIR": str(cache_dir), "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"})
    return env


async def prepare_python_env(
    folder: Path,
    *,
    cache_dir: Path,
    log: LogSink,
    timeout: float,
    manifest: dict[str, Any],
    prefix: Sequence[str] = (),
    index_only: bool = False,
) -> Path:
    """Create ``folder/.venv`` and install the app's dependencies into it; return its python.

    ``prefix`` runs uv as the app (see :meth:`~bolt_host.services.sandbox.Isolation.install_prefix`):
    a requirement's build step then has the app's rights, not the host's.  ``index_only``: the
    prefix puts uv in a network namespace of its own, from which only the configured indexes
    (and find-links) are reachable.
    ``timeout`` bounds the whole preparation.  Any failure (uv missing, an unknown package,
    no network, the time limit) is a :data:`DEPENDENCIES_FAILED` error quoting uv's last lines,
    and the half-made environment is removed.
    """
    uv = find_uv()
    folder = folder.absolute()
    venv = folder / VENV_DIR
    shutil.rmtree(venv, ignore_errors=True)  # one shipped inside a package was built elsewhere
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = uv_run_environment(cache_dir)
    egress = Egress.for_uv(env) if index_only else None
    deadline = time.monotonic() + timeout
    # a prefix from a root host runs uv as the app's own uid (a sandbox keeps the host's)
    base = base_interpreter(for_other_user=bool(prefix) and os.geteuid() == 0)

    async def uv_step(what: str, *arguments: str) -> None:
        log.write(f"$ uv {' '.join(arguments)}\n")
        await run_logged(
            [*prefix, str(uv), *arguments, "--no-progress"],
            cwd=folder,
            env=env,
            log=log,
            timeout=max(deadline - time.monotonic(), 0.001),
            what=what,
            code=DEPENDENCIES_FAILED,
            limit=timeout,
            egress=egress,
        )

    try:
        await uv_step(
            "Creating the app's Python environment",
            *("venv", "--relocatable", "--no-project", "--python", str(base), str(venv)),
        )
        requirements = install_arguments(folder, manifest)
        if requirements:
            no_index = ("--no-index",) if env.pop(NO_INDEX, None) else ()
            install = ("pip", "install", *no_index, "--python", str(venv_python(folder)), *requirements)
            await uv_step("Installing the app's Python dependencies", *install)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return venv_python(folder)


def install_arguments(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """What ``uv pip install`` gets: the requirement files, and the servers for ``module:attr``."""
    arguments: list[str] = []
    if (folder / "requirements.txt").is_file():
        arguments += ["-r", "requirements.txt"]
    if pyproject_dependencies(folder):
        arguments += ["-r", "pyproject.toml"]
    bolt = manifest.get("bolt")
    if isinstance(bolt, dict) and is_object_reference(bolt.get("main")):
        arguments += SERVERS
    return arguments


def python_start_argv(python: Path, main: str) -> list[str]:
    """The command that runs ``bolt.main`` with ``python``: a script as is, a ``module:attr``
    object through the launcher that serves it on ``127.0.0.1:$PORT``."""
    if is_object_reference(main):
        return [str(python), str(LAUNCHER), main]
    if main.lower().endswith(".py"):
        return [str(python), main]
    raise BoltError(errors.APP_START_FAILED, f"bolt.main {main!r} is neither a .py file nor module:attribute")
