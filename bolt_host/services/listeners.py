"""Who listens on a loopback TCP port: the app being started, or somebody else?

A port that answers is only the app's readiness if the app holds it: a foreign process
that grabbed the port between the pool's check and the app's bind (or a leftover from an
earlier run) would otherwise make a start look ready while the app itself failed to bind.

The check asks the kernel for the listening socket's inode (``sock_diag`` netlink, see
:mod:`sockdiag`; the text tables ``/proc/net/tcp`` and ``tcp6`` where that is missing) and
looks for that inode among the open files of the app's process and its descendants
(``/proc/<pid>/task/<tid>/children``; no scan of every process).  Only when that finds
nothing is every process looked at, to name the holder and to accept a daemonized child of
the app that kept its session.  It runs once per start, when the port first answers, never
in the readiness loop.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bolt_host.lazy import lazy_module

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_module("psutil")  # about 0.9 MB: imported only when a port's holder is not the app's (rare)

from bolt_host.services import sockdiag

PROC = Path("/proc")
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


@dataclass(frozen=True)
class Holder:
    """The verdict: ``owned`` (by the app, or cannot tell), else who holds the port."""

    owned: bool
    pid: int | None = None
    name: str | None = None

    def describe(self, port: int) -> str:
        who = f"pid {self.pid} ({self.name})" if self.pid is not None else "a process the host cannot see"
        return f"port {port} answers, but its listener is {who}, not the app"


def port_holder(port: int, pid: int, inodes: set[str] | None = None) -> Holder:
    """Does the process ``pid`` (or one of its descendants, or its session) listen on ``port``?

    ``inodes``: the listening sockets of ``port`` as the caller was just told (the readiness
    sweep's answer); they are asked of the kernel again only when the app holds none of them.
    What cannot be read (a /proc without the socket tables, an app's open files the host
    may not inspect) is not held against the app: the answer is then "owned", as before
    this check existed."""
    if inodes and _holds(pid, inodes):  # the usual case: the main process itself listens
        return Holder(owned=True)
    inodes = listening_inodes(port)
    if not inodes:
        return Holder(owned=True)  # no table to read, or the listener is already gone
    readable = False
    for member in _tree(pid):
        found = _holds(member, inodes)
        if found is None:
            continue
        readable = True
        if found:
            return Holder(owned=True)
    if not readable:
        return Holder(owned=True)
    return _foreign_or_session(port, pid)


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address), from the kernel."""
    try:
        return sockdiag.listening_inodes(port)
    except OSError:
        return listening_inodes_from_text(port)


def listening_inodes_from_text(port: int) -> set[str]:
    """The same from ``/proc/net/tcp*``: every socket formatted as text, so milliseconds each."""
    wanted = f"{port:04X}"
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == LISTEN and fields[1].rsplit(":", 1)[-1] == wanted:
                    inodes.add(fields[9])
    return inodes


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, through the kernel's per-thread children lists."""
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 4096:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in (PROC / str(current) / "task").iterdir():
                with contextlib.suppress(OSError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def _holds(pid: int, inodes: set[str]) -> bool | None:
    """Has ``pid`` one of the sockets ``inodes`` open?  None when its files cannot be read."""
    folder = f"{PROC}/{pid}/fd"  # strings, not Paths: this runs once for every app that starts
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    for entry in entries:
        with contextlib.suppress(OSError):
            target = os.readlink(f"{folder}/{entry}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _foreign_or_session(port: int, pid: int) -> Holder:
    """The listener is not in the app's tree: find it among all processes (rare, so the full
    scan is affordable); a process of the app's own session (a child that daemonized) is the app's."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return Holder(owned=False)
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or not connection.laddr or connection.laddr.port != port:
            continue
        if connection.pid is None:
            continue
        with contextlib.suppress(OSError):
            if os.getsid(connection.pid) == pid:
                return Holder(owned=True)
        try:
            name = psutil.Process(connection.pid).name()
        except psutil.Error:
            name = "gone"
        return Holder(owned=False, pid=connection.pid, name=name)
    return Holder(owned=False)
