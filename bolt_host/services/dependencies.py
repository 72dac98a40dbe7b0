"""The dependency step of an install: npm packages and the app's Python environment.

Runs in the staging folder before the swap, so a failure leaves nothing installed and an
upgrade's failure leaves the old version as it was.  When the install runs as a task, the
package managers' output is that task's log and a cancel of the task kills them (their whole process trees); outside a
task (a plain ``POST /api/apps``) the output goes to the host's log at debug level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bolt_host.services.npm_dependencies import (
    dependency_count,
    install_npm_dependencies,
    needs_npm,
    requests_install_scripts,
)
from bolt_host.services.npm_reuse import NODE_MODULES, inputs_key, reusable_tree
from bolt_host.services.python_env import base_interpreter, needs_python_env, prepare_python_env, venv_python
from bolt_host.services.python_reuse import VENV, venv_inputs_key
from bolt_host.services.tasks import TaskCancelled, current_task
from bolt_host.services.tree_copies import ReusableTree, TreeChanged

log = logging.getLogger("bolt_host.dependencies")

DEFAULT_TIMEOUT = 600.0
CANCEL_POLL_SECONDS = 0.25
T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """What the dependency step adds to the app object."""

    dependencies: int
    install_scripts: bool  # requested by the manifest
    scripts_run: bool
    python: Path | None  # the app's own interpreter, inside the staged tree or elsewhere
    npm_tree: dict[str, str] | None = None  # what a later install may reuse (see npm_reuse)
    venv_tree: dict[str, str] | None = None  # the same for the venv (see python_reuse)
    reused: tuple[str, ...] = ()  # the tools ("npm", "uv") whose trees were copied from the installed version

    def fields(self, staged: Path, final: Path) -> dict[str, Any]:
        python = self.python
        if python is not None and python.is_relative_to(staged):
            python = final / python.relative_to(staged)  # where it will be once swapped in
        return {
            "dependencies": self.dependencies,
            "installScripts": self.install_scripts,
            "installScriptsRun": self.scripts_run,
            "python": str(python) if python is not None else None,
            "npmTree": self.npm_tree,
            "venvTree": self.venv_tree,
            "dependenciesReused": list(self.reused),
        }


class TaskLog:
    """A text sink for the package managers: each line to the current task's log, or the host's."""

    def __init__(self) -> None:
        self._task = current_task()
        self._partial = ""

    def line(self, text: str) -> None:
        if self._task is not None:
            self._task.log(text)
        else:
            log.debug("%s", text)

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""

    def cancelled(self) -> bool:
        return self._task is not None and self._task.cancelled

    def progress(self, fraction: float) -> None:
        if self._task is not None:
            self._task.progress(fraction)


class DependencySteps:
    def __init__(self, cache_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.npm_cache = cache_dir / "npm"
        self.python_cache = cache_dir / "uv"
        self.timeout = timeout

    async def prepare(
        self,
        root: Path,
        manifest: dict[str, Any],
        *,
        registry: str | None,
        run_scripts: bool,
        confine: Callable[[str], Awaitable[tuple[list[str], Path, bool]]] | None = None,
        registry_credentials: str | None = None,
        previous: Mapping[str, Any] | None = None,
    ) -> Prepared:
        """``confine(tool)`` gives the argv prefix that runs ``tool`` as the app (its uid or
        sandbox), the app's own cache folder for it and whether the prefix puts it in a network
        namespace (then it reaches only the registry or index); without it tools run as the host.
        ``registry_credentials`` (``.npmrc`` lines) let npm fetch from a private registry.
        ``previous`` is the installed version's record (an upgrade or reinstall): its
        ``node_modules`` and venv are reused when the dependencies are the same (see
        npm_reuse, python_reuse)."""
        requested = requests_install_scripts(manifest)
        run_scripts = run_scripts and requested  # a grant nobody asked for runs nothing
        sink = TaskLog()
        npm_tree = venv_tree = python = None
        reused: list[str] = []
        if needs_npm(root, manifest):
            npm_tree = await self._npm_step(
                root, manifest, registry, run_scripts, confine, registry_credentials, previous, sink, reused
            )
        if needs_python_env(root, manifest):
            python, venv_tree = await self._python_step(root, manifest, confine, previous, sink, reused)
        sink.flush()
        return Prepared(dependency_count(manifest), requested, run_scripts, python, npm_tree, venv_tree, tuple(reused))

    async def _npm_step(
        self,
        root: Path,
        manifest: dict[str, Any],
        registry: str | None,
        run_scripts: bool,
        confine: Callable[[str], Awaitable[tuple[list[str], Path, bool]]] | None,
        credentials: str | None,
        previous: Mapping[str, Any] | None,
        sink: TaskLog,
        reused: list[str],
    ) -> dict[str, str] | None:
        """``node_modules`` in ``root``, reused (``"npm"`` added to ``reused``) or from npm; its record."""
        shipped = (root / "node_modules").exists()
        key = None if shipped else inputs_key(root, manifest, registry=registry, run_scripts=run_scripts)
        kept = await _reuse(NODE_MODULES, root, reusable_tree(previous, key), previous, sink)
        if kept is not None:
            reused.append("npm")
            return kept
        sink.line(f"=== installing {dependency_count(manifest)} npm dependencies")
        prefix, npm_cache, namespaced = await confine("npm") if confine is not None else ([], self.npm_cache, False)
        sink.line(_network_line(namespaced, confined=confine is not None))
        await _until_cancelled(
            install_npm_dependencies(
                root,
                manifest,
                registry=registry,
                cache_dir=npm_cache,
                prefix=prefix,
                credentials=credentials,
                run_scripts=run_scripts,
                timeout=self.timeout,
                log=sink,
                registry_only=namespaced,
            ),
            sink,
        )
        sink.progress(0.9)
        return await _record(NODE_MODULES, root, key)

    async def _python_step(
        self,
        root: Path,
        manifest: dict[str, Any],
        confine: Callable[[str], Awaitable[tuple[list[str], Path, bool]]] | None,
        previous: Mapping[str, Any] | None,
        sink: TaskLog,
        reused: list[str],
    ) -> tuple[Path, dict[str, str] | None]:
        """The app's venv in ``root``, reused (``"uv"`` added to ``reused``) or made by uv:
        its interpreter and its record."""
        # as prepare_python_env picks it: confined tools of a root host run as the app's uid
        base = base_interpreter(for_other_user=confine is not None and os.geteuid() == 0)
        key = venv_inputs_key(root, manifest, base=base, environ=os.environ)
        tree = VENV.installed(previous, key)
        if tree is not None:
            shutil.rmtree(root / VENV.folder, ignore_errors=True)  # one shipped in the package was built elsewhere
        kept = await _reuse(VENV, root, tree, previous, sink)
        if kept is not None:
            reused.append("uv")
            return venv_python(root), kept
        sink.line("=== preparing the app's Python environment")
        unconfined: tuple[list[str], Path, bool] = ([], self.python_cache, False)
        prefix, uv_cache, namespaced = await confine("uv") if confine is not None else unconfined
        sink.line(_network_line(namespaced, confined=confine is not None))
        prepared = prepare_python_env(
            root,
            cache_dir=uv_cache,
            prefix=prefix,
            log=sink,
            timeout=self.timeout,
            manifest=manifest,
            index_only=namespaced,
        )
        python = await _until_cancelled(prepared, sink)
        return python, await _record(VENV, root, key)


def _network_line(namespaced: bool, *, confined: bool) -> str:
    if namespaced:
        return "network: only the registry/index (a network namespace of its own, through the host's proxy)"
    if not confined:
        return "network: open (isolation is off: BOLT_ISOLATION=off)"
    return "network: open (no network namespace on this host; see SECURITY.md)"


async def _reuse(
    kind: ReusableTree, root: Path, tree: Path | None, previous: Mapping[str, Any] | None, sink: TaskLog
) -> dict[str, str] | None:
    """Copy the installed version's verified ``tree`` into ``root``; its record, or None
    (nothing copied) when there is none to reuse or it changed since its install."""
    if tree is None or previous is None:
        return None
    recorded = dict(previous[kind.record])
    try:
        await asyncio.to_thread(kind.copy_into, tree, root, recorded["digest"])
    except TreeChanged as exc:
        sink.line(f"=== not reusing the installed {kind.folder} ({exc}): running {kind.tool}")
        return None
    sink.line(f"=== same dependencies as version {previous.get('version')}: its {kind.folder} reused (verified)")
    return recorded


async def _record(kind: ReusableTree, root: Path, key: str | None) -> dict[str, str] | None:
    """What a later install needs to reuse the tree the package manager just wrote (None: never)."""
    if key is None:
        return None
    try:
        digest = await asyncio.to_thread(kind.digest_in, root)
    except (OSError, TreeChanged):  # a tree a copy could not reproduce
        return None
    return {"inputs": key, "digest": digest}


async def _until_cancelled(work: Coroutine[Any, Any, T], sink: TaskLog) -> T:
    """Await ``work``; if the task running it is asked to stop, cancel it (the package manager's
    tree is killed) and raise :class:`TaskCancelled`.  Task cancels are cooperative flags."""
    running = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({running}, timeout=CANCEL_POLL_SECONDS)
        if done:
            return running.result()
        if sink.cancelled():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            raise TaskCancelled("canceled while installing dependencies")
