"""Firmware packages: downloaded, verified, unpacked and flashed in one ``firmware`` task.

A firmware package is a package whose ``package.json`` has ``bolt.firmware: true``,
a ``bolt.flash`` command (a list of strings, or a string split like a shell
would) and a ``bolt.image`` (a path inside the package).  Installing it runs::

    <flash command...> <absolute image path> <target dir>

in the unpacked package folder, with ``BOLT_FIRMWARE_DIR=<target dir>`` and
``BOLT_FIRMWARE_IMAGE=<image path>`` in a minimal environment (no host
secrets).  A leading ``python``/``python3`` runs with the host's Python.  The
target dir is ``data_dir/firmware/<name>``.  Exit code 0 records the package
version as the module's current firmware version; anything else fails the task
with the exit code, and the command's output is in the task log either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bolt_host.plugin import (
    ExtractError,
    TaskHandle,
    app_name_for,
    compare_versions,
    extraction_dir,
    inside,
    is_firmware,
    read_manifest,
    safe_extract,
)

from .jobs import JobError, Outcome, fetch_package, invalid, unique_names
from .state import Robot, sha512_file

FLASH_TIMEOUT = 600.0
STOP_GRACE = 5.0
MAX_OUTPUT_CHARS = 1024 * 1024
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SYSTEMROOT")


def queue_firmware(robot: Robot, packages: Iterable[Any]) -> Outcome:
    queued: dict[str, dict[str, Any]] = {}
    skipped: dict[str, Any] = {}
    for name in unique_names(packages):
        found = robot.host.catalog.find(name) if isinstance(name, str) and name else None
        if found is None or not is_firmware(found[0]):
            skipped[str(name)] = {"error": invalid(name)}
            continue
        latest, current = found[0]["version"], robot.firmware.version(name)
        if current is not None and compare_versions(current, latest) >= 0:
            skipped[name] = {"error": f"installed version({current}) is already up to date, skip..."}
            continue
        record = robot.host.tasks.submit(
            "firmware", name, latest, firmware_job(robot, name, latest),
            dedupe_key=f"robot:firmware:{name}", meta={"backend": "robot"},
        )
        queued[name] = {"task_id": record["id"], "version": record["version"]}
    return queued, skipped


def firmware_job(robot: Robot, name: str, version: str):
    async def run(task: TaskHandle) -> dict[str, Any]:
        task.log(f"=== installing firmware {name}:{version}")
        task.log("=== downloading")
        tarball, _ = await fetch_package(robot, task, name, version, 0.5)
        task.log("=== checking checksum")
        digest = await asyncio.to_thread(sha512_file, tarball)
        task.log(f"sha512 {digest}")
        task.log("=== extract")
        robot.staging_dir.mkdir(parents=True, exist_ok=True)
        try:
            root = await asyncio.to_thread(safe_extract, tarball, robot.staging_dir)
        except ExtractError as exc:
            raise JobError(f"unsafe or broken package: {exc.reason}") from exc
        try:
            return await _flash(robot, task, name, version, root, digest)
        finally:
            shutil.rmtree(extraction_dir(root, robot.staging_dir), ignore_errors=True)

    return run


async def _flash(robot: Robot, task: TaskHandle, name: str, version: str, root: Path, digest: str) -> dict[str, Any]:
    command, image = flash_plan(root, name, version)
    target = robot.firmware_dir / app_name_for(name)
    task.progress(0.6)
    task.log(f"=== flashing {image.name} into {target}")
    code = await run_flash(task, [*command, str(image), str(target)], root, target, image)
    if code != 0:
        raise JobError(f"flash command exited with code {code}")
    robot.firmware.record(name, version, target, digest)
    task.log(f"=== firmware {name}:{version} installed")
    return {"name": name, "version": version, "target": str(target)}


def flash_plan(root: Path, name: str, version: str) -> tuple[list[str], Path]:
    """The flash command and the image path of the unpacked package at ``root``."""
    try:
        manifest = read_manifest(root)
    except Exception as exc:
        raise JobError(getattr(exc, "message", None) or str(exc)) from exc
    if manifest.get("name") != name or manifest.get("version") != version:
        raise JobError(f"the package is {manifest.get('name')}:{manifest.get('version')}, expected {name}:{version}")
    bolt = manifest.get("bolt")
    bolt = bolt if isinstance(bolt, dict) else {}
    if not bolt.get("firmware"):
        raise JobError(f"{name} is not a firmware package")
    command = bolt.get("flash")
    if isinstance(command, str):
        command = shlex.split(command)
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        raise JobError(f"{name} names no flash command (bolt.flash)")
    try:
        image = inside(root, bolt.get("image"), 0)
    except Exception as exc:
        raise JobError(f"bad firmware image path (bolt.image): {getattr(exc, 'message', exc)}") from exc
    if not image.is_file():
        raise JobError(f"the firmware image {bolt.get('image')} is missing from the package")
    if command[0] in ("python", "python3"):
        command = [sys.executable, *command[1:]]
    return command, image


async def run_flash(task: TaskHandle, argv: list[str], cwd: Path, target: Path, image: Path) -> int:
    """Run the flash command, copying its output into the task log; its exit code."""
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    env.update(BOLT_FIRMWARE_DIR=str(target), BOLT_FIRMWARE_IMAGE=str(image))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        raise JobError(f"cannot run the flash command {argv[0]!r}: {exc.strerror or exc}") from exc
    reader = asyncio.ensure_future(_copy_output(task, process.stdout))
    try:
        await _wait_or_cancel(task, process)
        await reader
    finally:
        if process.returncode is None:
            await _stop(process)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return int(process.returncode or 0)


async def _wait_or_cancel(task: TaskHandle, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FLASH_TIMEOUT
    waiter = asyncio.ensure_future(process.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=0.25)
            task.check_cancelled()  # a cancel or a host shut-down stops the flash here
            if not waiter.done() and loop.time() > deadline:
                raise JobError(f"the flash command did not finish within {FLASH_TIMEOUT:.0f} s")
    finally:
        if not waiter.done():
            waiter.cancel()


async def _copy_output(task: TaskHandle, stream: asyncio.StreamReader | None) -> None:
    written = 0
    while stream is not None:
        line = await stream.readline()
        if not line:
            return
        if written < MAX_OUTPUT_CHARS:
            text = line.decode("utf-8", errors="replace").rstrip("\n")
            written += len(text)
            task.log(text if written < MAX_OUTPUT_CHARS else "... flash output truncated")


async def _stop(process: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await process.wait()
            return
