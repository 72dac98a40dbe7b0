"""An app's npm dependencies, installed by the real npm client in the staging folder.

``npm ci`` when the package ships a lockfile, else ``npm install``; production
dependencies only; install scripts only when the manifest asks (``bolt.installScripts``)
and the installing admin granted it; the host's registry; npm's cache under the data
dir, so reinstalls and upgrades reuse what was fetched.  npm's output is the install
task's log; a failure is a 415 carrying its last lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.egress import Egress
from bolt_host.services.tool_runs import LogSink, run_logged

LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")


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
    log: LogSink,
    prefix: Sequence[str] = (),
    credentials: str | None = None,
    registry_only: bool = False,
) -> None:
    """Run npm in ``root``; a 415 naming npm's failing line and quoting its last lines if it
    fails or overruns ``timeout`` (its whole tree, install scripts included, is killed).
    ``prefix`` runs it as the app (see :meth:`~bolt_host.services.sandbox.Isolation.install_prefix`);
    ``credentials`` (``.npmrc`` lines for the registry) reach npm only through a temporary
    config file beside its cache, removed afterwards.  ``registry_only``: ``prefix`` puts npm in
    a network namespace of its own, from which only ``registry`` is reachable."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BoltError(
            errors.DOWNLOAD_FAILED,
            f"{manifest.get('name')} has {dependency_count(manifest)} npm dependencies, but "
            f"{'npm' if npm is None else 'node'} is not on the host's PATH: install Node.js (18 or later, with npm)",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    argv = npm_argv(npm, root, registry=registry, cache_dir=cache_dir, run_scripts=run_scripts)
    log.write(f"$ npm {' '.join(argv[1:])}\n")
    try:
        with _without_dev_dependencies(root, lockfile=argv[1] == "ci"), _user_config(cache_dir, credentials) as env:
            await run_logged(
                [*prefix, *argv],
                cwd=root,
                env=env,
                log=log,
                timeout=timeout,
                what=f"Installing the npm dependencies of {manifest.get('name')}",
                code=errors.DOWNLOAD_FAILED,
                egress=Egress.for_npm(registry) if registry_only else None,
            )
    except BoltError as exc:
        summary, _, last = exc.message.partition("\n")
        headline = _headline(last.splitlines())
        raise BoltError(
            errors.DOWNLOAD_FAILED,
            summary.rstrip(":")
            + (f": {headline}" if headline else "")
            + "; nothing was installed."
            + (f" npm's last lines:\n{last}" if last else ""),
        ) from exc


@contextlib.contextmanager
def _without_dev_dependencies(root: Path, *, lockfile: bool) -> Iterator[None]:
    """Hide ``devDependencies`` from npm while it resolves, then put package.json back as it was.

    Without a lockfile npm resolves the whole tree, dev dependencies included, even with
    ``--omit=dev`` (it only skips writing them): for http-server that is tap, eslint and
    hundreds of packuments, which made the install four times slower than npm alone.
    """
    path = root / "package.json"
    original = path.read_bytes()
    manifest = json.loads(original)
    if lockfile or not manifest.get("devDependencies"):
        yield
        return
    del manifest["devDependencies"]
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    try:
        yield
    finally:
        path.write_bytes(original)


@contextlib.contextmanager
def _user_config(cache_dir: Path, credentials: str | None) -> Iterator[dict[str, str]]:
    """npm's environment, with ``credentials`` in a user config of its own for this run.

    The file is beside the cache (the one place npm's user, the app's uid or sandbox, can read
    that is not the app's code), 0600 and owned like the cache, and gone when npm is done."""
    env = _npm_environment()
    if credentials is None:
        yield env
        return
    fd, path = tempfile.mkstemp(prefix=".npmrc-", dir=cache_dir.parent)
    try:
        owner = cache_dir.stat()
        os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as config:
            config.write(credentials)
        env["npm_config_userconfig"] = path
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _npm_environment() -> dict[str, str]:
    """The host's environment without npm settings a parent npm may have exported (npm_config_*)."""
    env = {key: value for key, value in os.environ.items() if not key.lower().startswith("npm_")}
    env["npm_config_update_notifier"] = "false"
    return env


def _headline(lines: list[str]) -> str | None:
    """npm's one line that says what went wrong (task records keep only a message's first line)."""
    for line in lines:
        text = line.removeprefix("npm error").removeprefix("npm ERR!").strip()
        if text != line.strip() and text and not text.startswith(("code ", "A complete log", "errno ")):
            return text[:300]
    return None
