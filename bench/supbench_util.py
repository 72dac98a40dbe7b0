"""Helpers for ``supervisor_bench.py``: /proc scans, /health probes, pidfd bookkeeping.

Everything here talks to 127.0.0.1 only and touches only processes the
benchmark started (or that carry this run's ``BOLT_BENCH_RUN`` marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bolt_host.services import sockdiag

LOOPBACK = "127.0.0.1"
RUN_VARIABLE = "BOLT_BENCH_RUN"
NAME_VARIABLE = "BOLT_APP_NAME"
TCP_LISTEN = "0A"


# /proc ------------------------------------------------------------------------
def read_environ(pid: int) -> dict[str, str]:
    """``pid``'s environment as it was at exec ({} when unreadable or gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


def all_pids() -> set[int]:
    return {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}


def listening_ports() -> set[int]:
    """Ports with a socket in LISTEN (this network namespace): asked of the kernel through
    sock_diag (one netlink dump of the listening sockets), else read from /proc/net/tcp
    (127.0.0.1 or 0.0.0.0).  The text table lists every socket of the namespace: on a machine
    with thousands of them a read took tens of milliseconds, and the benchmark read it every
    2 ms while each system started its apps, taking a core from whichever system it measured."""
    with contextlib.suppress(OSError):
        return sockdiag.listening_ports(1, 65535)
    ports: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return ports
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == TCP_LISTEN:
            address, _, port = fields[1].partition(":")
            if address in ("0100007F", "00000000"):
                ports.add(int(port, 16))
    return ports


def find_new_child(parent: int, name: str, known: set[int]) -> tuple[int, int] | None:
    """A child of ``parent`` not in ``known`` running app ``name``: (pid, port), else None.

    Matched on the environment, which shows the app's variables only once it
    has exec'd (a forked child still shows its parent's).
    """
    for pid in all_pids() - known:
        if parent_of(pid) != parent:
            continue
        env = read_environ(pid)
        if env.get(NAME_VARIABLE) == name and env.get("PORT", "").isdigit():
            return pid, int(env["PORT"])
    return None


def processes_of_run(run_id: str) -> list[int]:
    """Every live process whose environment carries ``BOLT_BENCH_RUN=run_id``."""
    return [pid for pid in all_pids() if pid != os.getpid() and read_environ(pid).get(RUN_VARIABLE) == run_id]


# ports and probes ---------------------------------------------------------------
def is_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int, low: int, high: int) -> list[int]:
    """``count`` ports in ``low..high`` that nothing listens on now."""
    found = [port for port in range(low, high + 1) if is_port_free(port)][:count]
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} free ports in {low}-{high}, need {count}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


async def probe_health(port: int, timeout: float = 2.0) -> bool:
    """One ``GET /health`` on 127.0.0.1:port; True on a 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), timeout)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_healthy(ports: Iterable[int], deadline: float, sweep: float = 0.002) -> float:
    """Wait until every port answers /health; returns the monotonic time the last one did.

    Cheap to run beside a start: one read of /proc/net/tcp per sweep, and a
    real probe only for ports that are listening.  Raises TimeoutError at
    ``deadline`` (time.monotonic()).
    """
    pending = set(ports)
    last = time.monotonic()
    while pending:
        listening = listening_ports() & pending
        if listening:
            listed = sorted(listening)
            answers = await asyncio.gather(*(probe_health(port) for port in listed))
            now = time.monotonic()
            for port, ok in zip(listed, answers, strict=True):
                if ok:
                    pending.discard(port)
                    last = now
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} app(s) never answered /health, e.g. port {min(pending)}")
        await asyncio.sleep(sweep)
    return last


async def watch_healthy(low: int, high: int, answered: dict[int, float], sweep: float = 0.002) -> None:
    """Until cancelled: as :func:`wait_healthy` does, probe every port from ``low`` to ``high``
    that begins to listen, and note in ``answered`` the monotonic time each first answered
    /health.  For a supervisor that picks its apps' ports from a range (bolt-host): the apps
    are verified while they start, as raw's are, not in one extra round after the call."""
    while True:
        listening = {port for port in listening_ports() if low <= port <= high} - answered.keys()
        if listening:
            listed = sorted(listening)
            answers = await asyncio.gather(*(probe_health(port) for port in listed))
            now = time.monotonic()
            answered.update((port, now) for port, ok in zip(listed, answers, strict=True) if ok)
        await asyncio.sleep(sweep)


