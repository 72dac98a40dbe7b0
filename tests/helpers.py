"""Small helpers shared by tests: deadlines instead of sleeps, free ports, tools a test needs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)  # poll interval under a deadline


async def async_wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)  # poll interval under a deadline


VOLATILE_TABLES = ("catalog",)  # refreshed in the background at any time


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (anything it sent before is read on the way)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def data_dir_snapshot(data_dir: Path) -> dict[str, Any]:
    """Every file of a data dir (logs aside) with its content, db.json by table.

    Two equal snapshots mean a request changed nothing on disk or in the db.
    """
    found: dict[str, Any] = {}
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir).as_posix()
        if relative == "logs" or relative.startswith("logs/"):
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # a write in flight (temp file, then rename): not state; a load removes leftovers
        if path.is_dir():
            found[relative] = "dir"
        elif relative == "db.json":
            tables = json.loads(path.read_text() or "{}")
            found[relative] = {k: v for k, v in tables.items() if k not in VOLATILE_TABLES}
        else:
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def settled_snapshot(host: Any) -> dict[str, Any]:
    """:func:`data_dir_snapshot` of a running host's data dir once the writes it queued are on disk
    (an install queues its uid's record without waiting: a snapshot could catch that write midway)."""
    await host.runtime_state.commit()
    await host.db.flush()
    return data_dir_snapshot(host.settings.data_dir)


def end_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig`` to a process the test started, wait for it, SIGKILL it at the deadline."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


REQUIRE_ALL_TOOLS_ENV = "BOLT_REQUIRE_ALL_TOOLS"
MISSING_TOOL_MARK = "missing_tool"  # conftest.py fails a test that carries it


def requires_tool(available: object, reason: str) -> pytest.MarkDecorator:
    """A mark for tests that need an outside tool (a browser, a broker, node).

    When ``available`` is falsy the tests are skipped with ``reason``, or, with
    ``BOLT_REQUIRE_ALL_TOOLS=1`` (as CI sets it), they fail, so a CI machine that lost
    a tool cannot pass by skipping.
    """
    if available:
        return pytest.mark.skipif(False, reason=reason)
    if os.environ.get(REQUIRE_ALL_TOOLS_ENV) == "1":
        return getattr(pytest.mark, MISSING_TOOL_MARK)(reason=reason)
    return pytest.mark.skip(reason=reason)


@contextlib.asynccontextmanager
async def app_started(admin: Any, name: str) -> AsyncIterator[dict[str, Any]]:
    """Start ``name`` through the API (``admin``: an httpx client of a host) and stop it at the end."""
    answer = await admin.post("/api/apps/start", json={"name": name})
    assert answer.status_code == 200, answer.text
    try:
        yield answer.json()["body"]
    finally:
        await admin.post("/api/apps/stop", json={"name": name})


def private_port_range() -> tuple[int, int]:
    """A window of app ports of its own below the default pool and the ephemeral range, so hosts
    that other suites run at the same time on this machine do not hand out the same ports."""
    base = random.randrange(10000, 19800, 200)
    return base, base + 199


def make_wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A minimal pure-Python wheel, so the test needs no package from outside."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
        wheel.writestr(f"{info}/RECORD", "".join(f"{member},,\n" for member in [*files, f"{info}/RECORD"]))
    return path


def only_from_wheelhouse(wheelhouse: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine's pip configuration (``config``, a pip.conf written here) say "no index,
    only ``wheelhouse``", with no ``PIP_*`` variable of the environment overriding it."""
    config.write_text(f"[global]\nno-index = true\nfind-links = {wheelhouse}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    for variable in ("PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)


def write_package(folder: Path, manifest: dict[str, Any], files: dict[str, str]) -> Path:
    """A package folder: ``package.json`` from ``manifest`` and the given text files."""
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps(manifest))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder
