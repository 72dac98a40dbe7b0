"""An app's npm dependencies, installed by the real npm client in the staging folder.

``npm ci`` when the package ships a lockfile, else ``npm install``; production
dependencies only; install scripts only when the manifest asks (``bolt.installScripts``)
and the installing admin granted it; the host's registry; npm's cache under the data
dir, so reinstalls and upgrades reuse what was fetched.  npm's output is the install
task's log; a failure is a 415 carrying its last lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError

LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
TAIL_LINES = 20
KILL_GRACE = 5.0

LogLine = Callable[[str], None]
Cancelled = Callable[[], bool]


def dependency_count(manifest: Mapping[str, Any]) -> int:
    deps = manifest.get("dependencies")
    return len(deps) if isinstance(deps, dict) else 0


def requests_install_scripts(manifest: Mapping[str, Any]) -> bool:
    bolt = manifest.get("bolt")
    return isinstance(bolt, dict) and bolt.get("installScripts") is True


def needs_npm(root: Path, manifest: Mapping[str, Any]) -> bool:
    """Dependencies to fetch that the package does not already bundle."""
    if dependency_count(manifest) == 0:
        return False
    bundled = manifest.get("bundleDependencies") or manifest.get("bundledDependencies")
    return not (bundled is True and (root / "node_modules").is_dir())


def npm_argv(
    npm: str, root: Path, *, registry: str | None, cache_dir: Path, run_scripts: bool
) -> list[str]:
    lockfile = any((root / name).is_file() for name in LOCKFILES)
    argv = [npm, "ci" if lockfile else "install", "--omit=dev", "--no-audit", "--no-fund"]
    argv += ["--no-update-notifier", "--cache", str(cache_dir), "--prefer-offline"]
    argv.append("--foreground-scripts" if run_scripts else "--ignore-scripts")
    if registry:
        argv += ["--registry", registry.rstrip("/") + "/"]
    return argv


async def install_npm_dependencies(
    root: Path,
    manifest: Mapping[str, Any],
    *,
    registry: str | None,
    cache_dir: Path,
    run_scripts: bool,
    timeout: float,
    log: LogLine,
    cancelled: Cancelled = lambda: False,
) -> None:
    """Run npm in ``root``; raise a 415 with npm's last lines if it fails, times out or is cancelled."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BoltError(
            errors.DOWNLOAD_FAILED,
            f"{manifest.get('name')} has {dependency_count(manifest)} npm dependencies, but "
            f"{'npm' if npm is None else 'node'} is not on the host's PATH: install Node.js (18 or later, with npm)",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    argv = npm_argv(npm, root, registry=registry, cache_dir=cache_dir, run_scripts=run_scripts)
    log(f"=== npm: {' '.join(argv[1:])}")
    tail = collections.deque(maxlen=TAIL_LINES)

    def keep(line: str) -> None:
        tail.append(line)
        log(line)

    outcome = await run_tree(argv, cwd=root, env=_npm_environment(), timeout=timeout, log=keep, cancelled=cancelled)
    if outcome == 0:
        return
    why = {"timeout": f"took longer than {timeout:g} s", "cancelled": "was cancelled"}.get(
        str(outcome), f"failed (exit code {outcome})"
    )
    headline = _headline(tail)
    last = "\n".join(tail)
    raise BoltError(
        errors.DOWNLOAD_FAILED,
        f"Installing the npm dependencies of {manifest.get('name')} {why}"
        + (f": {headline}" if headline else "")
        + "; nothing was installed."
        + (f" npm's last lines:\n{last}" if last else ""),
    )


def _headline(lines: collections.deque[str]) -> str | None:
    """npm's one line that says what went wrong (task records keep only a message's first line)."""
    for line in lines:
        text = line.removeprefix("npm error").removeprefix("npm ERR!").strip()
        if text != line.strip() and text and not text.startswith(("code ", "A complete log", "errno ")):
            return text[:300]
    return None


def _npm_environment() -> dict[str, str]:
    """The host's environment without npm settings a parent npm may have exported (npm_config_*)."""
    env = {key: value for key, value in os.environ.items() if not key.lower().startswith("npm_")}
    env["npm_config_update_notifier"] = "false"
    return env


async def run_tree(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    log: LogLine,
    cancelled: Cancelled,
) -> int | str:
    """Run ``argv`` in its own process group, each output line to ``log``.

    Returns the exit code, or ``"timeout"``/``"cancelled"`` after killing the whole group
    (npm's children, install scripts, git) when the time is up or ``cancelled()`` turns true.
    An asyncio cancel kills the group too, then propagates.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    reader = asyncio.create_task(_read_lines(process.stdout, log))
    deadline = asyncio.get_running_loop().time() + timeout
    outcome: int | str | None = None
    try:
        while outcome is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                outcome = "timeout"
            elif cancelled():
                outcome = "cancelled"
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 0.5)):  # checks the cancel flag twice a second
                        outcome = await process.wait()
    finally:
        if process.returncode is None:
            await _kill_group(process)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(KILL_GRACE):
                await reader
        reader.cancel()
    return outcome


async def _read_lines(stream: asyncio.StreamReader, log: LogLine) -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode("utf-8", errors="replace").rstrip()
        if text:
            log(text)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_GRACE):
                await process.wait()
                return