# pidfds -------------------------------------------------------------------------
def pidfd_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def wait_pidfds(pidfds: Iterable[int], deadline: float) -> float:
    """Block until every pidfd is readable (process ended); returns the monotonic end time."""
    poller = select.poll()
    pending = set(pidfds)
    for pidfd in pending:
        poller.register(pidfd, select.POLLIN)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(pending)} process(es) still alive")
        for pidfd, _ in poller.poll(min(remaining, 1.0) * 1000):
            poller.unregister(pidfd)
            pending.discard(pidfd)
    return time.monotonic()


async def wait_pidfds_async(pidfds: Iterable[int], deadline: float) -> float:
    """As :func:`wait_pidfds`, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    pending = {pidfd for pidfd in pidfds if not pidfd_exited(pidfd)}
    if not pending:
        return time.monotonic()
    done: asyncio.Future[float] = loop.create_future()

    def on_exit(pidfd: int) -> None:
        loop.remove_reader(pidfd)
        pending.discard(pidfd)
        if not pending and not done.done():
            done.set_result(time.monotonic())

    for pidfd in pending:
        loop.add_reader(pidfd, on_exit, pidfd)
    try:
        return await asyncio.wait_for(done, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise TimeoutError(f"{len(pending)} process(es) still alive") from None
    finally:
        for pidfd in list(pending):
            loop.remove_reader(pidfd)


class Tracker:
    """Pidfds of every process the benchmark started or saw started for it.

    A pidfd pins the process it was opened for, so ending "our" pids later can
    never hit a recycled pid.  :meth:`end_all` SIGKILLs whatever is still alive.
    """

    def __init__(self) -> None:
        self.pidfds: dict[int, int] = {}

    def track(self, pid: int) -> int | None:
        if pid in self.pidfds:
            return self.pidfds[pid]
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        self.pidfds[pid] = pidfd
        return pidfd

    def pidfd(self, pid: int) -> int:
        pidfd = self.track(pid)
        if pidfd is None:
            raise ProcessLookupError(pid)
        return pidfd

    def send(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd(pid), sig)

    def alive(self) -> list[int]:
        return [pid for pid, pidfd in self.pidfds.items() if not pidfd_exited(pidfd)]

    def end_all(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL every tracked process still alive; returns those that were."""
        survivors = self.alive()
        for pid in survivors:
            self.send(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_pidfds([self.pidfds[pid] for pid in survivors], time.monotonic() + timeout)
        return survivors

    def close(self) -> None:
        for pidfd in self.pidfds.values():
            os.close(pidfd)
        self.pidfds.clear()


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to ``timeout`` for our child ``proc`` to end, then SIGKILL it and reap it."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def sweep_run(run_id: str, tracker: Tracker) -> list[int]:
    """Last resort: SIGKILL any process of this run the tracker did not know about."""
    strays = processes_of_run(run_id)
    for pid in strays:
        tracker.track(pid)
    for pid in strays:
        tracker.send(pid, signal.SIGKILL)
    return strays


# statistics -------------------------------------------------------------------
def thread_cpu_ns(pid: int) -> dict[int, int] | None:
    """CPU time of each thread of ``pid`` in nanoseconds, from the scheduler's own account
    (``/proc/<pid>/task/<tid>/schedstat``), not from clock ticks: ``/proc/<pid>/stat`` counts
    10 ms ticks, one tick in a 10 s window is 0.1 % of a core.  None without schedstat."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: dict[int, int] = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as file:
                found[int(tid)] = int(file.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return found or None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` itself (its threads, not its children), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation); ``values`` non-empty."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def login_when_up(client: Any, proc: subprocess.Popen[bytes], password: str, what: str) -> str:
    """Log in as admin on a host just started (``client``: an ``httpx.AsyncClient`` on its URL),
    polling until it answers: the user token.  Raises when ``proc`` ended or after 120 s."""
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            reply = await client.post("/api/users/login", json={"name": "admin", "password": password})
            if reply.status_code == 200:
                return str(reply.json()["body"]["token"])
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the host did not come up; see {what}")
        await asyncio.sleep(0.1)
