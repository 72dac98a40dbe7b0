"""Running a package manager (uv, npm) for an install: output to the task's log, a time limit,
and the whole process tree killed on timeout or cancellation.

The tool is spawned like an app (own session, pidfd exit watch) and carries a marker of its own
in its environment, so :func:`~bolt_host.services.tree_stop.terminate_tree` also finds helpers
that left its process group.  Output goes through a pipe, line by line, into ``log.write`` and a
short tail kept for the error message: a failed install tells the user why without the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from bolt_host.errors import BoltError
from bolt_host.services.egress import Egress, Gate, LogSink
from bolt_host.services.processes import AppProcess
from bolt_host.services.proctable import MARKER_VARIABLE
from bolt_host.services.tree_stop import terminate_tree

__all__ = ["LogSink", "run_logged"]  # LogSink: what callers hand run_logged

TAIL_LINES = 15
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL once a tool overran or was cancelled


async def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: LogSink,
    timeout: float,
    what: str,
    code: int,
    limit: float | None = None,
    egress: Egress | None = None,
) -> None:
    """Run ``argv`` to completion; a non-zero exit or an overrun is a ``code`` error quoting the
    output's last lines.  Cancelling the caller kills the tool's tree before re-raising.
    ``limit`` is the time limit the message names when ``timeout`` is what remains of it.
    ``egress``: ``argv`` runs in a network namespace of its own (see :mod:`egress`) and may
    reach only those destinations, through the proxy answered here while it runs."""
    gate = Gate(egress, log) if egress is not None else None
    async with contextlib.AsyncExitStack() as closing:
        if gate is not None:
            closing.push_async_callback(gate.close)
        marker = f"tool-{secrets.token_hex(8)}"
        read_fd, write_fd = os.pipe()
        since = time.time()
        env = {**env, **(gate.env if gate else {}), MARKER_VARIABLE: marker}
        try:
            process = AppProcess.spawn(
                list(argv), cwd=cwd, env=env, log_fd=write_fd, pass_fds=gate.pass_fds if gate else ()
            )
        except OSError as exc:
            os.close(read_fd)
            raise BoltError(code, f"{what}: could not run {argv[0]}: {exc.strerror or exc}") from exc
        finally:
            os.close(write_fd)
            if gate is not None:
                gate.open()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        reader = asyncio.create_task(_copy_lines(read_fd, log, tail))
        try:
            try:
                exit_code = await asyncio.wait_for(asyncio.shield(process.exited), timeout)
            except TimeoutError:
                await _end_tree(process, marker, since)
                await reader
                overran = f"{what} took longer than {limit or timeout:g} s and was stopped"
                raise BoltError(code, _failure(overran, tail)) from None
            # Helpers the tool left behind would hold the pipe open: sweep before draining it.
            await _end_tree(process, marker, since)
            await reader
        except BaseException:
            await asyncio.shield(_end_tree(process, marker, since))
            reader.cancel()
            raise
        finally:
            process.reap()
            process.close()
        if exit_code != 0:
            raise BoltError(code, _failure(f"{what} failed ({_describe(exit_code)})", tail))


async def _end_tree(process: AppProcess, marker: str, since: float) -> None:
    await terminate_tree(process, marker=marker, since=since, grace=KILL_GRACE if process.alive else 0)


async def _copy_lines(read_fd: int, log: LogSink, tail: deque[str]) -> None:
    """Copy the pipe into ``log`` line by line until every writer closed it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # a line longer than the limit: take what is buffered
                    raw = await reader.read(1 << 20)
                if not raw:
                    return
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                tail.append(line)
                log.write(line + "\n")
        finally:
            with contextlib.suppress(Exception):
                transport.close()


def _describe(exit_code: int | None) -> str:
    if exit_code is None:
        return "exit status unknown"
    return f"exit code {exit_code}" if exit_code >= 0 else f"killed by signal {-exit_code}"


def _failure(summary: str, tail: deque[str]) -> str:
    lines = [line for line in tail if line.strip()]
    return summary + (":\n" + "\n".join(lines) if lines else "")
