"""The dependency step of an install: npm packages and the app's Python environment.

Runs in the staging folder before the swap, so a failure leaves nothing installed and an
upgrade's failure leaves the old version as it was.  When the install runs as a task, the
package managers' output is that task's log and a cancel of the task kills them (their whole process trees); outside a
task (a plain ``POST /api/apps``) the output goes to the host's log at debug level.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bolt_host.services.npm_dependencies import (
    dependency_count,
    install_npm_dependencies,
    needs_npm,
    requests_install_scripts,
)
from bolt_host.services.python_env import needs_python_env, prepare_python_env
from bolt_host.services.tasks import TaskCancelled, current_task

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

    def fields(self, staged: Path, final: Path) -> dict[str, Any]:
        python = self.python
        if python is not None and python.is_relative_to(staged):
            python = final / python.relative_to(staged)  # where it will be once swapped in
        return {
            "dependencies": self.dependencies,
            "installScripts": self.install_scripts,
            "installScriptsRun": self.scripts_run,
            "python": str(python) if python is not None else None,
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
    ) -> Prepared:
        """``confine(tool)`` gives the argv prefix that runs ``tool`` as the app (its uid or
        sandbox), the app's own cache folder for it and whether the prefix puts it in a network
        namespace (then it reaches only the registry or index); without it tools run as the host.
        ``registry_credentials`` (``.npmrc`` lines) let npm fetch from a private registry."""
        requested = requests_install_scripts(manifest)
        run_scripts = run_scripts and requested  # a grant nobody asked for runs nothing
        sink = TaskLog()
        if needs_npm(root, manifest):
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
                    credentials=registry_credentials,
                    run_scripts=run_scripts,
                    timeout=self.timeout,
                    log=sink,
                    registry_only=namespaced,
                ),
                sink,
            )
            sink.progress(0.9)
        python = None
        if needs_python_env(root, manifest):
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
        sink.flush()
        return Prepared(dependency_count(manifest), requested, run_scripts, python)


def _network_line(namespaced: bool, *, confined: bool) -> str:
    if namespaced:
        return "network: only the registry/index (a network namespace of its own, through the host's proxy)"
    if not confined:
        return "network: open (isolation is off: BOLT_ISOLATION=off)"
    return "network: open (no network namespace on this host; see SECURITY.md)"


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
